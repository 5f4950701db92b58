//! `ssd_scan_seq`: Mamba-2 (SSD) over a prompt walked token by token, per (sequence, head,
//! channel p), with the state in the invocation for the whole walk:
//! `dt = clamp(softplus(dt_raw + dt_bias), dt_min, dt_max)`;
//! `h[p, n] = exp(dt·A)·h[p, n] + dt·x[p]·B[n]`; `y[p] = Σ_n C[n]·h[p, n] + D·x[p]`, times
//! `silu(z[p])` when [`SsdScanSeqParams::gate`] is set (Mamba-2's gate, so that the gated
//! RMSNorm after it is a plain RMSNorm, which a decode product can apply in its prologue).
//! The sequential twin of the chunked kernels (`ssd_chunk_cumsum` .. `ssd_chunk_scan`), which
//! CPU adapters (lavapipe) run far faster: no workgroup memory or barriers, B and C read at
//! lane-uniform addresses, and the state read and written once per prompt chunk.
//! See `shaders/ssd_scan_seq.wgsl`; CPU twin: [`crate::reference::ssd_step::ssd_state_update`]
//! applied token after token.
//!
//! Workgroups of 64 invocations, one per (sequence, head, tile of 64 channels p). `d_state`
//! may be at most [`MAX_D_STATE`], `nheads` a multiple of `ngroups`, and B, C and the state
//! rows on vec4 boundaries: see [`check_params`]. Four variants by two headers: B and C
//! shared across subgroup lanes or loaded by every lane; the walk (prompts: the state in a
//! private array for the whole prompt) or the step (decode: the state updated in the buffer,
//! with no private array, whose setup alone made a one-token walk 40% slower on lavapipe).

use std::sync::Arc;

use crate::context::{BindingKind, GpuContext, KernelPipeline};
use crate::error::{Error, Result};
pub use crate::kernels::ssd_state_update::SsdStateUpdateBuffers as SsdScanSeqBuffers;
use crate::kernels::{Dispatch, ShaderInfo, MAX_GROUPS_PER_DIM};

/// Mirrors `struct Params` in `shaders/ssd_scan_seq.wgsl`. Rows `r = b·len + t`; offsets and
/// strides count f32 elements.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SsdScanSeqParams {
    /// Sequences.
    pub batch: u32,
    /// Tokens per sequence.
    pub len: u32,
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
    /// 1: y is multiplied by `silu(z)` (Mamba-2's gate, applied before its gated norm), with z
    /// read from the dt_raw rows at `z_offset`; 0: y as it is.
    pub gate: u32,
    /// Element offset of z in row 0 of dt_raw (read when `gate` is 1).
    pub z_offset: u32,
    /// Padding.
    pub _pad0: u32,
    /// Padding.
    pub _pad1: u32,
    /// Padding.
    pub _pad2: u32,
}

/// The largest `d_state` (the shader's private array of 64 vec4s).
pub const MAX_D_STATE: u32 = 256;

/// Channels `p` per workgroup (the shader's `WG`).
pub const TILE_P: u32 = 64;

/// Fails when a dimension is 0, `d_state` exceeds [`MAX_D_STATE`], `nheads` is not a
/// multiple of `ngroups`, or there are more sequences or heads than a grid dimension holds
/// (the shader checks none of these).
pub fn check_params(params: &SsdScanSeqParams) -> Result<()> {
    if params.nheads == 0 || params.head_dim == 0 || params.d_state == 0 || params.ngroups == 0 {
        return Err(Error::Shape(format!(
            "ssd_scan_seq with a zero dimension: nheads {}, head_dim {}, d_state {}, ngroups {}",
            params.nheads, params.head_dim, params.d_state, params.ngroups
        )));
    }
    if !params.nheads.is_multiple_of(params.ngroups) {
        return Err(Error::Shape(format!(
            "ssd_scan_seq: nheads {} is not a multiple of ngroups {}",
            params.nheads, params.ngroups
        )));
    }
    if params.batch.max(params.nheads) > MAX_GROUPS_PER_DIM {
        return Err(Error::LimitExceeded {
            what: "ssd_scan_seq sequences or heads (one workgroup row each)".into(),
            needed: params.batch.max(params.nheads) as u64,
            limit: MAX_GROUPS_PER_DIM as u64,
        });
    }
    if params.d_state > MAX_D_STATE {
        return Err(Error::LimitExceeded {
            what: "ssd_scan_seq d_state".into(),
            needed: params.d_state as u64,
            limit: MAX_D_STATE as u64,
        });
    }
    if !aligned(params) {
        return Err(Error::Shape(format!(
            "ssd_scan_seq reads B, C and the state as vec4s: x_stride {}, b_offset {}, c_offset {} and d_state {} must be multiples of 4",
            params.x_stride, params.b_offset, params.c_offset, params.d_state
        )));
    }
    Ok(())
}

/// Whether B and C rows and the state rows fall on vec4 boundaries, as the kernel reads them
/// (true for every published Mamba-2: their widths are multiples of 4).
pub fn aligned(params: &SsdScanSeqParams) -> bool {
    [
        params.x_stride,
        params.b_offset,
        params.c_offset,
        params.d_state,
    ]
    .iter()
    .all(|v| v.is_multiple_of(4))
}

const BINDINGS: &[BindingKind] = &[
    BindingKind::Uniform,
    BindingKind::Storage,
    BindingKind::Storage,
    BindingKind::Storage,
    BindingKind::StorageRw,
    BindingKind::StorageRw,
];

