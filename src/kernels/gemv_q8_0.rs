//! `gemv_q8_0`: the GEMV of `gemv` (same params, same buffers) over a weight stored as ggml's
//! Q8_0 blocks, dequantised as it is read: `w(c, 32b + j) = d_b · q_j` with an f16 scale `d` and
//! 32 signed 8-bit quants per block, summed in f32. A Q8_0 matrix streams 1.125 bytes per weight
//! (0.28 of f32, 0.56 of f16), which is what a decode step is bound by.
//!
//! The blocks are repacked from GGUF's 34 bytes (f16 d, 32 × i8) to 9 u32 words so that a WGSL
//! `array<u32>` can address them: word 0 holds d's f16 bits in its low half (high half 0),
//! words 1..=8 the quants, four per word, quant j in byte j % 4 (little-endian) of word
//! 1 + j / 4. Row c's block b starts at word (c · k / 32 + b) · 9. See [`repack_q8_0`] and
//! `shaders/gemv_q8_0.wgsl`; the CPU twin is `reference::gemv_q8_0`.

use std::sync::Arc;

use crate::context::{BindingKind, GpuContext, KernelPipeline};
use crate::error::{Error, Result};
pub use crate::kernels::matmul::{MatmulBuffers, MatmulParams};
use crate::kernels::{fold_workgroups, Dispatch, ShaderInfo};

/// Outputs (rows of w) one workgroup computes (`NR` in the shader).
pub const OUTPUTS_PER_GROUP: u32 = 8;

/// Weights per Q8_0 block.
pub const BLOCK: usize = 32;

/// Bytes of one block as GGUF stores it: the f16 scale, then 32 i8 quants.
pub const GGUF_BLOCK_BYTES: usize = 34;

/// u32 words of one repacked block: the scale, then 8 words of quants.
pub const BLOCK_WORDS: usize = 9;

const BINDINGS: &[BindingKind] = &[
    BindingKind::Uniform,
    BindingKind::Storage,
    BindingKind::Storage,
    BindingKind::Storage,
    BindingKind::StorageRw,
];

/// Static facts about the shader.
pub const INFO: ShaderInfo = ShaderInfo {
    label: "mamba_wgpu.gemv_q8_0",
    source: include_str!("../../shaders/gemv_q8_0.wgsl"),
    bindings: BINDINGS,
    params_size: std::mem::size_of::<MatmulParams>(),
};

/// Repacks `rows` rows of `k` Q8_0 weights from GGUF's blocks (`bytes`: rows · k / 32 blocks
/// of 34 bytes, as [`crate::gguf::Gguf::tensor_bytes`] gives a `[rows, k]` Q8_0 tensor) into
/// the kernel's words (module docs). `k` must be a multiple of 32, and every scale finite.
pub fn repack_q8_0(bytes: &[u8], rows: usize, k: usize) -> Result<Vec<u32>> {
    repack_blocks("Q8_0", GGUF_BLOCK_BYTES, bytes, rows, k)
}

/// Repacks ggml blocks that start with an f16 scale followed by whole words of quants (Q8_0,
/// Q4_0): word 0 takes the scale's bits in its low half, the quant bytes follow as
/// little-endian words. `block_bytes` is GGUF's size of one block of [`BLOCK`] weights.
pub(crate) fn repack_blocks(
    format: &str,
    block_bytes: usize,
    bytes: &[u8],
    rows: usize,
    k: usize,
) -> Result<Vec<u32>> {
    if !k.is_multiple_of(BLOCK) {
        return Err(Error::Shape(format!(
            "{format} rows of {k} weights are not whole blocks of {BLOCK}"
        )));
    }
    let blocks = rows
        .checked_mul(k / BLOCK)
        .filter(|b| b.checked_mul(block_bytes) == Some(bytes.len()))
        .ok_or_else(|| {
            Error::Shape(format!(
                "{} bytes of {format} blocks for a [{rows}, {k}] matrix (want {block_bytes} per block)",
                bytes.len(),
            ))
        })?;
    let mut out = Vec::with_capacity(blocks * (1 + (block_bytes - 2) / 4));
    for (i, b) in bytes.chunks_exact(block_bytes).enumerate() {
        let d = half::f16::from_le_bytes([b[0], b[1]]);
        if !d.is_finite() {
            return Err(Error::InvalidInput(format!(
                "{format} block {i} has scale {d} (weights must be finite)"
            )));
        }
        out.push(d.to_bits() as u32);
        out.extend(
            b[2..]
                .chunks_exact(4)
                .map(|q| u32::from_le_bytes([q[0], q[1], q[2], q[3]])),
        );
    }
    Ok(out)
}

/// Checks what the shader assumes: k whole blocks.
pub fn check_params(p: &MatmulParams) -> Result<()> {
    if !p.k.is_multiple_of(BLOCK as u32) {
        return Err(Error::Shape(format!(
            "gemv_q8_0: k = {} is not a multiple of {BLOCK}",
            p.k
        )));
    }
    Ok(())
}

/// The compiled kernel.
#[derive(Clone, Debug)]
pub struct GemvQ8 {
    pipeline: Arc<KernelPipeline>,
}

impl GemvQ8 {
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

    /// Creates the dispatch (params uniform and bind group); `b.w` holds [`repack_q8_0`]'s
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
