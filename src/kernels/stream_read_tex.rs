//! `stream_read_tex`: the texture read-bandwidth probe (see `shaders/stream_read_tex.wgsl`),
//! the twin of [`crate::kernels::stream_read`] for texture-stored weights. It streams an
//! rgba32float texture once and writes one partial sum per invocation;
//! [`crate::profile::texture_read_bandwidth`] times it and checks the sum. Not part of any model.

use std::sync::Arc;

use crate::context::{BindingKind, GpuContext, KernelPipeline};
use crate::error::Result;
use crate::kernels::{Dispatch, ShaderInfo, MAX_GROUPS_PER_DIM};

/// Mirrors `struct Params` in `shaders/stream_read_tex.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct StreamReadTexParams {
    /// Texels to read, in line order.
    pub len: u32,
    /// Texels per line of the texture.
    pub width: u32,
    /// Workgroups to launch (read by the shader from `num_workgroups`).
    pub groups: u32,
    /// Padding to 16 bytes.
    pub _pad0: u32,
}

impl StreamReadTexParams {
    /// Params for `len` texels in lines of `width`, about 16 loads per invocation.
    pub fn for_len(len: u32, width: u32) -> Self {
        Self::with_loads(len, width, 16)
    }

    /// Params for `len` texels in lines of `width`, about `loads` loads per invocation (at
    /// least 1).
    pub fn with_loads(len: u32, width: u32, loads: u32) -> Self {
        let loads = loads.max(1);
        Self {
            len,
            width,
            groups: len.div_ceil(256 * loads).clamp(1, MAX_GROUPS_PER_DIM),
            _pad0: 0,
        }
    }
}

const BINDINGS: &[BindingKind] = &[
    BindingKind::Uniform,
    BindingKind::TextureFloat,
    BindingKind::StorageRw,
];

/// Static facts about the shader.
pub const INFO: ShaderInfo = ShaderInfo {
    label: "mamba_wgpu.stream_read_tex",
    source: include_str!("../../shaders/stream_read_tex.wgsl"),
    bindings: BINDINGS,
    params_size: std::mem::size_of::<StreamReadTexParams>(),
};

/// The compiled kernel.
#[derive(Clone, Debug)]
pub struct StreamReadTex {
    pipeline: Arc<KernelPipeline>,
}

impl StreamReadTex {
    /// Builds (or fetches from the cache) the pipeline.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Ok(Self {
            pipeline: ctx.pipeline(INFO.label, INFO.source, INFO.bindings)?,
        })
    }

    /// `groups` workgroups in x (the shader's partial index is the global invocation index, so no fold).
    pub fn workgroups(params: &StreamReadTexParams) -> [u32; 3] {
        [params.groups.clamp(1, MAX_GROUPS_PER_DIM), 1, 1]
    }

    /// Creates the dispatch: `data` is the texture's view, `partial` `[groups · 256]` f32.
    pub fn bind(
        &self,
        ctx: &GpuContext,
        params: &StreamReadTexParams,
        data: &wgpu::TextureView,
        partial: &wgpu::Buffer,
    ) -> Dispatch {
        Dispatch::with_resources(
            ctx,
            &self.pipeline,
            params,
            &[
                wgpu::BindingResource::TextureView(data),
                partial.as_entire_binding(),
            ],
            Self::workgroups(params),
        )
    }
}
