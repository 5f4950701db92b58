//! `ssd_state_passing`: Mamba-2 SSD step 3: the state entering each chunk, sequentially over
//! chunks: S'_0 = the state buffer (zeros or a cached state), S'_{c+1} = exp(dacs_last,c)·S'_c +
//! S_c; overwrites `states[c]` with S'_c (the state entering chunk c) and writes the final S'
//! to the state buffer.
//! See `shaders/ssd_state_passing.wgsl`; CPU twin: [`crate::reference::ssd::state_passing`].
//!
//! One invocation per state element (workgroups of 256 over the P·N elements of one
//! (sequence, head)), each walking the chunks in order: cheap, `ceil(len / Q)` steps.

use std::sync::Arc;

use crate::context::{BindingKind, GpuContext, KernelPipeline};
use crate::error::{Error, Result};
use crate::kernels::ssd_chunk_cumsum::num_chunks;
use crate::kernels::ssd_chunk_scan::SsdChunkScanParams;
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

impl SsdStatePassingParams {
    /// The same shapes as the chunk scan of the same prefill.
    pub fn from_scan(p: &SsdChunkScanParams) -> Self {
        Self {
            batch: p.batch,
            len: p.len,
            nheads: p.nheads,
            head_dim: p.head_dim,
            d_state: p.d_state,
            chunk: p.chunk,
            _pad0: 0,
            _pad1: 0,
        }
    }
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

/// Invocations per workgroup (state elements per workgroup).
const WG: u32 = 256;

/// Fails when the chunk length or the head count is 0 (the shader divides by both).
pub fn check_params(params: &SsdStatePassingParams) -> Result<()> {
    if params.chunk == 0 || params.nheads == 0 {
        return Err(Error::Shape(format!(
            "ssd_state_passing with chunk {} and {} heads",
            params.chunk, params.nheads
        )));
    }
    Ok(())
}

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

    /// One workgroup per (sequence, head, block of 256 state elements):
    /// `batch · H · ceil(P·N / 256)`, folded past 65,535; none when `len` is 0 (the state is
    /// then left as it is).
    pub fn workgroups(params: &SsdStatePassingParams) -> [u32; 3] {
        if num_chunks(params.len, params.chunk) == 0 {
            return [0, 1, 1];
        }
        let n = params.batch * params.nheads * (params.head_dim * params.d_state).div_ceil(WG);
        if n == 0 {
            return [0, 1, 1];
        }
        fold_workgroups(n)
    }

    /// Creates the dispatch (params uniform and bind group). `params` must pass
    /// [`check_params`].
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
