//! CPU twins of the Mamba-2 SSD prefill kernels (`shaders/ssd_chunk_cumsum.wgsl`,
//! `ssd_chunk_state.wgsl`, `ssd_state_passing.wgsl`, `ssd_chunk_scan.wgsl`), with the kernels'
//! params and buffer layouts, and [`ssd_sequential`]: the plain token-by-token recurrence the
//! chunked algorithm must equal (the state space duality).
//!
//! Notation: sequence `b`, head `h < H`, head_dim `P`, d_state `N`, groups `G` (head `h` reads
//! group `g = h / (H / G)`), chunk length `Q`, row `r = b·len + t`, chunk `c = t / Q` (the last
//! chunk may be partial). Layouts: dt and dacs `[batch, H, len]` (index `(b·H + h)·len + t`);
//! chunk states `[batch, nchunks, H, P, N]` with `nchunks = ceil(len / Q)`; the SSM state
//! `[batch, H, P, N]`; per-head constants packed `[A_log (H), D (H), dt_bias (H)]`. In the
//! rows of `xbc`: `x_t[p]` at `r·x_stride + x_offset + h·P + p`, `B_t[n]` at
//! `r·x_stride + b_offset + g·N + n`, `C_t[n]` at `r·x_stride + c_offset + g·N + n`.

use crate::kernels::ssd_chunk_cumsum::{num_chunks, SsdChunkCumsumParams};
use crate::kernels::ssd_chunk_scan::SsdChunkScanParams;
use crate::kernels::ssd_chunk_state::SsdChunkStateParams;
use crate::kernels::ssd_state_passing::SsdStatePassingParams;
use crate::reference::selective_scan::softplus;

/// The processed step: `clamp(softplus(raw + bias), dt_min, dt_max)` with the clamp written
/// as `min(max(v, dt_min), dt_max)` (as the shader does, so `dt_min > dt_max` gives `dt_max`).
pub fn process_dt(raw: f32, bias: f32, dt_min: f32, dt_max: f32) -> f32 {
    softplus(raw + bias).max(dt_min).min(dt_max)
}

/// Tokens `start..end` of chunk `c` of a sequence of `len` tokens.
fn chunk_range(c: usize, q: usize, len: usize) -> std::ops::Range<usize> {
    c * q..((c + 1) * q).min(len)
}

/// Step 1. For each sequence, head and token: `dt[(b·H + h)·len + t]` = the processed step of
/// `dt_raw[dt_offset + r·dt_stride + h]` with bias `dt_bias[h]`, and `dacs` at the same index =
/// `Σ_{s in chunk(t), s ≤ t} dt_s·A_h` with `A_h = -exp(A_log[h])` (summed in token order).
pub fn chunk_cumsum(
    p: &SsdChunkCumsumParams,
    dt_raw: &[f32],
    heads: &[f32],
    dt: &mut [f32],
    dacs: &mut [f32],
) {
    let (batch, len, nh, q) = (
        p.batch as usize,
        p.len as usize,
        p.nheads as usize,
        p.chunk as usize,
    );
    for b in 0..batch {
        for h in 0..nh {
            let a = -heads[h].exp();
            let bias = heads[2 * nh + h];
            let base = (b * nh + h) * len;
            for c in 0..num_chunks(p.len, p.chunk) as usize {
                let mut sum = 0.0;
                for t in chunk_range(c, q, len) {
                    let raw =
                        dt_raw[p.dt_offset as usize + (b * len + t) * p.dt_stride as usize + h];
                    let d = process_dt(raw, bias, p.dt_min, p.dt_max);
                    sum += d * a;
                    dt[base + t] = d;
                    dacs[base + t] = sum;
                }
            }
        }
    }
}

/// Step 2. Each chunk's own final state (the state it ends on when it starts from zero):
/// `states[b, c, h, p, n] = Σ_{s in c} exp(min(dacs_last − dacs_s, 0))·dt_s·x_s[p]·B_s[n]`,
/// `dacs_last` the dacs of the chunk's last token.
pub fn chunk_state(
    p: &SsdChunkStateParams,
    xbc: &[f32],
    dt: &[f32],
    dacs: &[f32],
    states: &mut [f32],
) {
    let (batch, len, nh) = (p.batch as usize, p.len as usize, p.nheads as usize);
    let (hp, ns, q) = (p.head_dim as usize, p.d_state as usize, p.chunk as usize);
    let heads_per_group = nh / p.ngroups as usize;
    let nchunks = num_chunks(p.len, p.chunk) as usize;
    let stride = p.x_stride as usize;
    for b in 0..batch {
        for c in 0..nchunks {
            let tokens = chunk_range(c, q, len);
            for h in 0..nh {
                let g = h / heads_per_group;
                let base = (b * nh + h) * len;
                let last = dacs[base + tokens.end - 1];
                let s_out = &mut states[((b * nchunks + c) * nh + h) * hp * ns..][..hp * ns];
                s_out.fill(0.0);
                for s in tokens.clone() {
                    let row = (b * len + s) * stride;
                    let w = (last - dacs[base + s]).min(0.0).exp() * dt[base + s];
                    let x = &xbc[row + p.x_offset as usize + h * hp..][..hp];
                    let bv = &xbc[row + p.b_offset as usize + g * ns..][..ns];
                    for (pi, xv) in x.iter().enumerate() {
                        for (n, bn) in bv.iter().enumerate() {
                            s_out[pi * ns + n] += w * xv * bn;
                        }
                    }
                }
            }
        }
    }
}

