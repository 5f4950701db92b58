//! `conv1d`: Causal depthwise conv1d + bias + SiLU over a prompt, continuing from and updating the conv state: `out[b,t,c] = silu(bias[c] + Σ_j w[c,j]·u[b, t+j-(K-1), c])` where u at negative times comes from `state[b, c, :]` (the previous K-1 inputs, oldest first; zeros for a new sequence); afterwards `state[b,c,:]` holds the last K-1 inputs of (old state ++ this prompt), so prompts shorter than K-1 keep part of the old state.
//! See `shaders/conv1d.wgsl`; CPU twin in `crate::reference`.

use std::sync::Arc;

use crate::context::{BindingKind, GpuContext, KernelPipeline};
use crate::error::Result;
use crate::kernels::{fold_workgroups, Dispatch, ShaderInfo};

/// Mirrors `struct Params` in `shaders/conv1d.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Conv1dParams {
    /// Sequences.
    pub batch: u32,
    /// Tokens per sequence in this call (x rows are b·len + t).
    pub len: u32,
    /// Channels (d_inner, or conv_dim for Mamba-2).
    pub channels: u32,
    /// Taps K (d_conv).
    pub kernel: u32,
    /// Element offset of channel 0 of row 0 of x.
    pub x_offset: u32,
    /// Elements between rows of x.
    pub x_stride: u32,
    /// Elements between rows of out.
    pub out_stride: u32,
    /// 1 to add bias.
    pub has_bias: u32,
}

/// The buffers one dispatch reads and writes.
#[derive(Clone, Copy, Debug)]
pub struct Conv1dBuffers<'a> {
    /// f32 inputs, rows b·len + t.
    pub x: &'a wgpu::Buffer,
    /// `[channels, kernel]` f32 (PyTorch `[channels, 1, kernel]`).
    pub weight: &'a wgpu::Buffer,
    /// `[channels]` f32.
    pub bias: &'a wgpu::Buffer,
    /// `[batch, channels, kernel-1]` f32 conv state, oldest first.
    pub state: &'a wgpu::Buffer,
    /// f32 outputs, rows b·len + t.
    pub out: &'a wgpu::Buffer,
}

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
    label: "mamba_wgpu.conv1d",
    source: include_str!("../../shaders/conv1d.wgsl"),
    bindings: BINDINGS,
    params_size: std::mem::size_of::<Conv1dParams>(),
};

/// The compiled kernel.
#[derive(Clone, Debug)]
pub struct Conv1d {
    pipeline: Arc<KernelPipeline>,
}

impl Conv1d {
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
