//! `stream_read`: the read-bandwidth probe (see `shaders/stream_read.wgsl`). It streams a buffer
//! once and writes one partial sum per invocation; [`crate::profile::read_bandwidth`] times it and
//! the tests check the sum. Not part of any model.

use std::sync::Arc;

use crate::context::{BindingKind, GpuContext, KernelPipeline};
use crate::error::Result;
use crate::kernels::{Dispatch, ShaderInfo, MAX_GROUPS_PER_DIM};

/// Mirrors `struct Params` in `shaders/stream_read.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct StreamReadParams {
    /// vec4 elements of `data` to read.
    pub len: u32,
    /// Workgroups to launch (the shader reads it from `num_workgroups`; kept here so the
    /// dispatch geometry follows from the params like every other kernel's).
    pub groups: u32,
    /// Padding to 16 bytes.
    pub _pad0: u32,
    /// Padding to 16 bytes.
    pub _pad1: u32,
}

impl StreamReadParams {
    /// Params for `len` vec4 elements with about 16 loads per invocation, the geometry that
    /// keeps enough loads in flight on GPUs without launching a group per element.
    pub fn for_len(len: u32) -> Self {
        Self::with_loads(len, 16)
    }

    /// Params for `len` vec4 elements with about `loads` loads per invocation (at least 1).
    pub fn with_loads(len: u32, loads: u32) -> Self {
        let loads = loads.max(1);
        Self {
            len,
            groups: len.div_ceil(256 * loads).clamp(1, MAX_GROUPS_PER_DIM),
            ..Default::default()
        }
    }
}

const BINDINGS: &[BindingKind] = &[
    BindingKind::Uniform,
    BindingKind::Storage,
    BindingKind::StorageRw,
];

/// Static facts about the shader.
pub const INFO: ShaderInfo = ShaderInfo {
    label: "mamba_wgpu.stream_read",
    source: include_str!("../../shaders/stream_read.wgsl"),
    bindings: BINDINGS,
    params_size: std::mem::size_of::<StreamReadParams>(),
};

/// The buffers one dispatch reads and writes.
#[derive(Clone, Copy, Debug)]
pub struct StreamReadBuffers<'a> {
    /// `[len, 4]` f32 read once.
    pub data: &'a wgpu::Buffer,
    /// `[groups · 256]` f32 partial sums, one per invocation.
    pub partial: &'a wgpu::Buffer,
}

/// The compiled kernel.
#[derive(Clone, Debug)]
pub struct StreamRead {
    pipeline: Arc<KernelPipeline>,
}

impl StreamRead {
    /// Builds (or fetches from the cache) the pipeline.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Ok(Self {
            pipeline: ctx.pipeline(INFO.label, INFO.source, INFO.bindings)?,
        })
    }

    /// `groups` workgroups in x (the shader's partial index is the global invocation index, so no fold).
    pub fn workgroups(params: &StreamReadParams) -> [u32; 3] {
        [params.groups.clamp(1, MAX_GROUPS_PER_DIM), 1, 1]
    }

    /// Creates the dispatch (params uniform and bind group).
    pub fn bind(
        &self,
        ctx: &GpuContext,
        params: &StreamReadParams,
        b: StreamReadBuffers<'_>,
    ) -> Dispatch {
        Dispatch::new(
            ctx,
            &self.pipeline,
            params,
            &[b.data, b.partial],
            Self::workgroups(params),
        )
    }
}
