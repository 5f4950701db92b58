//! `rmsnorm`: RMSNorm over the rows of a `[rows, cols]` f32 tensor with the residual add fused
//! in front (see `shaders/rmsnorm.wgsl`). CPU twin: [`crate::reference::rmsnorm::rmsnorm`].

use std::sync::Arc;

use crate::context::{BindingKind, GpuContext, KernelPipeline};
use crate::error::Result;
use crate::kernels::{fold_workgroups, Dispatch, ShaderInfo};

/// Mirrors `struct Params` in `shaders/rmsnorm.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct RmsNormParams {
    /// Rows (tokens).
    pub rows: u32,
    /// Columns (features); the norm runs over these.
    pub cols: u32,
    /// Added to the mean square before the inverse square root.
    pub eps: f32,
    /// 1: `residual += delta` first and write it back; 0: normalise `residual` as it is.
    pub add: u32,
}

const BINDINGS: &[BindingKind] = &[
    BindingKind::Uniform,
    BindingKind::StorageRw,
    BindingKind::Storage,
    BindingKind::Storage,
    BindingKind::StorageRw,
];

/// Static facts about the shader (workgroups of 256 invocations, for GPUs).
pub const INFO: ShaderInfo = ShaderInfo {
    label: "mamba_wgpu.rmsnorm",
    source: concat!(
        "// mamba_wgpu.rmsnorm: shaders/rmsnorm.wgsl after its size header.\n",
        "const WG: u32 = 256u;\n",
        include_str!("../../shaders/rmsnorm.wgsl")
    ),
    bindings: BINDINGS,
    params_size: std::mem::size_of::<RmsNormParams>(),
};

/// [`INFO`] in workgroups of 8 invocations (one SIMD batch of a CPU adapter, no batch
/// switches at the barriers): what CPU adapters run.
pub const INFO_NARROW: ShaderInfo = ShaderInfo {
    label: "mamba_wgpu.rmsnorm_narrow",
    source: concat!(
        "// mamba_wgpu.rmsnorm_narrow: shaders/rmsnorm.wgsl after its size header.\n",
        "const WG: u32 = 8u;\n",
        include_str!("../../shaders/rmsnorm.wgsl")
    ),
    bindings: BINDINGS,
    params_size: std::mem::size_of::<RmsNormParams>(),
};

/// The buffers one dispatch reads and writes.
#[derive(Clone, Copy, Debug)]
pub struct RmsNormBuffers<'a> {
    /// `[rows, cols]` residual stream, updated in place when `add` is set.
    pub residual: &'a wgpu::Buffer,
    /// `[rows, cols]` added to the residual (ignored when `add` is 0; any buffer may be bound).
    pub delta: &'a wgpu::Buffer,
    /// `[cols]` norm weight.
    pub weight: &'a wgpu::Buffer,
    /// `[rows, cols]` normalised output.
    pub out: &'a wgpu::Buffer,
}

/// The compiled kernel.
#[derive(Clone, Debug)]
pub struct RmsNorm {
    pipeline: Arc<KernelPipeline>,
}

impl RmsNorm {
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

    /// One workgroup per row.
    pub fn workgroups(params: &RmsNormParams) -> [u32; 3] {
        fold_workgroups(params.rows)
    }

    /// Creates the dispatch (params uniform and bind group).
    pub fn bind(
        &self,
        ctx: &GpuContext,
        params: &RmsNormParams,
        b: RmsNormBuffers<'_>,
    ) -> Dispatch {
        Dispatch::new(
            ctx,
            &self.pipeline,
            params,
            &[b.residual, b.delta, b.weight, b.out],
            Self::workgroups(params),
        )
    }
}
