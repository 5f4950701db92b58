//! `ssd_chunk_state`: Mamba-2 SSD step 2: each chunk's own final state
//! `S_c[p, n] = Σ_s exp(dacs_last − dacs_s)·dt_s·x_s[p]·B_s[n]` (exponent clamped at 0), a
//! [head_dim × chunk]·[chunk × d_state] matmul per (sequence, chunk, head), f32 accumulation.
//! See `shaders/ssd_chunk_state.wgsl`; CPU twin: [`crate::reference::ssd::chunk_state`].
//!
//! One workgroup of 64 invocations per (sequence, chunk, head, 32 × 32 tile of (p, n)), each
//! invocation a 4 × 4 block of outputs; the chunk's tokens are reduced in tiles of 32 staged
//! in 8 KiB of workgroup memory. Any chunk length, head_dim and d_state work.

use std::sync::Arc;

use crate::context::{BindingKind, GpuContext, KernelPipeline};
use crate::error::{Error, Result};
use crate::kernels::ssd_chunk_cumsum::num_chunks;
use crate::kernels::ssd_chunk_scan::SsdChunkScanParams;
use crate::kernels::{fold_workgroups, Dispatch, ShaderInfo};

/// Mirrors `struct Params` in `shaders/ssd_chunk_state.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SsdChunkStateParams {
    /// Sequences.
    pub batch: u32,
    /// Tokens per sequence.
    pub len: u32,
    /// Heads H.
    pub nheads: u32,
    /// P.
    pub head_dim: u32,
    /// N.
    pub d_state: u32,
    /// G; head h reads group h / (H / G).
    pub ngroups: u32,
    /// Q.
    pub chunk: u32,
    /// Element offset of x (head 0, p 0) in row 0 of xbc.
    pub x_offset: u32,
    /// Elements between rows of xbc.
    pub x_stride: u32,
    /// Element offset of B (group 0, n 0) in row 0 of xbc.
    pub b_offset: u32,
    /// Padding.
    pub _pad0: u32,
    /// Padding.
    pub _pad1: u32,
}

impl SsdChunkStateParams {
    /// The same shapes and x/B addressing as the chunk scan of the same prefill.
    pub fn from_scan(p: &SsdChunkScanParams) -> Self {
        Self {
            batch: p.batch,
            len: p.len,
            nheads: p.nheads,
            head_dim: p.head_dim,
            d_state: p.d_state,
            ngroups: p.ngroups,
            chunk: p.chunk,
            x_offset: p.x_offset,
            x_stride: p.x_stride,
            b_offset: p.b_offset,
            _pad0: 0,
            _pad1: 0,
        }
    }
}

/// The buffers one dispatch reads and writes.
#[derive(Clone, Copy, Debug)]
pub struct SsdChunkStateBuffers<'a> {
    /// f32 conv output rows holding x `[H, P]`, B `[G, N]`, C `[G, N]`.
    pub xbc: &'a wgpu::Buffer,
    /// `[batch, H, len]` processed dt.
    pub dt: &'a wgpu::Buffer,
    /// `[batch, H, len]` chunk cumsum of dt·A.
    pub dacs: &'a wgpu::Buffer,
    /// `[batch, nchunks, H, P, N]` f32 chunk states.
    pub states: &'a wgpu::Buffer,
}

const BINDINGS: &[BindingKind] = &[
    BindingKind::Uniform,
    BindingKind::Storage,
    BindingKind::Storage,
    BindingKind::Storage,
    BindingKind::StorageRw,
];

/// Static facts about the shader.
pub const INFO: ShaderInfo = ShaderInfo {
    label: "mamba_wgpu.ssd_chunk_state",
    source: include_str!("../../shaders/ssd_chunk_state.wgsl"),
    bindings: BINDINGS,
    params_size: std::mem::size_of::<SsdChunkStateParams>(),
};

/// Output tile of one workgroup: 32 values of p by 32 of n.
const TILE: u32 = 32;

/// Fails when a dimension is 0 or the heads do not split evenly into groups (the shader
/// divides by them).
pub fn check_params(params: &SsdChunkStateParams) -> Result<()> {
    let p = params;
    if p.chunk == 0 || p.nheads == 0 || p.head_dim == 0 || p.d_state == 0 || p.ngroups == 0 {
        return Err(Error::Shape(format!(
            "ssd_chunk_state with a zero dimension: {p:?}"
        )));
    }
    if !p.nheads.is_multiple_of(p.ngroups) {
        return Err(Error::Shape(format!(
            "ssd_chunk_state: {} heads do not split into {} groups",
            p.nheads, p.ngroups
        )));
    }
    Ok(())
}

/// The compiled kernel.
#[derive(Clone, Debug)]
pub struct SsdChunkState {
    pipeline: Arc<KernelPipeline>,
}

impl SsdChunkState {
    /// Builds (or fetches from the cache) the pipeline.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Ok(Self {
            pipeline: ctx.pipeline(INFO.label, INFO.source, INFO.bindings)?,
        })
    }

    /// One workgroup per (sequence, chunk, head, 32 × 32 tile of the P × N state):
    /// `batch · ceil(len / Q) · H · ceil(P / 32) · ceil(N / 32)`, folded past 65,535; none when
    /// there is nothing to do.
    pub fn workgroups(params: &SsdChunkStateParams) -> [u32; 3] {
        let n = params.batch
            * num_chunks(params.len, params.chunk)
            * params.nheads
            * params.head_dim.div_ceil(TILE)
            * params.d_state.div_ceil(TILE);
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
        params: &SsdChunkStateParams,
        b: SsdChunkStateBuffers<'_>,
    ) -> Dispatch {
        Dispatch::new(
            ctx,
            &self.pipeline,
            params,
            &[b.xbc, b.dt, b.dacs, b.states],
            Self::workgroups(params),
        )
    }
}
