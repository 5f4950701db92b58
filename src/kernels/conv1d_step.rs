//! `conv1d_step`: one-token causal depthwise conv1d + bias + SiLU for decoding: consumes the
//! conv state and the new input, writes the output and shifts the state by one (same params
//! and buffers as `conv1d`, with `len` = 1: the new input of sequence b is row b of x).
//! See `shaders/conv1d_step.wgsl`; CPU twin [`crate::reference::conv1d::conv1d`] with one token.

use std::sync::Arc;

use crate::context::{BindingKind, GpuContext, KernelPipeline};
use crate::error::Result;
use crate::kernels::conv1d::MAX_KERNEL;
pub use crate::kernels::conv1d::{Conv1dBuffers, Conv1dParams};
use crate::kernels::{fold_workgroups, Dispatch, ShaderInfo};

/// Invocations per workgroup (one (sequence, channel) each).
const WORKGROUP: u32 = 64;

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

    /// One invocation per (sequence, channel), 64 per workgroup, folded.
    pub fn workgroups(params: &Conv1dParams) -> [u32; 3] {
        fold_workgroups((params.batch * params.channels).div_ceil(WORKGROUP))
    }

    /// Creates the dispatch (params uniform and bind group). Requires `len` = 1 and `kernel`
    /// in 1..=[`MAX_KERNEL`] (both debug-asserted; the shader treats x and out as one row per
    /// sequence whatever `len` says).
    pub fn bind(&self, ctx: &GpuContext, params: &Conv1dParams, b: Conv1dBuffers<'_>) -> Dispatch {
        debug_assert_eq!(params.len, 1, "conv1d_step decodes one token per sequence");
        debug_assert!(
            (1..=MAX_KERNEL).contains(&params.kernel),
            "conv1d_step: kernel {}",
            params.kernel
        );
        Dispatch::new(
            ctx,
            &self.pipeline,
            params,
            &[b.x, b.weight, b.bias, b.state, b.out],
            Self::workgroups(params),
        )
    }
}
