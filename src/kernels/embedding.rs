//! `embedding`: embedding gather for one page of the table: `out[t, :] = table[ids[t] -
//! row_start, :]` for the tokens whose id falls in this page's rows; other rows of `out` are
//! left untouched (pages let a table larger than one storage binding be gathered with one
//! dispatch per page). The shader copies raw bits, so the gather is exact.
//! See `shaders/embedding.wgsl`; CPU twin [`crate::reference::embedding::embedding`].

use std::sync::Arc;

use crate::context::{BindingKind, GpuContext, KernelPipeline};
use crate::error::Result;
use crate::kernels::{fold_workgroups, Dispatch, ShaderInfo};

/// Mirrors `struct Params` in `shaders/embedding.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct EmbeddingParams {
    /// Tokens to gather.
    pub tokens: u32,
    /// Embedding width.
    pub dim: u32,
    /// First vocabulary row held by this page.
    pub row_start: u32,
    /// Rows held by this page.
    pub rows: u32,
}

/// The buffers one dispatch reads and writes.
#[derive(Clone, Copy, Debug)]
pub struct EmbeddingBuffers<'a> {
    /// `[tokens]` u32 token ids (checked against the vocabulary on the CPU before upload).
    pub ids: &'a wgpu::Buffer,
    /// `[rows, dim]` f32, this page of the table.
    pub table: &'a wgpu::Buffer,
    /// `[tokens, dim]` f32.
    pub out: &'a wgpu::Buffer,
}

/// Columns of one token's row copied per workgroup (64 invocations × 4); must equal `CHUNK`
/// in the shader.
pub const COLUMNS_PER_WORKGROUP: u32 = 256;

const BINDINGS: &[BindingKind] = &[
    BindingKind::Uniform,
    BindingKind::Storage,
    BindingKind::Storage,
    BindingKind::StorageRw,
];

/// Static facts about the shader.
pub const INFO: ShaderInfo = ShaderInfo {
    label: "mamba_wgpu.embedding",
    source: include_str!("../../shaders/embedding.wgsl"),
    bindings: BINDINGS,
    params_size: std::mem::size_of::<EmbeddingParams>(),
};

/// The compiled kernel.
#[derive(Clone, Debug)]
pub struct Embedding {
    pipeline: Arc<KernelPipeline>,
}

impl Embedding {
    /// Builds (or fetches from the cache) the pipeline.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Ok(Self {
            pipeline: ctx.pipeline(INFO.label, INFO.source, INFO.bindings)?,
        })
    }

    /// One workgroup per (token, [`COLUMNS_PER_WORKGROUP`] columns), folded.
    pub fn workgroups(params: &EmbeddingParams) -> [u32; 3] {
        fold_workgroups(params.tokens * params.dim.div_ceil(COLUMNS_PER_WORKGROUP))
    }

    /// Creates the dispatch (params uniform and bind group).
    pub fn bind(
        &self,
        ctx: &GpuContext,
        params: &EmbeddingParams,
        b: EmbeddingBuffers<'_>,
    ) -> Dispatch {
        Dispatch::new(
            ctx,
            &self.pipeline,
            params,
            &[b.ids, b.table, b.out],
            Self::workgroups(params),
        )
    }
}