/// Step 3. The state entering each chunk, in place: with `S'_0 = state[b, h]`,
/// `S'_{c+1} = exp(dacs_last(c))·S'_c + S_c`; `states[b, c, h]` is overwritten with `S'_c` and
/// `state[b, h]` with `S'_nchunks` (left as it is when `len` is 0).
pub fn state_passing(
    p: &SsdStatePassingParams,
    dacs: &[f32],
    states: &mut [f32],
    state: &mut [f32],
) {
    let (batch, len, nh, q) = (
        p.batch as usize,
        p.len as usize,
        p.nheads as usize,
        p.chunk as usize,
    );
    let pn = (p.head_dim * p.d_state) as usize;
    let nchunks = num_chunks(p.len, p.chunk) as usize;
    for b in 0..batch {
        for h in 0..nh {
            let s = &mut state[(b * nh + h) * pn..][..pn];
            for c in 0..nchunks {
                let decay = dacs[(b * nh + h) * len + chunk_range(c, q, len).end - 1].exp();
                let own = &mut states[((b * nchunks + c) * nh + h) * pn..][..pn];
                for (sv, ov) in s.iter_mut().zip(own.iter_mut()) {
                    let entering = *sv;
                    *sv = decay * entering + *ov;
                    *ov = entering;
                }
            }
        }
    }
}

/// Steps 4-5. The output, at `y[r·y_stride + h·P + p]` (other elements untouched):
///
/// `y_t[p] = Σ_{s in chunk(t), s ≤ t} (C_t·B_s)·exp(min(dacs_t − dacs_s, 0))·dt_s·x_s[p]`
/// `+ exp(dacs_t)·Σ_n C_t[n]·S'_c[p, n] + D[h]·x_t[p]`,
///
/// with `S'_c` = `states[b, c, h]` after [`state_passing`].
pub fn chunk_scan(
    p: &SsdChunkScanParams,
    xbc: &[f32],
    dt: &[f32],
    dacs: &[f32],
    states: &[f32],
    heads: &[f32],
    y: &mut [f32],
) {
    let (batch, len, nh) = (p.batch as usize, p.len as usize, p.nheads as usize);
    let (hp, ns, q) = (p.head_dim as usize, p.d_state as usize, p.chunk as usize);
    let heads_per_group = nh / p.ngroups as usize;
    let nchunks = num_chunks(p.len, p.chunk) as usize;
    let stride = p.x_stride as usize;
    let x_at = |r: usize, h: usize| r * stride + p.x_offset as usize + h * hp;
    let b_at = |r: usize, g: usize| r * stride + p.b_offset as usize + g * ns;
    let c_at = |r: usize, g: usize| r * stride + p.c_offset as usize + g * ns;
    for b in 0..batch {
        for c in 0..nchunks {
            let tokens = chunk_range(c, q, len);
            for h in 0..nh {
                let g = h / heads_per_group;
                let base = (b * nh + h) * len;
                let entering = &states[((b * nchunks + c) * nh + h) * hp * ns..][..hp * ns];
                let d_skip = heads[nh + h];
                for t in tokens.clone() {
                    let rt = b * len + t;
                    let ct = &xbc[c_at(rt, g)..][..ns];
                    let xt = &xbc[x_at(rt, h)..][..hp];
                    let mut yt = vec![0.0f32; hp];
                    // Inter-chunk: the entering state read out by C_t, decayed to token t.
                    let decay = dacs[base + t].exp();
                    for (pi, yv) in yt.iter_mut().enumerate() {
                        let row = &entering[pi * ns..][..ns];
                        let dot: f32 = ct.iter().zip(row).map(|(a, b)| a * b).sum();
                        *yv = decay * dot;
                    }
                    // Intra-chunk: the masked, decayed C·Bᵀ applied to dt·X.
                    for s in tokens.start..=t {
                        let rs = b * len + s;
                        let bs = &xbc[b_at(rs, g)..][..ns];
                        let cb: f32 = ct.iter().zip(bs).map(|(a, b)| a * b).sum();
                        let l = (dacs[base + t] - dacs[base + s]).min(0.0).exp();
                        let w = cb * l * dt[base + s];
                        let xs = &xbc[x_at(rs, h)..][..hp];
                        for (yv, xv) in yt.iter_mut().zip(xs) {
                            *yv += w * xv;
                        }
                    }
                    for (pi, yv) in yt.iter().enumerate() {
                        y[rt * p.y_stride as usize + h * hp + pi] = yv + d_skip * xt[pi];
                    }
                }
            }
        }
    }
}

