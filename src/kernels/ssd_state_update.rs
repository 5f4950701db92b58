//! `ssd_state_update`: Mamba-2 one-token state update for decoding, per (sequence, head, p):
//! `dt = clamp(softplus(dt_raw + dt_bias), dt_min, dt_max)`;
//! `h[p, n] = exp(dt·A)·h[p, n] + dt·x[p]·B[n]`; `y[p] = Σ_n C[n]·h[p, n] + D·x[p]`.
//! See `shaders/ssd_state_update.wgsl`; CPU twin: [`crate::reference::ssd_step::ssd_state_update`].
//!
//! Workgroups of 256 invocations (8 channel rows × 32 state lanes), one per (sequence, head,
//! tile of 16 channels p); each state element is read and written once. `d_state` may be at
//! most [`MAX_D_STATE`] and `nheads` a multiple of `ngroups`: check with [`check_params`].

use std::sync::Arc;

use crate::context::{BindingKind, GpuContext, KernelPipeline};
use crate::error::{Error, Result};
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

/// The largest `d_state` the kernel handles (the workgroup arrays holding B and C).
pub const MAX_D_STATE: u32 = 256;

/// Head channels `p` per workgroup (the shader's `TILE_P`).
pub const TILE_P: u32 = 16;

/// Fails when a dimension is 0, `d_state` exceeds [`MAX_D_STATE`] or `nheads` is not a
/// multiple of `ngroups` (the shader checks none of these).
pub fn check_params(params: &SsdStateUpdateParams) -> Result<()> {
    if params.nheads == 0 || params.head_dim == 0 || params.d_state == 0 || params.ngroups == 0 {
        return Err(Error::Shape(format!(
            "ssd_state_update with a zero dimension: nheads {}, head_dim {}, d_state {}, ngroups {}",
            params.nheads, params.head_dim, params.d_state, params.ngroups
        )));
    }
    if !params.nheads.is_multiple_of(params.ngroups) {
        return Err(Error::Shape(format!(
            "ssd_state_update: nheads {} is not a multiple of ngroups {}",
            params.nheads, params.ngroups
        )));
    }
    if params.d_state > MAX_D_STATE {
        return Err(Error::LimitExceeded {
            what: "ssd_state_update d_state".into(),
            needed: params.d_state as u64,
            limit: MAX_D_STATE as u64,
        });
    }
    Ok(())
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

/// Static facts about the shader with the state as f32s (any N).
pub const INFO: ShaderInfo = ShaderInfo {
    label: "mamba_wgpu.ssd_state_update",
    source: concat!(
        "// mamba_wgpu.ssd_state_update: shaders/ssd_state_update.wgsl, state as f32s.
@group(0) @binding(4) var<storage, read_write> state: array<f32>;
alias SV = f32;
const SW: u32 = 1u;
fn sdot(c: f32, s: f32) -> f32 { return c * s; }
fn xbc_sv(i: u32) -> f32 { return xbc[i]; }
",
        include_str!("../../shaders/ssd_state_update.wgsl")
    ),
    bindings: BINDINGS,
    params_size: std::mem::size_of::<SsdStateUpdateParams>(),
};

/// Static facts about the shader with the state as vec4s (N a multiple of 4): a quarter of
/// the state loads and stores, which are what a decode step spends its time on where each
/// storage access is a separate gather (CPU adapters), and 16-byte accesses on GPUs.
pub const INFO_VEC4: ShaderInfo = ShaderInfo {
    label: "mamba_wgpu.ssd_state_update_vec4",
    source: concat!(
        "// mamba_wgpu.ssd_state_update_vec4: shaders/ssd_state_update.wgsl, state as vec4s of 4
// consecutive states (N % 4 == 0, so every state row starts on a vec4).
@group(0) @binding(4) var<storage, read_write> state: array<vec4<f32>>;
alias SV = vec4<f32>;
const SW: u32 = 4u;
fn sdot(c: vec4<f32>, s: vec4<f32>) -> f32 { return dot(c, s); }
fn xbc_sv(i: u32) -> vec4<f32> { return vec4<f32>(xbc[i], xbc[i + 1u], xbc[i + 2u], xbc[i + 3u]); }
",
        include_str!("../../shaders/ssd_state_update.wgsl")
    ),
    bindings: BINDINGS,
    params_size: std::mem::size_of::<SsdStateUpdateParams>(),
};

/// The compiled kernel.
#[derive(Clone, Debug)]
pub struct SsdStateUpdate {
    pipeline: Arc<KernelPipeline>,
}

impl SsdStateUpdate {
    /// Builds (or fetches from the cache) the f32-state pipeline (any N).
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Ok(Self {
            pipeline: ctx.pipeline(INFO.label, INFO.source, INFO.bindings)?,
        })
    }

    /// The variant for `d_state`: vec4 states when `d_state % 4 == 0`, f32 otherwise.
    pub fn for_d_state(ctx: &GpuContext, d_state: u32) -> Result<Self> {
        let info = if d_state.is_multiple_of(4) {
            INFO_VEC4
        } else {
            INFO
        };
        Ok(Self {
            pipeline: ctx.pipeline(info.label, info.source, info.bindings)?,
        })
    }

    /// Invocations per workgroup (the shader's `WG`).
    pub const WORKGROUP_SIZE: u32 = 256;

    /// `batch · nheads · ceil(head_dim / 16)` workgroups, folded past 65,535.
    pub fn workgroups(params: &SsdStateUpdateParams) -> [u32; 3] {
        fold_workgroups(params.batch * params.nheads * params.head_dim.div_ceil(TILE_P))
    }

    /// Creates the dispatch (params uniform and bind group). `params` must pass
    /// [`check_params`].
    pub fn bind(
        &self,
        ctx: &GpuContext,
        params: &SsdStateUpdateParams,
        b: SsdStateUpdateBuffers<'_>,
    ) -> Dispatch {
        Dispatch::new(
            ctx,
            &self.pipeline,
            params,
            &[b.xbc, b.dt_raw, b.heads, b.state, b.y],
            Self::workgroups(params),
        )
    }
}
