//! `selective_state_update`: Mamba-1 one-token selective state update for decoding: `h = exp(Δ·A)·h + Δ·B·x; y = C·h + D·x; y *= silu(z)` (same params and buffers as `selective_scan` with `len` = 1).
//! See `shaders/selective_state_update.wgsl`; CPU twin in `crate::reference`.

use std::sync::Arc;

use crate::context::{BindingKind, GpuContext, KernelPipeline};
use crate::error::Result;
pub use crate::kernels::selective_scan::{SelectiveScanBuffers, SelectiveScanParams};
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

/// Static facts about the shader.
pub const INFO: ShaderInfo = ShaderInfo {
    label: "mamba_wgpu.selective_state_update",
    source: include_str!("../../shaders/selective_state_update.wgsl"),
    bindings: BINDINGS,
    params_size: std::mem::size_of::<SelectiveScanParams>(),
};

/// The compiled kernel.
#[derive(Clone, Debug)]
pub struct SelectiveStateUpdate {
    pipeline: Arc<KernelPipeline>,
}

impl SelectiveStateUpdate {
    /// Builds (or fetches from the cache) the pipeline.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Ok(Self {
            pipeline: ctx.pipeline(INFO.label, INFO.source, INFO.bindings)?,
        })
    }

    /// The dispatch geometry (TODO: placeholder, the kernel's author sets it).
    pub fn workgroups(params: &SelectiveScanParams) -> [u32; 3] {
        let _ = params;
        fold_workgroups(1)
    }

    /// Creates the dispatch (params uniform and bind group).
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
