//! CPU twin of `shaders/matmul.wgsl` and `shaders/gemv.wgsl` (one math, two layouts): the
//! PyTorch Linear `y = x · wᵀ + bias` with `w` stored `[n, k]` row-major.
//!
//! [`linear`] computes the product into a fresh `[m, n]` matrix; [`write_rows`] places such a
//! matrix into a wider output the way the kernels' `y_offset`, `y_stride` and accumulate flag do.
//! Together they are the kernels' spec:
//! `y[y_offset + r·y_stride + c] = (accumulate ? y[..] : 0) + (Σ_i x[..]·w[c·k + i] + bias[c])`.
//!
//! With f16 weight storage (`mamba_wgpu.matmul_f16`, `mamba_wgpu.gemv_f16`) the kernels compute
//! the same f32 sums over the weights rounded to f16: [`linear`] of [`round_to_f16`]`(w)`.

/// `out[r·n + c] = Σ_{i<k} x[x_offset + r·x_stride + i] · w[c·k + i] + bias[c]` for `r < m`,
/// `c < n`, summed in f32 in increasing `i`, the bias added after the sum. `w` is `[n, k]`
/// row-major (PyTorch `[out_features, in_features]`); `bias`, when given, holds at least `n`
/// values (slice it at the dispatch's `bias_offset`). Returns `out` as `[m, n]` contiguous.
#[allow(clippy::too_many_arguments)] // the kernels' params, one for one
pub fn linear(
    x: &[f32],
    x_offset: usize,
    x_stride: usize,
    m: usize,
    w: &[f32],
    n: usize,
    k: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let mut out = vec![0.0; m * n];
    for r in 0..m {
        let xr = &x[x_offset + r * x_stride..][..k];
        for c in 0..n {
            let wr = &w[c * k..][..k];
            let mut s = 0.0f32;
            for (a, b) in xr.iter().zip(wr) {
                s += a * b;
            }
            if let Some(b) = bias {
                s += b[c];
            }
            out[r * n + c] = s;
        }
    }
    out
}

/// Writes the `[m, n]` matrix `out` into `y` at `y[y_offset + r·y_stride + c]`, adding it to
/// what is there when `accumulate` is set (the kernels' flags bit 1); other elements of `y`
/// are left alone.
pub fn write_rows(
    y: &mut [f32],
    y_offset: usize,
    y_stride: usize,
    accumulate: bool,
    out: &[f32],
    n: usize,
) {
    if n == 0 {
        return;
    }
    for (r, row) in out.chunks(n).enumerate() {
        let yr = &mut y[y_offset + r * y_stride..][..n];
        for (d, v) in yr.iter_mut().zip(row) {
            *d = if accumulate { *d + v } else { *v };
        }
    }
}

/// Each value rounded to the nearest f16 (ties to even) and widened back to f32: the weights an
/// f16-storage kernel multiplies (`crate::tensor::WeightDtype::F16`). Every f16 is exactly an
/// f32, so the kernels' products and f32 sums are then the twin's.
pub fn round_to_f16(w: &[f32]) -> Vec<f32> {
    w.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect()
}
