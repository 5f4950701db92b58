//! `ssd_scan_seq`: Mamba-2 (SSD) over a prompt walked token by token, per (sequence, head,
//! channel p), with the state in the invocation for the whole walk:
//! `dt = clamp(softplus(dt_raw + dt_bias), dt_min, dt_max)`;
//! `h[p, n] = exp(dt·A)·h[p, n] + dt·x[p]·B[n]`; `y[p] = Σ_n C[n]·h[p, n] + D·x[p]`.
//! The sequential twin of the chunked kernels (`ssd_chunk_cumsum` .. `ssd_chunk_scan`), which
//! CPU adapters (lavapipe) run far faster: no workgroup memory or barriers, B and C read at
//! lane-uniform addresses, and the state read and written once per prompt chunk.
//! See `shaders/ssd_scan_seq.wgsl`; CPU twin: [`crate::reference::ssd_step::ssd_state_update`]
//! applied token after token.
//!
//! Workgroups of 64 invocations, one per (sequence, head, tile of 64 channels p). `d_state`
//! may be at most [`MAX_D_STATE`], `nheads` a multiple of `ngroups`, and B, C and the state
//! rows on vec4 boundaries: see [`check_params`]. Two variants by a lane header: B and C
//! shared across subgroup lanes, or loaded by every lane.

use std::sync::Arc;

use crate::context::{BindingKind, GpuContext, KernelPipeline};
use crate::error::{Error, Result};
pub use crate::kernels::ssd_state_update::SsdStateUpdateBuffers as SsdScanSeqBuffers;
use crate::kernels::{fold_workgroups, Dispatch, ShaderInfo};

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
    /// Padding.
    pub _pad0: u32,
}

/// The largest `d_state` (the shader's private array of 64 vec4s).
pub const MAX_D_STATE: u32 = 256;

/// Channels `p` per workgroup (the shader's `WG`).
pub const TILE_P: u32 = 64;

/// Fails when a dimension is 0, `d_state` exceeds [`MAX_D_STATE`] or `nheads` is not a
/// multiple of `ngroups` (the shader checks none of these).
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

/// Static facts about the shader in which every lane loads B and C itself (no optional
/// feature).
pub const INFO: ShaderInfo = ShaderInfo {
    label: "mamba_wgpu.ssd_scan_seq",
    source: concat!(
        "// mamba_wgpu.ssd_scan_seq: shaders/ssd_scan_seq.wgsl, every lane loading B and C.
fn shuffle(v: vec4<f32>, i: u32) -> vec4<f32> { return v; }
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    scan(wg, nwg, lid, 0u, false);
}
",
        include_str!("../../shaders/ssd_scan_seq.wgsl")
    ),
    bindings: BINDINGS,
    params_size: std::mem::size_of::<SsdScanSeqParams>(),
};

/// Static facts about the shader sharing B and C across subgroup lanes (needs wgpu's
/// `SUBGROUP` feature): one load instruction brings 8 vec4s, which on lavapipe halves the
/// walk's time again.
pub const INFO_SUBGROUP: ShaderInfo = ShaderInfo {
    label: "mamba_wgpu.ssd_scan_seq_subgroup",
    source: concat!(
        "// mamba_wgpu.ssd_scan_seq_subgroup: shaders/ssd_scan_seq.wgsl, B and C shared across
// subgroups of 8 or more lanes (narrower ones load them themselves).
fn shuffle(v: vec4<f32>, i: u32) -> vec4<f32> { return subgroupShuffle(v, i); }
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32,
        @builtin(subgroup_invocation_id) lane: u32, @builtin(subgroup_size) width: u32) {
    scan(wg, nwg, lid, lane & 7u, width >= 8u);
}
",
        include_str!("../../shaders/ssd_scan_seq.wgsl")
    ),
    bindings: BINDINGS,
    params_size: std::mem::size_of::<SsdScanSeqParams>(),
};

/// The compiled kernel.
#[derive(Clone, Debug)]
pub struct SsdScanSeq {
    pipeline: Arc<KernelPipeline>,
}

impl SsdScanSeq {
    /// Builds (or fetches from the cache) the fastest variant the device has.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Self::variant(ctx, ctx.features().subgroup)
    }

    /// The variant sharing B and C across subgroup lanes when `subgroup` (which needs the
    /// `SUBGROUP` feature), the plain one otherwise; tests run both.
    pub fn variant(ctx: &GpuContext, subgroup: bool) -> Result<Self> {
        if subgroup && !ctx.features().subgroup {
            return Err(Error::MissingFeature("SUBGROUP"));
        }
        let info = if subgroup { INFO_SUBGROUP } else { INFO };
        Ok(Self {
            pipeline: ctx.pipeline(info.label, info.source, info.bindings)?,
        })
    }

    /// Invocations per workgroup.
    pub const WORKGROUP_SIZE: u32 = TILE_P;

    /// `batch · nheads · ceil(head_dim / 64)` workgroups, folded past 65,535; none when `len`
    /// is 0.
    pub fn workgroups(params: &SsdScanSeqParams) -> [u32; 3] {
        if params.len == 0 {
            return [0, 1, 1];
        }
        fold_workgroups(params.batch * params.nheads * params.head_dim.div_ceil(TILE_P))
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
