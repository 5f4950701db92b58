//! `gemv`: the matmul of `matmul` for a few rows (one decode step of a small batch): the same
//! params and buffers, a reduction-per-output layout instead of tiles.
//! See `shaders/gemv.wgsl`; CPU twin in `crate::reference`.

use std::sync::Arc;

use crate::context::{BindingKind, GpuContext, KernelPipeline};
use crate::error::Result;
pub use crate::kernels::matmul::{MatmulBuffers, MatmulParams};
use crate::kernels::{fold_workgroups, Dispatch, ShaderInfo};

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

    /// The dispatch geometry (TODO: placeholder, the kernel's author sets it).
    pub fn workgroups(params: &MatmulParams) -> [u32; 3] {
        let _ = params;
        fold_workgroups(1)
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
