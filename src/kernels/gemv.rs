//! `gemv`: the matmul of `matmul` for a few rows (one decode step of a small batch): the same
//! params and buffers, a reduction-per-output layout instead of tiles. Any m works; w is
//! streamed once per 4 rows of x, so for many rows `matmul` (once per 64) is the better choice.
//! See `shaders/gemv.wgsl`; CPU twin in `crate::reference`.

use std::sync::Arc;

use crate::context::{BindingKind, GpuContext, KernelPipeline};
use crate::error::Result;
pub use crate::kernels::matmul::{MatmulBuffers, MatmulParams};
use crate::kernels::{fold_workgroups, Dispatch, ShaderInfo};

/// Outputs (rows of w) one workgroup computes (`NR` in the shader).
pub const OUTPUTS_PER_GROUP: u32 = 8;

const BINDINGS: &[BindingKind] = &[
    BindingKind::Uniform,
    BindingKind::Storage,
    BindingKind::Storage,
    BindingKind::Storage,
    BindingKind::StorageRw,
];

/// Static facts about the shader.
pub const INFO: ShaderInfo = ShaderInfo {
    label: "mamba_wgpu.gemv",
    source: include_str!("../../shaders/gemv.wgsl"),
    bindings: BINDINGS,
    params_size: std::mem::size_of::<MatmulParams>(),
};

/// The compiled kernel.
#[derive(Clone, Debug)]
pub struct Gemv {
    pipeline: Arc<KernelPipeline>,
}

impl Gemv {
    /// Builds (or fetches from the cache) the pipeline.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Ok(Self {
            pipeline: ctx.pipeline(INFO.label, INFO.source, INFO.bindings)?,
        })
    }

    /// One workgroup of 64 invocations per [`OUTPUTS_PER_GROUP`] outputs (rows of w),
    /// folded into (x, y) past 65,535; every row of x is handled inside the group.
    pub fn workgroups(params: &MatmulParams) -> [u32; 3] {
        if params.m == 0 {
            return [0, 1, 1];
        }
        fold_workgroups(params.n.div_ceil(OUTPUTS_PER_GROUP))
    }

    /// Creates the dispatch (params uniform and bind group).
    pub fn bind(&self, ctx: &GpuContext, params: &MatmulParams, b: MatmulBuffers<'_>) -> Dispatch {
        Dispatch::new(
            ctx,
            &self.pipeline,
            params,
            &[b.x, b.w, b.bias, b.y],
            Self::workgroups(params),
        )
    }
}
