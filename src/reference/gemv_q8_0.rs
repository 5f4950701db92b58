//! CPU twin of `shaders/gemv_q8_0.wgsl`: the Linear of [`super::matmul::linear`] over weights
//! dequantised from ggml's Q8_0 blocks as GGUF stores them (34 bytes: an f16 scale d, then 32
//! signed bytes q; weight j of the block = d · q_j). It reads GGUF's bytes, not the kernel's
//! repacked words, so a test of the kernel checks the repack as well.

use super::matmul::linear;

/// The weights of consecutive Q8_0 blocks (`bytes.len()` a multiple of 34), in order.
pub fn dequantize_q8_0(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(34)
        .flat_map(|b| {
            let d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
            b[2..].iter().map(move |&q| d * (q as i8) as f32)
        })
        .collect()
}

/// `out[r·n + c] = Σ_{i<k} x[x_offset + r·x_stride + i] · w(c, i) + bias[c]` for `r < m`,
/// `c < n`, with `w` `[n, k]` given as Q8_0 blocks (`n · k / 32` of them, row-major), summed in
/// f32 as [`linear`] does. Returns `[m, n]` contiguous.
#[allow(clippy::too_many_arguments)] // the kernel's params, one for one
pub fn gemv_q8_0(
    x: &[f32],
    x_offset: usize,
    x_stride: usize,
    m: usize,
    w_blocks: &[u8],
    n: usize,
    k: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let w = dequantize_q8_0(w_blocks);
    assert_eq!(w.len(), n * k, "Q8_0 blocks for [{n}, {k}]");
    linear(x, x_offset, x_stride, m, &w, n, k, bias)
}
