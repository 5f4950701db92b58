//! `fma_probe`: the register FMA-rate probe (see `shaders/fma_probe.wgsl`);
//! [`crate::profile::fma_rate`] times it. Not part of any model.

use std::sync::Arc;

use crate::context::{BindingKind, GpuContext, KernelPipeline};
use crate::error::Result;
use crate::kernels::{Dispatch, ShaderInfo, MAX_GROUPS_PER_DIM};

/// Invocations per workgroup.
pub const WORKGROUP_SIZE: u32 = 256;
/// FLOPs one invocation does per round: 8 vec4 FMAs, 2 FLOPs per lane.
pub const FLOPS_PER_ROUND: u64 = 8 * 4 * 2;

/// Mirrors `struct Params` in `shaders/fma_probe.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct FmaProbeParams {
    /// Rounds per invocation.
    pub iters: u32,
    /// Starting value (runtime, so the loop cannot be folded).
    pub seed: f32,
    /// Workgroups to launch.
    pub groups: u32,
    /// Padding to 16 bytes.
    pub _pad0: u32,
}

const BINDINGS: &[BindingKind] = &[BindingKind::Uniform, BindingKind::StorageRw];

/// Static facts about the shader.
pub const INFO: ShaderInfo = ShaderInfo {
    label: "mamba_wgpu.fma_probe",
    source: include_str!("../../shaders/fma_probe.wgsl"),
    bindings: BINDINGS,
    params_size: std::mem::size_of::<FmaProbeParams>(),
};

/// The compiled kernel.
#[derive(Clone, Debug)]
pub struct FmaProbe {
    pipeline: Arc<KernelPipeline>,
}

impl FmaProbe {
    /// Builds (or fetches from the cache) the pipeline.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Ok(Self {
            pipeline: ctx.pipeline(INFO.label, INFO.source, INFO.bindings)?,
        })
    }

    /// `groups` workgroups in x.
    pub fn workgroups(params: &FmaProbeParams) -> [u32; 3] {
        [params.groups.clamp(1, MAX_GROUPS_PER_DIM), 1, 1]
    }

    /// Creates the dispatch; `out` holds `groups · 256` f32.
    pub fn bind(&self, ctx: &GpuContext, params: &FmaProbeParams, out: &wgpu::Buffer) -> Dispatch {
        Dispatch::new(
            ctx,
            &self.pipeline,
            params,
            &[out],
            Self::workgroups(params),
        )
    }
}
