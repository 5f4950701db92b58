//! CPU twin of `shaders/ssd_state_update.wgsl`: one Mamba-2 (SSD) decoding step, the plain
//! per-head recurrence in f32 with the kernel's addressing (see [`SsdStateUpdateParams`]).

use crate::kernels::ssd_state_update::SsdStateUpdateParams;
use crate::reference::selective_scan::softplus;

/// One token per sequence `b < batch` (row `r = b`). For each head `h < H` (group
/// `g = h / (H / G)`), with `P = head_dim`, `N = d_state`:
///
/// `dt = clamp(softplus(dt_raw[r·dt_stride + dt_offset + h] + dt_bias[h]), dt_min, dt_max)`,
/// `A = -exp(A_log[h])`, `dA = exp(dt·A)`;
/// `x[p] = xbc[r·x_stride + x_offset + h·P + p]`, `B[n] = xbc[r·x_stride + b_offset + g·N + n]`,
/// `C[n] = xbc[r·x_stride + c_offset + g·N + n]`;
/// `state[b, h, p, n] = dA·state[b, h, p, n] + dt·x[p]·B[n]`;
/// `y[r·y_stride + h·P + p] = Σ_n C[n]·state[b, h, p, n] + D[h]·x[p]`.
///
/// `heads` packs `A_log[h]` at `h`, `D[h]` at `H + h` and `dt_bias[h]` at `2H + h`; `state` is
/// `[batch, H, P, N]` (element `(b·H + h)·P·N + p·N + n`), updated in place; elements of `y`
/// outside the written ones are untouched. The clamp is applied (transformers skips it when
/// decoding), so decoding equals the full forward. `softplus` is torch's (threshold 20).
/// Panics if a slice is too short for the addressing or `ngroups` does not divide `nheads`.
pub fn ssd_state_update(
    p: &SsdStateUpdateParams,
    xbc: &[f32],
    dt_raw: &[f32],
    heads: &[f32],
    state: &mut [f32],
    y: &mut [f32],
) {
    let (nh, hd, ns) = (p.nheads as usize, p.head_dim as usize, p.d_state as usize);
    let heads_per_group = nh / p.ngroups as usize;
    for b in 0..p.batch as usize {
        let row = &xbc[b * p.x_stride as usize..];
        for h in 0..nh {
            let g = h / heads_per_group;
            let raw =
                dt_raw[b * p.dt_stride as usize + p.dt_offset as usize + h] + heads[2 * nh + h];
            let dt = softplus(raw).max(p.dt_min).min(p.dt_max);
            let a = -heads[h].exp();
            let da = (dt * a).exp();
            let d_skip = heads[nh + h];
            let b_g = &row[p.b_offset as usize + g * ns..][..ns];
            let c_g = &row[p.c_offset as usize + g * ns..][..ns];
            for q in 0..hd {
                let x = row[p.x_offset as usize + h * hd + q];
                let s = &mut state[((b * nh + h) * hd + q) * ns..][..ns];
                let mut acc = 0.0;
                for n in 0..ns {
                    s[n] = da * s[n] + dt * x * b_g[n];
                    acc += c_g[n] * s[n];
                }
                y[b * p.y_stride as usize + h * hd + q] = acc + d_skip * x;
            }
        }
    }
}