// The lane headers: how B and C reach the lanes.
macro_rules! plain_lanes {
    () => {
        "// Lanes: every lane loads B and C itself (no subgroup operations).
fn spread(v: vec4<f32>) -> V8 { return V8(v, v, v, v, v, v, v, v); }
fn shuffle(v: vec4<f32>, i: u32) -> vec4<f32> { return v; }
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    entry(wg, lid, 0u, false);
}
"
    };
}

macro_rules! subgroup_lanes {
    () => {
        "// Lanes: B and C shared across subgroups of 8 or more lanes (narrower ones load them
// themselves).
fn spread(v: vec4<f32>) -> V8 {
    return V8(subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u), subgroupBroadcast(v, 2u),
              subgroupBroadcast(v, 3u), subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u),
              subgroupBroadcast(v, 6u), subgroupBroadcast(v, 7u));
}
fn shuffle(v: vec4<f32>, i: u32) -> vec4<f32> { return subgroupShuffle(v, i); }
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32,
        @builtin(subgroup_invocation_id) lane: u32, @builtin(subgroup_size) width: u32) {
    entry(wg, lid, lane & 7u, width >= 8u);
}
"
    };
}

// The path headers: the walk (state in the invocation) or the step (state in the buffer).
macro_rules! walk_path {
    () => {
        "fn entry(wg: vec3<u32>, lid: u32, lane: u32, share: bool) { walk(wg, lid, lane, share); }\n"
    };
}

macro_rules! step_path {
    () => {
        "fn entry(wg: vec3<u32>, lid: u32, lane: u32, share: bool) { step_tokens(wg, lid, lane, share); }\n"
    };
}

macro_rules! info {
    ($label:literal, $lanes:ident, $path:ident) => {
        ShaderInfo {
            label: $label,
            source: concat!(
                "// ",
                $label,
                ": shaders/ssd_scan_seq.wgsl with its headers.\n",
                $lanes!(),
                $path!(),
                include_str!("../../shaders/ssd_scan_seq.wgsl")
            ),
            bindings: BINDINGS,
            params_size: std::mem::size_of::<SsdScanSeqParams>(),
        }
    };
}

/// The walk (prompts; the state in the invocation) with every lane loading B and C itself (no
/// optional feature).
pub const INFO: ShaderInfo = info!("mamba_wgpu.ssd_scan_seq", plain_lanes, walk_path);

/// The walk sharing B and C across subgroup lanes (needs wgpu's `SUBGROUP` feature): one load
/// instruction brings 8 vec4s, which on lavapipe halves the walk's time again.
pub const INFO_SUBGROUP: ShaderInfo = info!(
    "mamba_wgpu.ssd_scan_seq_subgroup",
    subgroup_lanes, walk_path
);

/// The step (decode; the state updated in the buffer, no private copy), every lane loading B
/// and C.
pub const INFO_STEP: ShaderInfo = info!("mamba_wgpu.ssd_scan_seq_step", plain_lanes, step_path);

/// The step sharing B and C across subgroup lanes.
pub const INFO_STEP_SUBGROUP: ShaderInfo = info!(
    "mamba_wgpu.ssd_scan_seq_step_subgroup",
    subgroup_lanes, step_path
);

/// The compiled kernel.
#[derive(Clone, Debug)]
pub struct SsdScanSeq {
    pipeline: Arc<KernelPipeline>,
}

impl SsdScanSeq {
    /// Builds (or fetches from the cache) the fastest walk the device has: for prompts.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Self::variant(ctx, ctx.features().subgroup, false)
    }

    /// Builds (or fetches from the cache) the fastest step the device has: for decoding (one
    /// token per sequence; it takes any `len`, but reads and writes the state at every token).
    pub fn step(ctx: &GpuContext) -> Result<Self> {
        Self::variant(ctx, ctx.features().subgroup, true)
    }

    /// The variant sharing B and C across subgroup lanes when `subgroup` (which needs the
    /// `SUBGROUP` feature), the plain one otherwise; the step (state in the buffer) when
    /// `step`, the walk (state in the invocation) otherwise. Tests run all four.
    pub fn variant(ctx: &GpuContext, subgroup: bool, step: bool) -> Result<Self> {
        if subgroup && !ctx.features().subgroup {
            return Err(Error::MissingFeature("SUBGROUP"));
        }
        let info = match (subgroup, step) {
            (false, false) => INFO,
            (true, false) => INFO_SUBGROUP,
            (false, true) => INFO_STEP,
            (true, true) => INFO_STEP_SUBGROUP,
        };
        Ok(Self {
            pipeline: ctx.pipeline(info.label, info.source, info.bindings)?,
        })
    }

    /// Invocations per workgroup.
    pub const WORKGROUP_SIZE: u32 = TILE_P;

    /// `[ceil(head_dim / 64), nheads, batch]` workgroups (each dimension at most 65,535, which
    /// [`check_params`] enforces); none when `len` is 0.
    pub fn workgroups(params: &SsdScanSeqParams) -> [u32; 3] {
        if params.len == 0 {
            return [0, 1, 1];
        }
        [
            params.head_dim.div_ceil(TILE_P),
            params.nheads,
            params.batch,
        ]
    }

    /// Creates the dispatch (params uniform and bind group). `params` must pass
    /// [`check_params`].
    pub fn bind(
        &self,
        ctx: &GpuContext,
        params: &SsdScanSeqParams,
        b: SsdScanSeqBuffers<'_>,
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
