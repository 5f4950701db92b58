//! CPU twin of `shaders/rmsnorm_gated.wgsl`: Mamba-2's gated RMSNorm over groups of columns.

use crate::kernels::rmsnorm_gated::RmsnormGatedParams;
use crate::reference::selective_scan::silu;

/// Gated RMSNorm of `rows` rows of `cols` columns, normalised over each group of `group`
/// consecutive columns (`cols = group · n_groups`). `y` is `[rows, cols]`, the gate of row `r`,
/// column `c` is `z[z_offset + r·z_stride + c]`, `weight` is `[cols]`; returns `[rows, cols]`.
///
/// `norm_before_gate` = 0 (Mamba-2's default): `v = y·silu(z)`,
/// `out = v / sqrt(mean_group(v²) + eps) · weight`.
/// `norm_before_gate` = 1: `out = y / sqrt(mean_group(y²) + eps) · weight · silu(z)`.
///
/// `silu(v) = v / (1 + exp(-v))`. Panics if `group` is 0 or a slice is too short.
pub fn rmsnorm_gated(p: &RmsnormGatedParams, y: &[f32], z: &[f32], weight: &[f32]) -> Vec<f32> {
    let (rows, cols, group) = (p.rows as usize, p.cols as usize, p.group as usize);
    let mut out = vec![0.0; rows * cols];
    for r in 0..rows {
        let gate = |c: usize| silu(z[p.z_offset as usize + r * p.z_stride as usize + c]);
        for c0 in (0..cols).step_by(group) {
            let cs = c0..c0 + group;
            if p.norm_before_gate == 0 {
                let v: Vec<f32> = cs.clone().map(|c| y[r * cols + c] * gate(c)).collect();
                let ms = v.iter().map(|v| v * v).sum::<f32>() / group as f32;
                let inv = 1.0 / (ms + p.eps).sqrt();
                for (c, v) in cs.zip(v) {
                    out[r * cols + c] = v * inv * weight[c];
                }
            } else {
                let ms = cs.clone().map(|c| y[r * cols + c].powi(2)).sum::<f32>() / group as f32;
                let inv = 1.0 / (ms + p.eps).sqrt();
                for c in cs {
                    out[r * cols + c] = y[r * cols + c] * inv * weight[c] * gate(c);
                }
            }
        }
    }
    out
}