/// The read-only inputs of one SSD prefill, addressed as the kernels address them.
#[derive(Clone, Copy, Debug)]
pub struct SsdInputs<'a> {
    /// Raw dt: head `h` of row `r` at `dt_offset + r·dt_stride + h` (cumsum params).
    pub dt_raw: &'a [f32],
    /// The conv output rows holding x, B and C (scan params' offsets and stride).
    pub xbc: &'a [f32],
    /// `[A_log (H), D (H), dt_bias (H)]`.
    pub heads: &'a [f32],
}

/// The SSD as the plain recurrence, one token after the other (the specification the chunked
/// kernels must equal). For each sequence `b` and head `h`, with `dt_t` the processed step
/// (`dt` addressing and clamp from `dtp`) and `A_h = -exp(A_log[h])`:
///
/// `h_t = exp(dt_t·A_h)·h_{t-1} + dt_t·x_t·B_tᵀ` (`h` is `[P, N]`, `h_{-1}` = `state[b, h]`),
/// `y_t = h_t·C_t + D[h]·x_t`.
///
/// Shapes, xbc addressing and `y_stride` come from `p` (its `chunk` is not used). `state`
/// (`[batch, H, P, N]`) ends holding `h_{len-1}`; returns `y` of `batch·len·y_stride` elements,
/// zero outside the written columns.
pub fn ssd_sequential(
    dtp: &SsdChunkCumsumParams,
    p: &SsdChunkScanParams,
    inp: SsdInputs<'_>,
    state: &mut [f32],
) -> Vec<f32> {
    let (batch, len, nh) = (p.batch as usize, p.len as usize, p.nheads as usize);
    let (hp, ns) = (p.head_dim as usize, p.d_state as usize);
    let heads_per_group = nh / p.ngroups as usize;
    let stride = p.x_stride as usize;
    let mut y = vec![0.0; batch * len * p.y_stride as usize];
    for b in 0..batch {
        for h in 0..nh {
            let g = h / heads_per_group;
            let a = -inp.heads[h].exp();
            let d_skip = inp.heads[nh + h];
            let bias = inp.heads[2 * nh + h];
            let hs = &mut state[(b * nh + h) * hp * ns..][..hp * ns];
            for t in 0..len {
                let r = b * len + t;
                let raw = inp.dt_raw[dtp.dt_offset as usize + r * dtp.dt_stride as usize + h];
                let d = process_dt(raw, bias, dtp.dt_min, dtp.dt_max);
                let decay = (d * a).exp();
                let row = r * stride;
                let x = &inp.xbc[row + p.x_offset as usize + h * hp..][..hp];
                let bv = &inp.xbc[row + p.b_offset as usize + g * ns..][..ns];
                let cv = &inp.xbc[row + p.c_offset as usize + g * ns..][..ns];
                for (pi, xv) in x.iter().enumerate() {
                    let hrow = &mut hs[pi * ns..][..ns];
                    let mut yv = 0.0;
                    for n in 0..ns {
                        hrow[n] = decay * hrow[n] + d * xv * bv[n];
                        yv += hrow[n] * cv[n];
                    }
                    y[r * p.y_stride as usize + h * hp + pi] = yv + d_skip * xv;
                }
            }
        }
    }
    y
}

/// The chunked SSD on the CPU: [`chunk_cumsum`], [`chunk_state`], [`state_passing`] and
/// [`chunk_scan`] in order, exactly as the four kernels run (same arguments and result as
/// [`ssd_sequential`], which it equals up to rounding; `p.chunk` is the chunk length).
pub fn ssd_chunked(
    dtp: &SsdChunkCumsumParams,
    p: &SsdChunkScanParams,
    inp: SsdInputs<'_>,
    state: &mut [f32],
) -> Vec<f32> {
    let (batch, len, nh) = (p.batch as usize, p.len as usize, p.nheads as usize);
    let pn = (p.head_dim * p.d_state) as usize;
    let nchunks = num_chunks(p.len, p.chunk) as usize;
    let mut dt = vec![0.0; batch * nh * len];
    let mut dacs = vec![0.0; batch * nh * len];
    let mut states = vec![0.0; batch * nchunks * nh * pn];
    let mut y = vec![0.0; batch * len * p.y_stride as usize];
    chunk_cumsum(dtp, inp.dt_raw, inp.heads, &mut dt, &mut dacs);
    chunk_state(
        &SsdChunkStateParams::from_scan(p),
        inp.xbc,
        &dt,
        &dacs,
        &mut states,
    );
    state_passing(
        &SsdStatePassingParams::from_scan(p),
        &dacs,
        &mut states,
        state,
    );
    chunk_scan(p, inp.xbc, &dt, &dacs, &states, inp.heads, &mut y);
    y
}
