//! CPU twin of `shaders/rmsnorm.wgsl`.

/// `residual += delta` (when given), then `out = residual / sqrt(mean(residual²) + eps) * weight`
/// for each row of `cols` values. Returns `out`; `residual` is updated in place.
pub fn rmsnorm(
    residual: &mut [f32],
    delta: Option<&[f32]>,
    weight: &[f32],
    cols: usize,
    eps: f32,
) -> Vec<f32> {
    if let Some(d) = delta {
        for (r, d) in residual.iter_mut().zip(d) {
            *r += d;
        }
    }
    let mut out = vec![0.0; residual.len()];
    for (row, o) in residual.chunks(cols).zip(out.chunks_mut(cols)) {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / cols as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for ((o, v), w) in o.iter_mut().zip(row).zip(weight) {
            *o = v * inv * w;
        }
    }
    out
}
