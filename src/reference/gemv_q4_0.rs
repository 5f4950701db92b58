//! CPU twin of `shaders/gemv_q4_0.wgsl`: the Linear of [`super::matmul::linear`] over weights
//! dequantised from ggml's Q4_0 blocks as GGUF stores them (18 bytes: an f16 scale d, then 16
//! bytes qs; for j < 16, weight j of the block = d · ((qs_j & 0xF) − 8) and weight j + 16 =
//! d · ((qs_j >> 4) − 8)). It reads GGUF's bytes, not the kernel's repacked words, so a test of
//! the kernel checks the repack as well. [`quantize_q4_0`] is ggml's reference quantiser.

use super::matmul::linear;

/// The weights of consecutive Q4_0 blocks (`bytes.len()` a multiple of 18), in order.
pub fn dequantize_q4_0(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(18)
        .flat_map(|b| {
            let d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
            let q = &b[2..];
            let lo = q.iter().map(move |&q| d * ((q & 0xF) as i32 - 8) as f32);
            let hi = q.iter().map(move |&q| d * ((q >> 4) as i32 - 8) as f32);
            lo.chain(hi)
        })
        .collect()
}

/// ggml's `quantize_row_q4_0_ref` (which gguf-py's `Q4_0.quantize_blocks` reproduces): per block
/// of 32 (`x.len()` a multiple of 32), `max` is the value of largest magnitude with its sign (the
/// first such), `d = max / −8`, `id = 1 / d` (0 when d is 0), and value j becomes
/// `q_j = min(15, trunc(x_j · id + 8.5))` in f32 arithmetic (x · id lies in [−8, 8], so the
/// sum is never negative and `max` itself maps to 0, −max to 16 → 15); the scale is stored as
/// f16 (nearest even), quant j in the low nibble of byte j and quant j + 16 in its high nibble.
/// Returns GGUF's blocks.
pub fn quantize_q4_0(x: &[f32]) -> Vec<u8> {
    assert!(
        x.len().is_multiple_of(32),
        "Q4_0 rows are whole blocks of 32"
    );
    let mut out = Vec::with_capacity(x.len() / 32 * 18);
    for b in x.chunks_exact(32) {
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in b {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend(half::f16::from_f32(d).to_le_bytes());
        let q = |v: f32| ((v * id + 8.5) as i32).min(15) as u8;
        out.extend((0..16).map(|j| q(b[j]) | q(b[16 + j]) << 4));
    }
    out
}

/// `out[r·n + c] = Σ_{i<k} x[x_offset + r·x_stride + i] · w(c, i) + bias[c]` for `r < m`,
/// `c < n`, with `w` `[n, k]` given as Q4_0 blocks (`n · k / 32` of them, row-major), summed in
/// f32 as [`linear`] does. Returns `[m, n]` contiguous.
#[allow(clippy::too_many_arguments)] // the kernel's params, one for one
pub fn gemv_q4_0(
    x: &[f32],
    x_offset: usize,
    x_stride: usize,
    m: usize,
    w_blocks: &[u8],
    n: usize,
    k: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let w = dequantize_q4_0(w_blocks);
    assert_eq!(w.len(), n * k, "Q4_0 blocks for [{n}, {k}]");
    linear(x, x_offset, x_stride, m, &w, n, k, bias)
}
