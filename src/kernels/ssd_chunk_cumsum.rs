//! `ssd_chunk_cumsum`: Mamba-2 SSD step 1: per sequence, head and chunk of Q tokens, the
//! processed step `dt = clamp(softplus(dt_raw + dt_bias[h]), dt_min, dt_max)` and the
//! inclusive cumulative sum of `dt·A[h]` (`A = -exp(A_log[h])`) within the chunk.
//! See `shaders/ssd_chunk_cumsum.wgsl`; CPU twin: [`crate::reference::ssd::chunk_cumsum`].
//!
//! One workgroup of 64 invocations per (sequence, head, chunk); each walks its chunk in tiles
//! of 256 tokens (4 per invocation, then a 64-wide Hillis-Steele scan in workgroup memory), so
//! any chunk length works. The four SSD prefill kernels run in this order in one pass:
//! `ssd_chunk_cumsum`, `ssd_chunk_state`, `ssd_state_passing`, `ssd_chunk_scan`.

use std::sync::Arc;

use crate::context::{BindingKind, GpuContext, KernelPipeline};
use crate::error::{Error, Result};
use crate::kernels::{fold_workgroups, Dispatch, ShaderInfo};

/// Mirrors `struct Params` in `shaders/ssd_chunk_cumsum.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SsdChunkCumsumParams {
    /// Sequences.
    pub batch: u32,
    /// Tokens per sequence (rows b·len + t).
    pub len: u32,
    /// Heads H.
    pub nheads: u32,
    /// Chunk length Q.
    pub chunk: u32,
    /// Element offset of head 0's raw dt in row 0.
    pub dt_offset: u32,
    /// Elements between rows of the raw dt.
    pub dt_stride: u32,
    /// Lower clamp of dt (0 for none).
    pub dt_min: f32,
    /// Upper clamp of dt (a huge value for none).
    pub dt_max: f32,
}

/// The buffers one dispatch reads and writes.
#[derive(Clone, Copy, Debug)]
pub struct SsdChunkCumsumBuffers<'a> {
    /// f32 raw dt (the in_proj output's dt columns).
    pub dt_raw: &'a wgpu::Buffer,
    /// per-head constants packed: A_log `[H]`, then D `[H]`, then dt_bias `[H]`.
    pub heads: &'a wgpu::Buffer,
    /// `[batch, H, len]` f32 processed dt.
    pub dt: &'a wgpu::Buffer,
    /// `[batch, H, len]` f32 cumulative sum of dt·A within each chunk.
    pub dacs: &'a wgpu::Buffer,
}

const BINDINGS: &[BindingKind] = &[
    BindingKind::Uniform,
    BindingKind::Storage,
    BindingKind::Storage,
    BindingKind::StorageRw,
    BindingKind::StorageRw,
];

/// Static facts about the shader.
pub const INFO: ShaderInfo = ShaderInfo {
    label: "mamba_wgpu.ssd_chunk_cumsum",
    source: include_str!("../../shaders/ssd_chunk_cumsum.wgsl"),
    bindings: BINDINGS,
    params_size: std::mem::size_of::<SsdChunkCumsumParams>(),
};

/// Chunks of `chunk` tokens in a sequence of `len` (the last may be partial); 0 when
/// `chunk` is 0.
pub fn num_chunks(len: u32, chunk: u32) -> u32 {
    if chunk == 0 {
        0
    } else {
        len.div_ceil(chunk)
    }
}

/// Fails when the chunk length or the head count is 0 (the shader divides by both).
pub fn check_params(params: &SsdChunkCumsumParams) -> Result<()> {
    if params.chunk == 0 || params.nheads == 0 {
        return Err(Error::Shape(format!(
            "ssd_chunk_cumsum with chunk {} and {} heads",
            params.chunk, params.nheads
        )));
    }
    Ok(())
}

/// The compiled kernel.
#[derive(Clone, Debug)]
pub struct SsdChunkCumsum {
    pipeline: Arc<KernelPipeline>,
}

impl SsdChunkCumsum {
    /// Builds (or fetches from the cache) the pipeline.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Ok(Self {
            pipeline: ctx.pipeline(INFO.label, INFO.source, INFO.bindings)?,
        })
    }

    /// One workgroup per (sequence, head, chunk): `batch · H · ceil(len / Q)`, folded past
    /// 65,535; none when there is nothing to do.
    pub fn workgroups(params: &SsdChunkCumsumParams) -> [u32; 3] {
        let n = params.batch * params.nheads * num_chunks(params.len, params.chunk);
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
        params: &SsdChunkCumsumParams,
        b: SsdChunkCumsumBuffers<'_>,
    ) -> Dispatch {
        Dispatch::new(
            ctx,
            &self.pipeline,
            params,
            &[b.dt_raw, b.heads, b.dt, b.dacs],
            Self::workgroups(params),
        )
    }
}
