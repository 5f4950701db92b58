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

/// Static facts about the shader.
pub const INFO: ShaderInfo = ShaderInfo {
    label: "mamba_wgpu.rmsnorm",
    source: include_str!("../../shaders/rmsnorm.wgsl"),
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
    /// Builds (or fetches from the cache) the pipeline.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Ok(Self {
            pipeline: ctx.pipeline(INFO.label, INFO.source, INFO.bindings)?,
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
