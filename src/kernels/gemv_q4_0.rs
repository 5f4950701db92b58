//! `gemv_q4_0`: the GEMV of `gemv` (same params, same buffers) over a weight stored as ggml's
//! Q4_0 blocks, dequantised as it is read: for `j < 16`, `w(c, 32b + j) = d_b · (lo(qs_j) − 8)`
//! and `w(c, 32b + 16 + j) = d_b · (hi(qs_j) − 8)`, with an f16 scale `d` and 16 bytes `qs` of
//! two 4-bit quants each per block, summed in f32. A Q4_0 matrix streams 0.625 bytes per
//! weight as the kernel stores it (0.16 of f32, 0.31 of f16, 0.56 of Q8_0).
//!
//! The blocks are repacked from GGUF's 18 bytes (f16 d, 16 quant bytes) to 5 u32 words so that
//! a WGSL `array<u32>` can address them: word 0 holds d's f16 bits in its low half (high half
//! 0), words 1..=4 the quant bytes unchanged, four per word, byte j in byte j % 4
//! (little-endian) of word 1 + j / 4 (so the low nibbles of word 1 + t are weights
//! 4t .. 4t + 3 of the block and its high nibbles weights 16 + 4t .. 16 + 4t + 3). Row c's block
//! b starts at word (c · k / 32 + b) · 5. See [`repack_q4_0`] and `shaders/gemv_q4_0.wgsl`; the
//! CPU twin is `reference::gemv_q4_0`.

use std::sync::Arc;

use crate::context::{BindingKind, GpuContext, KernelPipeline};
use crate::error::{Error, Result};
pub use crate::kernels::matmul::{MatmulBuffers, MatmulParams};
use crate::kernels::{fold_workgroups, Dispatch, ShaderInfo};

/// Outputs (rows of w) one workgroup computes (`NR` in the shader).
pub const OUTPUTS_PER_GROUP: u32 = 8;

/// Weights per Q4_0 block.
pub const BLOCK: usize = 32;

/// Bytes of one block as GGUF stores it: the f16 scale, then 16 bytes of two quants each.
pub const GGUF_BLOCK_BYTES: usize = 18;

/// u32 words of one repacked block: the scale, then 4 words of quant bytes.
pub const BLOCK_WORDS: usize = 5;

const BINDINGS: &[BindingKind] = &[
    BindingKind::Uniform,
    BindingKind::Storage,
    BindingKind::Storage,
    BindingKind::Storage,
    BindingKind::StorageRw,
];

/// Static facts about the shader.
pub const INFO: ShaderInfo = ShaderInfo {
    label: "mamba_wgpu.gemv_q4_0",
    source: include_str!("../../shaders/gemv_q4_0.wgsl"),
    bindings: BINDINGS,
    params_size: std::mem::size_of::<MatmulParams>(),
};

/// Repacks `rows` rows of `k` Q4_0 weights from GGUF's blocks (`bytes`: rows · k / 32 blocks
/// of 18 bytes, as [`crate::gguf::Gguf::tensor_bytes`] gives a `[rows, k]` Q4_0 tensor) into
/// the kernel's words (module docs). `k` must be a multiple of 32, and every scale finite.
pub fn repack_q4_0(bytes: &[u8], rows: usize, k: usize) -> Result<Vec<u32>> {
    crate::kernels::gemv_q8_0::repack_blocks("Q4_0", GGUF_BLOCK_BYTES, bytes, rows, k)
}

/// Checks what the shader assumes: k whole blocks.
pub fn check_params(p: &MatmulParams) -> Result<()> {
    if !p.k.is_multiple_of(BLOCK as u32) {
        return Err(Error::Shape(format!(
            "gemv_q4_0: k = {} is not a multiple of {BLOCK}",
            p.k
        )));
    }
    Ok(())
}

/// The compiled kernel.
#[derive(Clone, Debug)]
pub struct GemvQ4 {
    pipeline: Arc<KernelPipeline>,
}

impl GemvQ4 {
    /// Builds (or fetches from the cache) the pipeline.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Ok(Self {
            pipeline: ctx.pipeline(INFO.label, INFO.source, INFO.bindings)?,
        })
    }

    /// One workgroup of 64 invocations per [`OUTPUTS_PER_GROUP`] outputs (rows of w),
    /// folded into (x, y) past 65,535; every row of x is handled inside the group.
    pub fn workgroups(params: &MatmulParams) -> [u32; 3] {
        if params.m == 0 {
            return [0, 1, 1];
        }
        fold_workgroups(params.n.div_ceil(OUTPUTS_PER_GROUP))
    }

    /// Creates the dispatch (params uniform and bind group); `b.w` holds [`repack_q4_0`]'s
    /// words. `params.k` must be a multiple of 32 ([`check_params`]).
    pub fn bind(&self, ctx: &GpuContext, params: &MatmulParams, b: MatmulBuffers<'_>) -> Dispatch {
        Dispatch::new(
            ctx,
            &self.pipeline,
            params,
            &[b.x, b.w, b.bias, b.y],
            Self::workgroups(params),
        )
    }
}
