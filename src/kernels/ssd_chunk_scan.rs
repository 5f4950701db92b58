//! `ssd_chunk_scan`: Mamba-2 SSD steps 4-5, the output of every token:
//! `y_t[p] = Σ_{s≤t in chunk} (C_t·B_s)·exp(dacs_t − dacs_s)·dt_s·x_s[p]`
//! `+ exp(dacs_t)·Σ_n C_t[n]·S'_c[p, n] + D[h]·x_t[p]` (exponents clamped at 0).
//! See `shaders/ssd_chunk_scan.wgsl`; CPU twin: [`crate::reference::ssd::chunk_scan`].
//!
//! One workgroup of 64 invocations per (sequence, chunk, head, 32 tokens, 64 values of p),
//! each invocation a 4 × 8 block of outputs: the inter-chunk part as a [32 × N]·[N × 64]
//! product, the intra-chunk part as (C·Bᵀ ∘ L)·(dt·X) over 32-token tiles of s up to the
//! diagonal (tiles wholly above it are skipped). 13 KiB of workgroup memory; any chunk
//! length, head_dim and d_state work.

use std::sync::Arc;

use crate::context::{BindingKind, GpuContext, KernelPipeline};
use crate::error::{Error, Result};
use crate::kernels::ssd_chunk_cumsum::num_chunks;
use crate::kernels::{fold_workgroups, Dispatch, ShaderInfo};

/// Mirrors `struct Params` in `shaders/ssd_chunk_scan.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SsdChunkScanParams {
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
    /// G.
    pub ngroups: u32,
    /// Q.
    pub chunk: u32,
    /// Element offset of x in row 0 of xbc.
    pub x_offset: u32,
    /// Elements between rows of xbc.
    pub x_stride: u32,
    /// Element offset of B in row 0 of xbc.
    pub b_offset: u32,
    /// Element offset of C in row 0 of xbc.
    pub c_offset: u32,
    /// Elements between rows of y (y[row, h·P + p]).
    pub y_stride: u32,
}

/// The buffers one dispatch reads and writes.
#[derive(Clone, Copy, Debug)]
pub struct SsdChunkScanBuffers<'a> {
    /// f32 conv output rows holding x, B, C.
    pub xbc: &'a wgpu::Buffer,
    /// `[batch, H, len]` processed dt.
    pub dt: &'a wgpu::Buffer,
    /// `[batch, H, len]` chunk cumsum of dt·A.
    pub dacs: &'a wgpu::Buffer,
    /// `[batch, nchunks, H, P, N]` states entering each chunk.
    pub states: &'a wgpu::Buffer,
    /// per-head constants packed: A_log `[H]`, D `[H]`, dt_bias `[H]`.
    pub heads: &'a wgpu::Buffer,
    /// f32 output rows, `[H, P]` each.
    pub y: &'a wgpu::Buffer,
}

const BINDINGS: &[BindingKind] = &[
    BindingKind::Uniform,
    BindingKind::Storage,
    BindingKind::Storage,
    BindingKind::Storage,
    BindingKind::Storage,
    BindingKind::Storage,
    BindingKind::StorageRw,
];

/// Static facts about the shader.
pub const INFO: ShaderInfo = ShaderInfo {
    label: "mamba_wgpu.ssd_chunk_scan",
    source: include_str!("../../shaders/ssd_chunk_scan.wgsl"),
    bindings: BINDINGS,
    params_size: std::mem::size_of::<SsdChunkScanParams>(),
};

/// Tokens t per workgroup.
const TILE_T: u32 = 32;
/// Values of p per workgroup.
const TILE_P: u32 = 64;

/// Fails when a dimension is 0 or the heads do not split evenly into groups (the shader
/// divides by them).
pub fn check_params(params: &SsdChunkScanParams) -> Result<()> {
    let p = params;
    if p.chunk == 0 || p.nheads == 0 || p.head_dim == 0 || p.d_state == 0 || p.ngroups == 0 {
        return Err(Error::Shape(format!(
            "ssd_chunk_scan with a zero dimension: {p:?}"
        )));
    }
    if !p.nheads.is_multiple_of(p.ngroups) {
        return Err(Error::Shape(format!(
            "ssd_chunk_scan: {} heads do not split into {} groups",
            p.nheads, p.ngroups
        )));
    }
    Ok(())
}

/// The compiled kernel.
#[derive(Clone, Debug)]
pub struct SsdChunkScan {
    pipeline: Arc<KernelPipeline>,
}

impl SsdChunkScan {
    /// Builds (or fetches from the cache) the pipeline.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Ok(Self {
            pipeline: ctx.pipeline(INFO.label, INFO.source, INFO.bindings)?,
        })
    }

    /// One workgroup per (sequence, chunk, head, 32-token tile of the chunk, 64-wide tile of
    /// P): `batch · ceil(len / Q) · H · ceil(min(Q, len) / 32) · ceil(P / 64)`, folded past
    /// 65,535 (tiles past the end of a partial last chunk return at once); none when there is
    /// nothing to do.
    pub fn workgroups(params: &SsdChunkScanParams) -> [u32; 3] {
        let n = params.batch
            * num_chunks(params.len, params.chunk)
            * params.nheads
            * params.chunk.min(params.len).div_ceil(TILE_T)
            * params.head_dim.div_ceil(TILE_P);
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
        params: &SsdChunkScanParams,
        b: SsdChunkScanBuffers<'_>,
    ) -> Dispatch {
        Dispatch::new(
            ctx,
            &self.pipeline,
            params,
            &[b.xbc, b.dt, b.dacs, b.states, b.heads, b.y],
            Self::workgroups(params),
        )
    }
}
