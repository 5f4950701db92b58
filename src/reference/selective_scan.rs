//! CPU twin of `shaders/selective_scan.wgsl` and `shaders/selective_state_update.wgsl`: the
//! Mamba-1 selective scan as the plain sequential recurrence of transformers' `MambaMixer`
//! slow path, in f32, with the kernels' addressing (see [`SelectiveScanParams`]).

use crate::kernels::selective_scan::{dt_proj_layout, SelectiveScanParams};

/// The read-only inputs of one scan, addressed exactly as the kernels address their buffers
/// (row `r = b·len + t`, offsets and strides from [`SelectiveScanParams`]).
#[derive(Clone, Copy, Debug)]
pub struct SelectiveScanInputs<'a> {
    /// dt before bias and softplus: `dt[dt_offset + r·dt_stride + d]`; with `dt_rank = k > 0`,
    /// dt_proj's input instead: `k` values at `dt[dt_offset + r·dt_stride + j]`.
    pub dt: &'a [f32],
    /// B and C rows: `B_t[n] = bc[bc_offset + r·bc_stride + n]`, `C_t[n]` at `+ d_state`.
    pub bc: &'a [f32],
    /// The SSM input: `x[x_offset + r·x_stride + d]`.
    pub x: &'a [f32],
    /// The gate: `z[z_offset + r·z_stride + d]` (read only when `flags & 1`).
    pub z: &'a [f32],
    /// Per-layer constants: `A_log[d, n]` at `d·N + n`, `D[d]` at `d_inner·N + d`,
    /// `dt_bias[d]` at `d_inner·N + d_inner + d`, and with `dt_rank = k > 0` dt_proj's
    /// weight `W[d, j]` at `w0 + d·k4 + j` (`(w0, k4)` from
    /// [`crate::kernels::selective_scan::dt_proj_layout`]).
    pub ssm: &'a [f32],
}

/// torch's `softplus` with its default threshold: `v` if `v > 20`, else `log1p(exp(v))`.
pub fn softplus(v: f32) -> f32 {
    if v > 20.0 {
        v
    } else {
        v.exp().ln_1p()
    }
}

/// `v·sigmoid(v)`.
pub fn silu(v: f32) -> f32 {
    v / (1.0 + (-v).exp())
}

/// The selective scan, one token after the other. For each sequence `b`, channel `d` and
/// state `n`, with `Δ_t = softplus(dt + dt_bias[d])` and `A = -exp(A_log)` (with `dt_rank = k > 0`,
/// `dt = Σ_j W[d, j]·dt_in[j]`, dt_proj applied here):
///
/// `h_t[n] = exp(Δ_t·A[d,n])·h_{t-1}[n] + Δ_t·B_t[n]·x_t`, starting from `h_{-1}` = `state`;
/// `y_t = Σ_n C_t[n]·h_t[n]`, plus `D[d]·x_t` when `flags & 2`, times `silu(z_t)` when `flags & 1`.
///
/// `y_t` is written at `y[r·y_stride + d]` (other elements untouched) and `state`
/// (`[batch, d_inner, d_state]`, element `(b·d_inner + d)·d_state + n`) ends holding
/// `h_{len-1}`. Panics if a slice is too short for the addressing.
pub fn selective_scan(
    p: &SelectiveScanParams,
    inp: SelectiveScanInputs<'_>,
    state: &mut [f32],
    y: &mut [f32],
) {
    let (batch, len) = (p.batch as usize, p.len as usize);
    let (d_inner, ns) = (p.d_inner as usize, p.d_state as usize);
    let at = |offset: u32, r: usize, stride: u32, col: usize| {
        offset as usize + r * stride as usize + col
    };
    for b in 0..batch {
        for d in 0..d_inner {
            let a: Vec<f32> = (0..ns).map(|n| -inp.ssm[d * ns + n].exp()).collect();
            let d_skip = inp.ssm[d_inner * ns + d];
            let dt_bias = inp.ssm[d_inner * ns + d_inner + d];
            let h = &mut state[(b * d_inner + d) * ns..][..ns];
            for t in 0..len {
                let r = b * len + t;
                let dt = if p.dt_rank == 0 {
                    inp.dt[at(p.dt_offset, r, p.dt_stride, d)]
                } else {
                    let (w0, k4) = dt_proj_layout(d_inner, ns, p.dt_rank as usize);
                    (0..p.dt_rank as usize)
                        .map(|j| {
                            inp.ssm[w0 + d * k4 + j] * inp.dt[at(p.dt_offset, r, p.dt_stride, j)]
                        })
                        .sum()
                };
                let delta = softplus(dt + dt_bias);
                let xv = inp.x[at(p.x_offset, r, p.x_stride, d)];
                let bc_row = at(p.bc_offset, r, p.bc_stride, 0);
                let (b_t, c_t) = (&inp.bc[bc_row..][..ns], &inp.bc[bc_row + ns..][..ns]);
                let mut yv = 0.0;
                for (n, hn) in h.iter_mut().enumerate() {
                    *hn = (delta * a[n]).exp() * *hn + delta * b_t[n] * xv;
                    yv += c_t[n] * *hn;
                }
                if p.flags & 2 != 0 {
                    yv += d_skip * xv;
                }
                if p.flags & 1 != 0 {
                    yv *= silu(inp.z[at(p.z_offset, r, p.z_stride, d)]);
                }
                y[r * p.y_stride as usize + d] = yv;
            }
        }
    }
}
