//! `conv1d`: causal depthwise conv1d + bias + SiLU over a prompt (prefill), continuing from and
//! updating the conv state: `out[b,t,c] = silu(bias[c] + Σ_j w[c,j]·u[b, t+j-(K-1), c])` where u
//! at negative times comes from `state[b, c, :]` (the previous K-1 inputs, oldest first; zeros
//! for a new sequence); afterwards `state[b,c,:]` holds the last K-1 inputs of (old state ++
//! this prompt), so prompts shorter than K-1 keep part of the old state.
//! See `shaders/conv1d.wgsl`; CPU twin [`crate::reference::conv1d::conv1d`].

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
    /// Taps K (d_conv), 2..=8 (see [`MAX_KERNEL`]).
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
    /// f32 inputs: `u[b,t,c] = x[x_offset + (b·len + t)·x_stride + c]` (typically the first
    /// half of the in_proj output, `x_stride` = 2·channels).
    pub x: &'a wgpu::Buffer,
    /// `[channels, kernel]` f32 (PyTorch `[channels, 1, kernel]`).
    pub weight: &'a wgpu::Buffer,
    /// `[channels]` f32 (not read when `has_bias` is 0; any buffer may be bound).
    pub bias: &'a wgpu::Buffer,
    /// `[batch, channels, kernel-1]` f32 conv state, oldest first.
    pub state: &'a wgpu::Buffer,
    /// f32 outputs: `out[(b·len + t)·out_stride + c]`; other elements are left untouched.
    pub out: &'a wgpu::Buffer,
}

/// The most taps the shaders handle (they hold the window in registers of this size).
pub const MAX_KERNEL: u32 = 8;

/// Tokens each invocation of `conv1d` slides its window over; must equal `TOKENS` in the
/// shader. At least `MAX_KERNEL - 1`, so that only the first token block reads the old state.
pub const TOKENS_PER_INVOCATION: u32 = 32;

/// Invocations per workgroup (one channel each).
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

    /// One workgroup per (64 channels, [`TOKENS_PER_INVOCATION`] tokens, sequence), folded.
    /// Empty (skipped) when `len`, `batch` or `channels` is 0, which leaves the state as it is.
    pub fn workgroups(params: &Conv1dParams) -> [u32; 3] {
        let groups = params.channels.div_ceil(WORKGROUP)
            * params.len.div_ceil(TOKENS_PER_INVOCATION)
            * params.batch;
        fold_workgroups(groups)
    }

    /// Creates the dispatch (params uniform and bind group). Requires `kernel` in
    /// 1..=[`MAX_KERNEL`] (debug-asserted; the shader writes nothing for larger K).
    pub fn bind(&self, ctx: &GpuContext, params: &Conv1dParams, b: Conv1dBuffers<'_>) -> Dispatch {
        debug_assert!(
            (1..=MAX_KERNEL).contains(&params.kernel),
            "conv1d: kernel {}",
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
