//! `ssd_chunk_cumsum`: Mamba-2 SSD step 1: per sequence, head and chunk of Q tokens, the processed step dt = clamp(softplus(dt_raw + dt_bias[h]), dt_min, dt_max) and the inclusive cumulative sum of dt·A[h] (A = -exp(A_log[h])) within the chunk.
//! See `shaders/ssd_chunk_cumsum.wgsl`; CPU twin in `crate::reference`.

use std::sync::Arc;

use crate::context::{BindingKind, GpuContext, KernelPipeline};
use crate::error::Result;
use crate::kernels::{fold_workgroups, Dispatch, ShaderInfo};

/// Mirrors `struct Params` in `shaders/ssd_chunk_cumsum.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SsdChunkCumsumParams {
    /// Sequences.
    pub batch: u32,
    /// Tokens per sequence (rows b·len + t).
    pub len: u32,
    /// Heads H.
    pub nheads: u32,
    /// Chunk length Q.
    pub chunk: u32,
    /// Element offset of head 0's raw dt in row 0.
    pub dt_offset: u32,
    /// Elements between rows of the raw dt.
    pub dt_stride: u32,
    /// Lower clamp of dt (0 for none).
    pub dt_min: f32,
    /// Upper clamp of dt (a huge value for none).
    pub dt_max: f32,
}

/// The buffers one dispatch reads and writes.
#[derive(Clone, Copy, Debug)]
pub struct SsdChunkCumsumBuffers<'a> {
    /// f32 raw dt (the in_proj output's dt columns).
    pub dt_raw: &'a wgpu::Buffer,
    /// per-head constants packed: A_log `[H]`, then D `[H]`, then dt_bias `[H]`.
    pub heads: &'a wgpu::Buffer,
    /// `[batch, H, len]` f32 processed dt.
    pub dt: &'a wgpu::Buffer,
    /// `[batch, H, len]` f32 cumulative sum of dt·A within each chunk.
    pub dacs: &'a wgpu::Buffer,
}

const BINDINGS: &[BindingKind] = &[
    BindingKind::Uniform,
    BindingKind::Storage,
    BindingKind::Storage,
    BindingKind::StorageRw,
    BindingKind::StorageRw,
];

/// Static facts about the shader.
pub const INFO: ShaderInfo = ShaderInfo {
    label: "mamba_wgpu.ssd_chunk_cumsum",
    source: include_str!("../../shaders/ssd_chunk_cumsum.wgsl"),
    bindings: BINDINGS,
    params_size: std::mem::size_of::<SsdChunkCumsumParams>(),
};

/// The compiled kernel.
#[derive(Clone, Debug)]
pub struct SsdChunkCumsum {
    pipeline: Arc<KernelPipeline>,
}

impl SsdChunkCumsum {
    /// Builds (or fetches from the cache) the pipeline.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Ok(Self {
            pipeline: ctx.pipeline(INFO.label, INFO.source, INFO.bindings)?,
        })
    }

    /// The dispatch geometry (TODO: placeholder, the kernel's author sets it).
    pub fn workgroups(params: &SsdChunkCumsumParams) -> [u32; 3] {
        let _ = params;
        fold_workgroups(1)
    }

    /// Creates the dispatch (params uniform and bind group).
    pub fn bind(
        &self,
        ctx: &GpuContext,
        params: &SsdChunkCumsumParams,
        b: SsdChunkCumsumBuffers<'_>,
    ) -> Dispatch {
        Dispatch::new(
            ctx,
            &self.pipeline,
            params,
            &[b.dt_raw, b.heads, b.dt, b.dacs],
            Self::workgroups(params),
        )
    }
}
