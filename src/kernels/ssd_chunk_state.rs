//! `ssd_chunk_state`: Mamba-2 SSD step 2: each chunk's own final state S_c[p, n] = Σ_s exp(dacs_last − dacs_s)·dt_s·x_s[p]·B_s[n] (exponent clamped at 0), a [head_dim × d_state] matmul per (sequence, chunk, head) with f32 accumulation.
//! See `shaders/ssd_chunk_state.wgsl`; CPU twin in `crate::reference`.

use std::sync::Arc;

use crate::context::{BindingKind, GpuContext, KernelPipeline};
use crate::error::Result;
use crate::kernels::{fold_workgroups, Dispatch, ShaderInfo};

/// Mirrors `struct Params` in `shaders/ssd_chunk_state.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SsdChunkStateParams {
    /// Sequences.
    pub batch: u32,
    /// Tokens per sequence.
    pub len: u32,
    /// Heads H.
    pub nheads: u32,
    /// P.
    pub head_dim: u32,
    /// N.
    pub d_state: u32,
    /// G; head h reads group h / (H / G).
    pub ngroups: u32,
    /// Q.
    pub chunk: u32,
    /// Element offset of x (head 0, p 0) in row 0 of xbc.
    pub x_offset: u32,
    /// Elements between rows of xbc.
    pub x_stride: u32,
    /// Element offset of B (group 0, n 0) in row 0 of xbc.
    pub b_offset: u32,
    /// Padding.
    pub _pad0: u32,
    /// Padding.
    pub _pad1: u32,
}

/// The buffers one dispatch reads and writes.
#[derive(Clone, Copy, Debug)]
pub struct SsdChunkStateBuffers<'a> {
    /// f32 conv output rows holding x `[H, P]`, B `[G, N]`, C `[G, N]`.
    pub xbc: &'a wgpu::Buffer,
    /// `[batch, H, len]` processed dt.
    pub dt: &'a wgpu::Buffer,
    /// `[batch, H, len]` chunk cumsum of dt·A.
    pub dacs: &'a wgpu::Buffer,
    /// `[batch, nchunks, H, P, N]` f32 chunk states.
    pub states: &'a wgpu::Buffer,
}

const BINDINGS: &[BindingKind] = &[
    BindingKind::Uniform,
    BindingKind::Storage,
    BindingKind::Storage,
    BindingKind::Storage,
    BindingKind::StorageRw,
];

/// Static facts about the shader.
pub const INFO: ShaderInfo = ShaderInfo {
    label: "mamba_wgpu.ssd_chunk_state",
    source: include_str!("../../shaders/ssd_chunk_state.wgsl"),
    bindings: BINDINGS,
    params_size: std::mem::size_of::<SsdChunkStateParams>(),
};

/// The compiled kernel.
#[derive(Clone, Debug)]
pub struct SsdChunkState {
    pipeline: Arc<KernelPipeline>,
}

impl SsdChunkState {
    /// Builds (or fetches from the cache) the pipeline.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Ok(Self {
            pipeline: ctx.pipeline(INFO.label, INFO.source, INFO.bindings)?,
        })
    }

    /// The dispatch geometry (TODO: placeholder, the kernel's author sets it).
    pub fn workgroups(params: &SsdChunkStateParams) -> [u32; 3] {
        let _ = params;
        fold_workgroups(1)
    }

    /// Creates the dispatch (params uniform and bind group).
    pub fn bind(
        &self,
        ctx: &GpuContext,
        params: &SsdChunkStateParams,
        b: SsdChunkStateBuffers<'_>,
    ) -> Dispatch {
        Dispatch::new(
            ctx,
            &self.pipeline,
            params,
            &[b.xbc, b.dt, b.dacs, b.states],
            Self::workgroups(params),
        )
    }
}
