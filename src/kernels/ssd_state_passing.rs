//! `ssd_state_passing`: Mamba-2 SSD step 3: the state entering each chunk, sequentially over chunks: S'_0 = the state buffer (zeros or a cached state), S'_{c+1} = exp(dacs_last,c)·S'_c + S_c; overwrites `states[c]` with S'_c (the state entering chunk c) and writes the final S' to the state buffer.
//! See `shaders/ssd_state_passing.wgsl`; CPU twin in `crate::reference`.

use std::sync::Arc;

use crate::context::{BindingKind, GpuContext, KernelPipeline};
use crate::error::Result;
use crate::kernels::{fold_workgroups, Dispatch, ShaderInfo};

/// Mirrors `struct Params` in `shaders/ssd_state_passing.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SsdStatePassingParams {
    /// Sequences.
    pub batch: u32,
    /// Tokens per sequence.
    pub len: u32,
    /// H.
    pub nheads: u32,
    /// P.
    pub head_dim: u32,
    /// N.
    pub d_state: u32,
    /// Q.
    pub chunk: u32,
    /// Padding.
    pub _pad0: u32,
    /// Padding.
    pub _pad1: u32,
}

/// The buffers one dispatch reads and writes.
#[derive(Clone, Copy, Debug)]
pub struct SsdStatePassingBuffers<'a> {
    /// `[batch, H, len]` chunk cumsum of dt·A.
    pub dacs: &'a wgpu::Buffer,
    /// `[batch, nchunks, H, P, N]`: chunk states in, entering states out.
    pub states: &'a wgpu::Buffer,
    /// `[batch, H, P, N]` f32 SSM state: initial in, final out.
    pub state: &'a wgpu::Buffer,
}

const BINDINGS: &[BindingKind] = &[
    BindingKind::Uniform,
    BindingKind::Storage,
    BindingKind::StorageRw,
    BindingKind::StorageRw,
];

/// Static facts about the shader.
pub const INFO: ShaderInfo = ShaderInfo {
    label: "mamba_wgpu.ssd_state_passing",
    source: include_str!("../../shaders/ssd_state_passing.wgsl"),
    bindings: BINDINGS,
    params_size: std::mem::size_of::<SsdStatePassingParams>(),
};

/// The compiled kernel.
#[derive(Clone, Debug)]
pub struct SsdStatePassing {
    pipeline: Arc<KernelPipeline>,
}

impl SsdStatePassing {
    /// Builds (or fetches from the cache) the pipeline.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Ok(Self {
            pipeline: ctx.pipeline(INFO.label, INFO.source, INFO.bindings)?,
        })
    }

    /// The dispatch geometry (TODO: placeholder, the kernel's author sets it).
    pub fn workgroups(params: &SsdStatePassingParams) -> [u32; 3] {
        let _ = params;
        fold_workgroups(1)
    }

    /// Creates the dispatch (params uniform and bind group).
    pub fn bind(
        &self,
        ctx: &GpuContext,
        params: &SsdStatePassingParams,
        b: SsdStatePassingBuffers<'_>,
    ) -> Dispatch {
        Dispatch::new(
            ctx,
            &self.pipeline,
            params,
            &[b.dacs, b.states, b.state],
            Self::workgroups(params),
        )
    }
}
