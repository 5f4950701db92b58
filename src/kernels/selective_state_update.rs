//! `selective_state_update`: Mamba-1 one-token selective state update for decoding:
//! `h = exp(Δ·A)·h + Δ·B·x; y = C·h + D·x; y *= silu(z)` (same params and buffers as
//! `selective_scan` with `len` = 1). See `shaders/selective_state_update.wgsl`; CPU twin:
//! [`crate::reference::selective_scan`] with `len` = 1.
//!
//! One invocation per (sequence, channel), 64 per workgroup, looping over the states. A `len`
//! above 1 is walked token by token (correct, but use `selective_scan` for prompts).
//! `d_state` may be at most [`MAX_D_STATE`]; see [`check_params`].

use std::sync::Arc;

use crate::context::{BindingKind, GpuContext, KernelPipeline};
use crate::error::{Error, Result};
pub use crate::kernels::selective_scan::{
    check_params, SelectiveScanBuffers, SelectiveScanParams, MAX_D_STATE,
};
use crate::kernels::{fold_workgroups, Dispatch, ShaderInfo};

const BINDINGS: &[BindingKind] = &[
    BindingKind::Uniform,
    BindingKind::Storage,
    BindingKind::Storage,
    BindingKind::Storage,
    BindingKind::Storage,
    BindingKind::Storage,
    BindingKind::StorageRw,
    BindingKind::StorageRw,
];

/// Static facts about the shader in which every lane loads B, C and dt_proj's input itself
/// (no optional feature).
pub const INFO: ShaderInfo = ShaderInfo {
    label: "mamba_wgpu.selective_state_update",
    source: concat!(
        "// mamba_wgpu.selective_state_update: shaders/selective_state_update.wgsl, every lane
// loading what it reads.
fn spread(v: f32) -> V8 { return V8(vec4<f32>(v), vec4<f32>(v)); }
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    update(wg, nwg, lid, 0u, false);
}
",
        include_str!("../../shaders/selective_state_update.wgsl")
    ),
    bindings: BINDINGS,
    params_size: std::mem::size_of::<SelectiveScanParams>(),
};

/// Static facts about the shader sharing B, C and dt_proj's input across subgroup lanes
/// (needs wgpu's `SUBGROUP` feature).
pub const INFO_SUBGROUP: ShaderInfo = ShaderInfo {
    label: "mamba_wgpu.selective_state_update_subgroup",
    source: concat!(
        "// mamba_wgpu.selective_state_update_subgroup: shaders/selective_state_update.wgsl, B, C
// and dt_proj's input shared across subgroups of 8 or more lanes.
fn spread(v: f32) -> V8 {
    return V8(vec4<f32>(subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u),
                        subgroupBroadcast(v, 2u), subgroupBroadcast(v, 3u)),
              vec4<f32>(subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u),
                        subgroupBroadcast(v, 6u), subgroupBroadcast(v, 7u)));
}
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32,
        @builtin(subgroup_invocation_id) lane: u32, @builtin(subgroup_size) width: u32) {
    update(wg, nwg, lid, lane & 7u, width >= 8u);
}
",
        include_str!("../../shaders/selective_state_update.wgsl")
    ),
    bindings: BINDINGS,
    params_size: std::mem::size_of::<SelectiveScanParams>(),
};

/// The compiled kernel.
#[derive(Clone, Debug)]
pub struct SelectiveStateUpdate {
    pipeline: Arc<KernelPipeline>,
}

impl SelectiveStateUpdate {
    /// Builds (or fetches from the cache) the fastest variant the device has.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Self::variant(ctx, ctx.features().subgroup)
    }

    /// The variant sharing loads across subgroup lanes when `subgroup` (which needs the
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

    /// Invocations per workgroup (the shader's `WG`).
    pub const WORKGROUP_SIZE: u32 = 64;

    /// `ceil(d_inner / 64)` workgroups per sequence, `batch` of those, folded past 65,535;
    /// none when `len` is 0.
    pub fn workgroups(params: &SelectiveScanParams) -> [u32; 3] {
        if params.len == 0 {
            return [0, 1, 1];
        }
        fold_workgroups(params.batch * params.d_inner.div_ceil(Self::WORKGROUP_SIZE))
    }

    /// Creates the dispatch (params uniform and bind group). `params.d_state` must pass
    /// [`check_params`].
    pub fn bind(
        &self,
        ctx: &GpuContext,
        params: &SelectiveScanParams,
        b: SelectiveScanBuffers<'_>,
    ) -> Dispatch {
        Dispatch::new(
            ctx,
            &self.pipeline,
            params,
            &[b.dt, b.bc, b.x, b.z, b.ssm, b.state, b.y],
            Self::workgroups(params),
        )
    }
}
