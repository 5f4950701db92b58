//! `conv1d_step`: One-token causal depthwise conv1d + bias + SiLU for decoding: consumes the conv state and the new input, writes the output and shifts the state by one (same params and buffers as `conv1d` with `len` = 1).
//! See `shaders/conv1d_step.wgsl`; CPU twin in `crate::reference`.

use std::sync::Arc;

use crate::context::{BindingKind, GpuContext, KernelPipeline};
use crate::error::Result;
pub use crate::kernels::conv1d::{Conv1dBuffers, Conv1dParams};
use crate::kernels::{fold_workgroups, Dispatch, ShaderInfo};

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
    label: "mamba_wgpu.conv1d_step",
    source: include_str!("../../shaders/conv1d_step.wgsl"),
    bindings: BINDINGS,
    params_size: std::mem::size_of::<Conv1dParams>(),
};

/// The compiled kernel.
#[derive(Clone, Debug)]
pub struct Conv1dStep {
    pipeline: Arc<KernelPipeline>,
}

impl Conv1dStep {
    /// Builds (or fetches from the cache) the pipeline.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Ok(Self {
            pipeline: ctx.pipeline(INFO.label, INFO.source, INFO.bindings)?,
        })
    }

    /// The dispatch geometry (TODO: placeholder, the kernel's author sets it).
    pub fn workgroups(params: &Conv1dParams) -> [u32; 3] {
        let _ = params;
        fold_workgroups(1)
    }

    /// Creates the dispatch (params uniform and bind group).
    pub fn bind(&self, ctx: &GpuContext, params: &Conv1dParams, b: Conv1dBuffers<'_>) -> Dispatch {
        Dispatch::new(
            ctx,
            &self.pipeline,
            params,
            &[b.x, b.weight, b.bias, b.state, b.out],
            Self::workgroups(params),
        )
    }
}
