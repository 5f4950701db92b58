//! `rmsnorm_gated`: Mamba-2's gated RMSNorm, normalised per group of `group` columns: with
//! `norm_before_gate` = 0 (the Mamba-2 default) `out = rmsnorm_group(y · silu(z)) · weight`;
//! with 1, `out = rmsnorm_group(y) · weight · silu(z)`.
//! See `shaders/rmsnorm_gated.wgsl`; CPU twin: [`crate::reference::rmsnorm_gated::rmsnorm_gated`].
//!
//! One workgroup per (row, group), of 256 invocations on GPUs and 8 on CPU adapters. `group` must be positive and divide
//! `cols`: check with [`check_params`].

use std::sync::Arc;

use crate::context::{BindingKind, GpuContext, KernelPipeline};
use crate::error::{Error, Result};
use crate::kernels::{fold_workgroups, Dispatch, ShaderInfo};

/// Mirrors `struct Params` in `shaders/rmsnorm_gated.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct RmsnormGatedParams {
    /// Rows (tokens).
    pub rows: u32,
    /// Columns (d_inner).
    pub cols: u32,
    /// Columns per normalised group (d_inner / n_groups).
    pub group: u32,
    /// Epsilon inside the square root.
    pub eps: f32,
    /// Element offset of z in row 0 of the z buffer.
    pub z_offset: u32,
    /// Elements between rows of z.
    pub z_stride: u32,
    /// 1: normalise `y`, then gate; 0 (Mamba-2's default): gate, then normalise.
    pub norm_before_gate: u32,
    /// Padding.
    pub _pad0: u32,
}

/// Fails when `group` is 0 or does not divide `cols` (the shader checks neither).
pub fn check_params(params: &RmsnormGatedParams) -> Result<()> {
    if params.group == 0 || !params.cols.is_multiple_of(params.group) {
        return Err(Error::Shape(format!(
            "rmsnorm_gated: group {} does not divide cols {}",
            params.group, params.cols
        )));
    }
    Ok(())
}

/// The buffers one dispatch reads and writes.
#[derive(Clone, Copy, Debug)]
pub struct RmsnormGatedBuffers<'a> {
    /// `[rows, cols]` f32.
    pub y: &'a wgpu::Buffer,
    /// f32 gate rows.
    pub z: &'a wgpu::Buffer,
    /// `[cols]` f32.
    pub weight: &'a wgpu::Buffer,
    /// `[rows, cols]` f32.
    pub out: &'a wgpu::Buffer,
}

const BINDINGS: &[BindingKind] = &[
    BindingKind::Uniform,
    BindingKind::Storage,
    BindingKind::Storage,
    BindingKind::Storage,
    BindingKind::StorageRw,
];

/// Static facts about the shader (workgroups of 256 invocations, for GPUs).
pub const INFO: ShaderInfo = ShaderInfo {
    label: "mamba_wgpu.rmsnorm_gated",
    source: concat!(
        "// mamba_wgpu.rmsnorm_gated: shaders/rmsnorm_gated.wgsl after its size header.\n",
        "const WG: u32 = 256u;\n",
        include_str!("../../shaders/rmsnorm_gated.wgsl")
    ),
    bindings: BINDINGS,
    params_size: std::mem::size_of::<RmsnormGatedParams>(),
};

/// [`INFO`] in workgroups of 8 invocations (one SIMD batch of a CPU adapter): what CPU
/// adapters run.
pub const INFO_NARROW: ShaderInfo = ShaderInfo {
    label: "mamba_wgpu.rmsnorm_gated_narrow",
    source: concat!(
        "// mamba_wgpu.rmsnorm_gated_narrow: shaders/rmsnorm_gated.wgsl after its size header.\n",
        "const WG: u32 = 8u;\n",
        include_str!("../../shaders/rmsnorm_gated.wgsl")
    ),
    bindings: BINDINGS,
    params_size: std::mem::size_of::<RmsnormGatedParams>(),
};

/// The compiled kernel.
#[derive(Clone, Debug)]
pub struct RmsnormGated {
    pipeline: Arc<KernelPipeline>,
}

impl RmsnormGated {
    /// Builds (or fetches from the cache) the pipeline: narrow workgroups on CPU adapters
    /// ([`GpuContext::is_cpu_adapter`]), wide ones elsewhere.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Self::variant(ctx, ctx.is_cpu_adapter())
    }

    /// The pipeline in workgroups of 8 invocations when `narrow`, of 256 otherwise (tests run
    /// both).
    pub fn variant(ctx: &GpuContext, narrow: bool) -> Result<Self> {
        let info = if narrow { INFO_NARROW } else { INFO };
        Ok(Self {
            pipeline: ctx.pipeline(info.label, info.source, info.bindings)?,
        })
    }

    /// One workgroup per (row, group): `rows · cols / group`, folded past 65,535.
    pub fn workgroups(params: &RmsnormGatedParams) -> [u32; 3] {
        fold_workgroups(params.rows * params.cols.checked_div(params.group).unwrap_or(0))
    }

    /// Creates the dispatch (params uniform and bind group). `params` must pass
    /// [`check_params`].
    pub fn bind(
        &self,
        ctx: &GpuContext,
        params: &RmsnormGatedParams,
        b: RmsnormGatedBuffers<'_>,
    ) -> Dispatch {
        Dispatch::new(
            ctx,
            &self.pipeline,
            params,
            &[b.y, b.z, b.weight, b.out],
            Self::workgroups(params),
        )
    }
}
