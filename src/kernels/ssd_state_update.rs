//! `ssd_state_update`: Mamba-2 one-token state update for decoding, per (sequence, head, p): dt = clamp(softplus(dt_raw + dt_bias), dt_min, dt_max); h[p, n] = exp(dt·A)·h[p, n] + dt·x[p]·B[n]; y[p] = Σ_n C[n]·h[p, n] + D·x[p].
//! See `shaders/ssd_state_update.wgsl`; CPU twin in `crate::reference`.

use std::sync::Arc;

use crate::context::{BindingKind, GpuContext, KernelPipeline};
use crate::error::Result;
use crate::kernels::{fold_workgroups, Dispatch, ShaderInfo};

/// Mirrors `struct Params` in `shaders/ssd_state_update.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SsdStateUpdateParams {
    /// Sequences (rows b).
    pub batch: u32,
    /// H.
    pub nheads: u32,
    /// P.
    pub head_dim: u32,
    /// N.
    pub d_state: u32,
    /// G.
    pub ngroups: u32,
    /// Element offset of x in row 0 of xbc.
    pub x_offset: u32,
    /// Elements between rows of xbc.
    pub x_stride: u32,
    /// Element offset of B in row 0 of xbc.
    pub b_offset: u32,
    /// Element offset of C in row 0 of xbc.
    pub c_offset: u32,
    /// Element offset of the raw dt in row 0 of dt_raw.
    pub dt_offset: u32,
    /// Elements between rows of dt_raw.
    pub dt_stride: u32,
    /// Elements between rows of y.
    pub y_stride: u32,
    /// Lower clamp of dt.
    pub dt_min: f32,
    /// Upper clamp of dt.
    pub dt_max: f32,
    /// Padding.
    pub _pad0: u32,
    /// Padding.
    pub _pad1: u32,
}

/// The buffers one dispatch reads and writes.
#[derive(Clone, Copy, Debug)]
pub struct SsdStateUpdateBuffers<'a> {
    /// f32 conv output rows holding x, B, C.
    pub xbc: &'a wgpu::Buffer,
    /// f32 raw dt rows (the in_proj output).
    pub dt_raw: &'a wgpu::Buffer,
    /// per-head constants packed: A_log `[H]`, D `[H]`, dt_bias `[H]`.
    pub heads: &'a wgpu::Buffer,
    /// `[batch, H, P, N]` f32 SSM state, updated in place.
    pub state: &'a wgpu::Buffer,
    /// f32 output rows.
    pub y: &'a wgpu::Buffer,
}

const BINDINGS: &[BindingKind] = &[
    BindingKind::Uniform,
    BindingKind::Storage,
    BindingKind::Storage,
    BindingKind::Storage,
    BindingKind::StorageRw,
    BindingKind::StorageRw,
];

/// Static facts about the shader.
pub const INFO: ShaderInfo = ShaderInfo {
    label: "mamba_wgpu.ssd_state_update",
    source: include_str!("../../shaders/ssd_state_update.wgsl"),
    bindings: BINDINGS,
    params_size: std::mem::size_of::<SsdStateUpdateParams>(),
};

/// The compiled kernel.
#[derive(Clone, Debug)]
pub struct SsdStateUpdate {
    pipeline: Arc<KernelPipeline>,
}

impl SsdStateUpdate {
    /// Builds (or fetches from the cache) the pipeline.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Ok(Self { pipeline: ctx.pipeline(INFO.label, INFO.source, INFO.bindings)? })
    }

    /// The dispatch geometry (TODO: placeholder, the kernel's author sets it).
    pub fn workgroups(params: &SsdStateUpdateParams) -> [u32; 3] {
        let _ = params;
        fold_workgroups(1)
    }

    /// Creates the dispatch (params uniform and bind group).
    pub fn bind(&self, ctx: &GpuContext, params: &SsdStateUpdateParams, b: SsdStateUpdateBuffers<'_>) -> Dispatch {
        Dispatch::new(ctx, &self.pipeline, params, &[b.xbc, b.dt_raw, b.heads, b.state, b.y], Self::workgroups(params))
    }
}
