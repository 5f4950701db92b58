//! The Mamba-2 SSD prefill kernels (ssd_chunk_cumsum, ssd_chunk_state, ssd_state_passing,
//! ssd_chunk_scan) against their CPU twins in `reference::ssd`, and the whole chunked pipeline
//! (four dispatches in one pass) against `reference::ssd::ssd_sequential`, the plain
//! token-by-token recurrence, over chunk lengths 1 to 300, awkward lengths and head shapes,
//! strided inputs laid out as the model lays them out, clamps, initial states and continued
//! prefills.
//!
//! Tolerances, all as |got − want| ≤ atol·scale + rtol·|want| with scale = the largest |want|
//! of the tensor compared (outputs are sums of many signed terms and may cancel far below them):
//! - kernel vs its twin: same formula, other summation order (32-wide tiles and a scan tree vs
//!   one serial sum, FMA contraction) and the GPU's exp/log: atol 2e-6, rtol 2e-5 (observed on
//!   lavapipe: all within atol 2e-7 and rtol 1e-6 except the state passing's 300 chained
//!   exp-weighted steps, within 3e-7·scale). dt alone: rtol 1e-5, from Vulkan's precision rules
//!   for exp and log (see `chunk_cumsum_matches_twin`).
//! - chunked (GPU or CPU) vs sequential: besides the order of sums, the chunked form computes
//!   the decay over tokens s+1..t as exp(dacs_t − dacs_s), a difference of two running sums,
//!   where the recurrence multiplies the exp(dt·A) one at a time: the difference carries an
//!   absolute error ~|dacs|·eps_f32, the decay a relative error of that size (|dacs| reaches
//!   ~100 in a 256-token chunk here). Hence rtol 1e-4 and atol 2e-5·scale (the brief's ~1e-4
//!   and ~1e-5·scale, doubled for the margin). Observed on lavapipe: worst 5.5e-6·scale;
//!   `pipeline_matches_sequential` prints it (--nocapture).

use mamba_wgpu::kernels::run;
use mamba_wgpu::kernels::ssd_chunk_cumsum::{
    num_chunks, SsdChunkCumsum, SsdChunkCumsumBuffers, SsdChunkCumsumParams,
};
use mamba_wgpu::kernels::ssd_chunk_scan::{SsdChunkScan, SsdChunkScanBuffers, SsdChunkScanParams};
use mamba_wgpu::kernels::ssd_chunk_state::{
    SsdChunkState, SsdChunkStateBuffers, SsdChunkStateParams,
};
use mamba_wgpu::kernels::ssd_state_passing::{
    SsdStatePassing, SsdStatePassingBuffers, SsdStatePassingParams,
};
use mamba_wgpu::reference::ssd::{
    chunk_cumsum, chunk_scan, chunk_state, process_dt, ssd_chunked, ssd_sequential, state_passing,
    SsdInputs,
};

use crate::common::*;

/// Chunked vs sequential (see the module docs).
const SEQ_ATOL: f32 = 2e-5;
const SEQ_RTOL: f32 = 1e-4;
/// Kernel vs twin.
const TWIN_ATOL: f32 = 2e-6;
const TWIN_RTOL: f32 = 2e-5;
/// Fills the y columns the scan must not write.
const Y_FILL: f32 = 12345.0;

/// No clamp: the model's default time_step_limit (0, inf).
const NO_CLAMP: (f32, f32) = (0.0, f32::INFINITY);

/// Like `assert_close`, with the absolute part relative to the tensor's largest |want|.
/// Returns the worst error in units of scale, for the log.
fn assert_scaled(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) -> f32 {
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
    assert_close(what, got, want, atol * scale, rtol);
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs() / scale)
        .fold(0.0, f32::max)
}

/// Head layout of one problem: H heads of P, G groups of N states.
#[derive(Clone, Copy, Debug)]
struct Heads {
    batch: usize,
    nh: usize,
    ng: usize,
    hp: usize,
    ns: usize,
}

impl Heads {
    const fn new(batch: usize, nh: usize, ng: usize, hp: usize, ns: usize) -> Self {
        Self {
            batch,
            nh,
            ng,
            hp,
            ns,
        }
    }
    fn d_inner(&self) -> usize {
        self.nh * self.hp
    }
    /// The conv output row: x (d_inner), B (G·N), C (G·N).
    fn xbc_width(&self) -> usize {
        self.d_inner() + 2 * self.ng * self.ns
    }
    /// The in_proj output row: z (d_inner), xBC, dt (H).
    fn in_proj_width(&self) -> usize {
        self.d_inner() + self.xbc_width() + self.nh
    }
    fn dt_offset(&self) -> usize {
        self.d_inner() + self.xbc_width()
    }
    fn state_len(&self) -> usize {
        self.batch * self.nh * self.hp * self.ns
    }
}

/// One prompt of `total` tokens per sequence, as the model's tensors: in_proj rows (z is NaN:
/// the kernels must not read it), conv output rows x|B|C, the packed head constants. Raw dt
/// has spikes above softplus's threshold only where `clamp` has a finite upper bound or for
/// the cumsum test (`spikes`): an unclamped step of ~25 with A = -16 drives dacs to -400 within
/// one token, and exp(dacs_t − dacs_s) of the chunked form then carries a relative error
/// ~400·eps_f32 ≈ 3e-5 per rounding, past the tolerance once a few add up; real checkpoints'
/// steps are far smaller.
struct Problem {
    s: Heads,
    total: usize,
    in_proj: Vec<f32>, // [batch, total, in_proj_width]
    xbc: Vec<f32>,     // [batch, total, xbc_width]
    heads: Vec<f32>,   // [A_log, D, dt_bias]
    clamp: (f32, f32),
}

impl Problem {
    fn new(seed: u64, s: Heads, total: usize, clamp: (f32, f32)) -> Self {
        Self::with_spikes(seed, s, total, clamp, clamp.1.is_finite())
    }

    fn with_spikes(seed: u64, s: Heads, total: usize, clamp: (f32, f32), spikes: bool) -> Self {
        let (w, xw) = (s.in_proj_width(), s.xbc_width());
        let rows = s.batch * total;
        let dt_bias = rand_vec(seed + 1, s.nh, -5.0, -1.0);
        let mut in_proj = vec![f32::NAN; rows * w];
        let dt = rand_vec(seed + 2, rows * s.nh, -3.0, 1.0);
        for (i, &v) in dt.iter().enumerate() {
            let (r, h) = (i / s.nh, i % s.nh);
            // dt + dt_bias mostly in [-8, 0] (dt from 3e-4 to 0.7); with spikes every 13th
            // above 20 (softplus is the identity, a large dt); every 17th at ~0, every 19th at
            // -40 (softplus ~ 4e-18, which needs the accurate softplus).
            let v = if spikes && i % 13 == 5 {
                v + 25.0
            } else if i % 17 == 3 {
                -dt_bias[h] + 1e-3 * v
            } else if i % 19 == 7 {
                -40.0
            } else {
                v
            };
            in_proj[r * w + s.dt_offset() + h] = v;
        }
        let xbc = rand_vec(seed + 3, rows * xw, -1.0, 1.0);
        for r in 0..rows {
            in_proj[r * w + s.d_inner()..][..xw].copy_from_slice(&xbc[r * xw..][..xw]);
        }
        // A = -exp(A_log) in [-16, -1] (Mamba-2's init range), D in [0.5, 1.5].
        let mut heads = rand_vec(seed + 4, s.nh, 0.0, 16f32.ln());
        heads.extend(rand_vec(seed + 5, s.nh, 0.5, 1.5));
        heads.extend(dt_bias);
        Self {
            s,
            total,
            in_proj,
            xbc,
            heads,
            clamp,
        }
    }

    /// Rows b·(t1 − t0) + (t − t0) of tokens t0..t1 of every sequence.
    fn rows(
        data: &[f32],
        width: usize,
        batch: usize,
        total: usize,
        t0: usize,
        t1: usize,
    ) -> Vec<f32> {
        let mut out = Vec::with_capacity(batch * (t1 - t0) * width);
        for b in 0..batch {
            out.extend_from_slice(&data[(b * total + t0) * width..(b * total + t1) * width]);
        }
        out
    }

    /// in_proj and xbc rows of tokens t0..t1.
    fn part(&self, t0: usize, t1: usize) -> (Vec<f32>, Vec<f32>) {
        let s = &self.s;
        (
            Self::rows(
                &self.in_proj,
                s.in_proj_width(),
                s.batch,
                self.total,
                t0,
                t1,
            ),
            Self::rows(&self.xbc, s.xbc_width(), s.batch, self.total, t0, t1),
        )
    }

    /// The params of a prefill of `len` tokens with chunk `q` and `y_pad` extra y columns.
    fn params(
        &self,
        len: usize,
        q: usize,
        y_pad: usize,
    ) -> (SsdChunkCumsumParams, SsdChunkScanParams) {
        let s = &self.s;
        let cum = SsdChunkCumsumParams {
            batch: s.batch as u32,
            len: len as u32,
            nheads: s.nh as u32,
            chunk: q as u32,
            dt_offset: s.dt_offset() as u32,
            dt_stride: s.in_proj_width() as u32,
            dt_min: self.clamp.0,
            dt_max: self.clamp.1,
        };
        let gn = s.ng * s.ns;
        let scan = SsdChunkScanParams {
            batch: s.batch as u32,
            len: len as u32,
            nheads: s.nh as u32,
            head_dim: s.hp as u32,
            d_state: s.ns as u32,
            ngroups: s.ng as u32,
            chunk: q as u32,
            x_offset: 0,
            x_stride: s.xbc_width() as u32,
            b_offset: s.d_inner() as u32,
            c_offset: (s.d_inner() + gn) as u32,
            y_stride: (s.d_inner() + y_pad) as u32,
        };
        (cum, scan)
    }
}

/// The four kernels in one pass over tokens t0..t1 with chunk `q`, continuing from `state`
/// (updated). Returns y rows (`y_pad` extra columns per row, which must keep `Y_FILL`).
fn gpu_prefill(
    pr: &Problem,
    t0: usize,
    t1: usize,
    q: usize,
    y_pad: usize,
    refold: u32,
    state: &mut [f32],
) -> Vec<f32> {
    let ctx = ctx();
    let s = &pr.s;
    let len = t1 - t0;
    let (cum, scan) = pr.params(len, q, y_pad);
    let (in_proj, xbc) = pr.part(t0, t1);
    let nchunks = num_chunks(len as u32, q as u32) as usize;
    let y_len = s.batch * len * scan.y_stride as usize;
    let (in_proj_b, xbc_b, heads_b) = (upload(&in_proj), upload(&xbc), upload(&pr.heads));
    let dt_b = zeros(s.batch * s.nh * len);
    let dacs_b = zeros(s.batch * s.nh * len);
    let states_b = zeros(s.batch * nchunks * s.nh * s.hp * s.ns);
    let state_b = upload(state);
    let y_b = upload(&vec![Y_FILL; y_len]);

    let mut d1 = SsdChunkCumsum::new(ctx).unwrap().bind(
        ctx,
        &cum,
        SsdChunkCumsumBuffers {
            dt_raw: &in_proj_b,
            heads: &heads_b,
            dt: &dt_b,
            dacs: &dacs_b,
        },
    );
    let mut d2 = SsdChunkState::new(ctx).unwrap().bind(
        ctx,
        &SsdChunkStateParams::from_scan(&scan),
        SsdChunkStateBuffers {
            xbc: &xbc_b,
            dt: &dt_b,
            dacs: &dacs_b,
            states: &states_b,
        },
    );
    let mut d3 = SsdStatePassing::new(ctx).unwrap().bind(
        ctx,
        &SsdStatePassingParams::from_scan(&scan),
        SsdStatePassingBuffers {
            dacs: &dacs_b,
            states: &states_b,
            state: &state_b,
        },
    );
    let mut d4 = SsdChunkScan::new(ctx).unwrap().bind(
        ctx,
        &scan,
        SsdChunkScanBuffers {
            xbc: &xbc_b,
            dt: &dt_b,
            dacs: &dacs_b,
            states: &states_b,
            heads: &heads_b,
            y: &y_b,
        },
    );
    if refold > 0 {
        // Re-split each 1-D count n into (refold, ceil(n / refold)): the shaders must recover
        // the linear index as wg.x + wg.y·nwg.x and skip the rounded-up excess.
        let split = |wg: [u32; 3]| {
            assert_eq!(wg[1], 1, "small counts are not folded");
            [refold, wg[0].div_ceil(refold), 1]
        };
        d1.update(ctx, &cum, split(d1.workgroups()));
        d2.update(
            ctx,
            &SsdChunkStateParams::from_scan(&scan),
            split(d2.workgroups()),
        );
        d3.update(
            ctx,
            &SsdStatePassingParams::from_scan(&scan),
            split(d3.workgroups()),
        );
        d4.update(ctx, &scan, split(d4.workgroups()));
    }
    run(ctx, &[&d1, &d2, &d3, &d4]).unwrap();
    state.copy_from_slice(&read::<f32>(&state_b, state.len()));
    read(&y_b, y_len)
}

/// The twin's y with the untouched columns set to what the GPU buffer held.
fn with_fill(mut y: Vec<f32>, s: &Heads, y_pad: usize) -> Vec<f32> {
    let stride = s.d_inner() + y_pad;
    for (i, v) in y.iter_mut().enumerate() {
        if i % stride >= s.d_inner() {
            *v = Y_FILL;
        }
    }
    y
}

#[test]
fn ssd_twins_match_a_hand_computed_case() {
    // One head, P = N = 1, two tokens, dt clamped to exactly 0.5, A = -1 (A_log = 0), D = 0.25.
    // x = (2, 3), B = (1, -1), C = (0.5, 2), initial state 4. With e = exp(-0.5):
    // h0 = 4e + 0.5·2·1 = 4e + 1,        y0 = 0.5·h0 + 0.25·2 = 2e + 1;
    // h1 = e·h0 + 0.5·3·(−1) = 4e² + e − 1.5, y1 = 2·h1 + 0.25·3 = 8e² + 2e − 2.25.
    let e = (-0.5f32).exp();
    let want_y = [2.0 * e + 1.0, 8.0 * e * e + 2.0 * e - 2.25];
    let want_h = 4.0 * e * e + e - 1.5;
    let dt_raw = [0.3, -7.0];
    let xbc = [2.0, 1.0, 0.5, 3.0, -1.0, 2.0]; // rows x|B|C
    let heads = [0.0, 0.25, 1.0];
    let inp = SsdInputs {
        dt_raw: &dt_raw,
        xbc: &xbc,
        heads: &heads,
    };
    for q in [1u32, 2, 5] {
        let cum = SsdChunkCumsumParams {
            batch: 1,
            len: 2,
            nheads: 1,
            chunk: q,
            dt_offset: 0,
            dt_stride: 1,
            dt_min: 0.5,
            dt_max: 0.5,
        };
        let scan = SsdChunkScanParams {
            batch: 1,
            len: 2,
            nheads: 1,
            head_dim: 1,
            d_state: 1,
            ngroups: 1,
            chunk: q,
            x_offset: 0,
            x_stride: 3,
            b_offset: 1,
            c_offset: 2,
            y_stride: 1,
        };
        let mut h = [4.0];
        let y = ssd_sequential(&cum, &scan, inp, &mut h);
        assert_close("hand y (sequential)", &y, &want_y, 1e-6, 1e-6);
        assert_close("hand state (sequential)", &h, &[want_h], 1e-6, 1e-6);
        let mut h = [4.0];
        let y = ssd_chunked(&cum, &scan, inp, &mut h);
        assert_close(&format!("hand y (chunked, Q={q})"), &y, &want_y, 1e-6, 1e-6);
        assert_close("hand state (chunked)", &h, &[want_h], 1e-6, 1e-6);
        let (mut dt, mut dacs) = ([0.0; 2], [0.0; 2]);
        chunk_cumsum(&cum, &dt_raw, &heads, &mut dt, &mut dacs);
        assert_eq!(dt, [0.5, 0.5]);
        let want_dacs = if q == 1 { [-0.5, -0.5] } else { [-0.5, -1.0] };
        assert_eq!(dacs, want_dacs);
    }
    // softplus: identity above 20, log1p(exp) below, accurate far below (exp(-40) ~ 4.25e-18).
    assert_eq!(process_dt(25.0, 0.0, 0.0, f32::INFINITY), 25.0);
    assert!((process_dt(0.0, 0.0, 0.0, f32::INFINITY) - 2f32.ln()).abs() < 1e-7);
    let tiny = process_dt(-40.0, 0.0, 0.0, f32::INFINITY);
    assert!((tiny / (-40f32).exp() - 1.0).abs() < 1e-6, "{tiny}");
    assert_eq!(process_dt(-40.0, 0.0, 0.01, 0.2), 0.01);
    assert_eq!(process_dt(3.0, 0.0, 0.01, 0.2), 0.2);
}

#[test]
fn chunk_cumsum_matches_twin() {
    let ctx = ctx();
    let k = SsdChunkCumsum::new(ctx).unwrap();
    // Chunks of 1, 7, 64, 256 (one full tile) and 300 (two tiles, a carry); lengths around them.
    for (i, &(batch, nh, len, q, clamp)) in [
        (1, 1, 1, 1, NO_CLAMP),
        (2, 3, 150, 7, (0.01, 0.3)),
        (2, 5, 129, 64, NO_CLAMP),
        (1, 3, 513, 256, (0.001, 0.1)),
        (2, 2, 700, 300, NO_CLAMP),
    ]
    .iter()
    .enumerate()
    {
        let s = Heads::new(batch, nh, 1, 4, 4);
        let pr = Problem::with_spikes(10 + i as u64, s, len, clamp, true);
        let (cum, _) = pr.params(len, q, 0);
        let n = batch * nh * len;
        let (mut dt, mut dacs) = (vec![0.0; n], vec![0.0; n]);
        chunk_cumsum(&cum, &pr.in_proj, &pr.heads, &mut dt, &mut dacs);
        let (in_b, heads_b, dt_b, dacs_b) =
            (upload(&pr.in_proj), upload(&pr.heads), zeros(n), zeros(n));
        let d = k.bind(
            ctx,
            &cum,
            SsdChunkCumsumBuffers {
                dt_raw: &in_b,
                heads: &heads_b,
                dt: &dt_b,
                dacs: &dacs_b,
            },
        );
        run(ctx, &[&d]).unwrap();
        let what = format!("cumsum batch {batch} H {nh} len {len} Q {q}");
        // dt: one exp and one log (or series). Vulkan allows exp 3 + 2|x| ulp (5e-6 relative
        // at x = -40) and log an absolute 2^-21 near 1 (8e-6 relative at log(1.0625), the
        // smallest the shader takes a log of).
        assert_close(
            &format!("{what} dt"),
            &read::<f32>(&dt_b, n),
            &dt,
            0.0,
            1e-5,
        );
        assert_scaled(
            &format!("{what} dacs"),
            &read::<f32>(&dacs_b, n),
            &dacs,
            TWIN_ATOL,
            TWIN_RTOL,
        );
    }
}

/// dt and dacs from the twin, as inputs of the later kernels.
fn dt_dacs(pr: &Problem, len: usize, q: usize) -> (Vec<f32>, Vec<f32>) {
    let (cum, _) = pr.params(len, q, 0);
    let n = pr.s.batch * pr.s.nh * len;
    let (mut dt, mut dacs) = (vec![0.0; n], vec![0.0; n]);
    chunk_cumsum(&cum, &pr.in_proj, &pr.heads, &mut dt, &mut dacs);
    (dt, dacs)
}

#[test]
fn chunk_state_matches_twin() {
    let ctx = ctx();
    let k = SsdChunkState::new(ctx).unwrap();
    // P and N below, at and past the 32-wide tiles (two and three tiles, partial ones), odd
    // chunk lengths, a partial last chunk, G > 1.
    for (i, &(s, len, q)) in [
        (Heads::new(1, 1, 1, 1, 1), 1, 1),
        (Heads::new(2, 3, 3, 12, 40), 70, 33),
        (Heads::new(1, 4, 2, 64, 128), 150, 64),
        (Heads::new(2, 2, 1, 80, 72), 41, 256),
        (Heads::new(1, 2, 2, 33, 8), 19, 8),
    ]
    .iter()
    .enumerate()
    {
        let pr = Problem::new(20 + i as u64, s, len, NO_CLAMP);
        let (dt, dacs) = dt_dacs(&pr, len, q);
        let (_, scan) = pr.params(len, q, 0);
        let p = SsdChunkStateParams::from_scan(&scan);
        let n = s.batch * num_chunks(len as u32, q as u32) as usize * s.nh * s.hp * s.ns;
        let mut want = vec![0.0; n];
        chunk_state(&p, &pr.xbc, &dt, &dacs, &mut want);
        let (xbc_b, dt_b, dacs_b, states_b) =
            (upload(&pr.xbc), upload(&dt), upload(&dacs), zeros(n));
        let d = k.bind(
            ctx,
            &p,
            SsdChunkStateBuffers {
                xbc: &xbc_b,
                dt: &dt_b,
                dacs: &dacs_b,
                states: &states_b,
            },
        );
        run(ctx, &[&d]).unwrap();
        assert_scaled(
            &format!("chunk_state {s:?} len {len} Q {q}"),
            &read::<f32>(&states_b, n),
            &want,
            TWIN_ATOL,
            TWIN_RTOL,
        );
    }
}

#[test]
fn state_passing_matches_twin() {
    let ctx = ctx();
    let k = SsdStatePassing::new(ctx).unwrap();
    // P·N below, at and past 256 elements; 300 chunks (two blocks of chunk decays).
    for (i, &(s, len, q)) in [
        (Heads::new(1, 1, 1, 1, 1), 1, 1),
        (Heads::new(2, 3, 1, 12, 40), 150, 16),
        (Heads::new(1, 2, 1, 16, 16), 17, 16),
        (Heads::new(2, 2, 1, 3, 86), 600, 2),
        (Heads::new(1, 1, 1, 64, 128), 773, 256),
    ]
    .iter()
    .enumerate()
    {
        let pr = Problem::new(30 + i as u64, s, len, NO_CLAMP);
        let (_, dacs) = dt_dacs(&pr, len, q);
        let (_, scan) = pr.params(len, q, 0);
        let p = SsdStatePassingParams::from_scan(&scan);
        let n = s.batch * num_chunks(len as u32, q as u32) as usize * s.nh * s.hp * s.ns;
        let states = rand_vec(31 + i as u64, n, -1.0, 1.0);
        let state = rand_vec(32 + i as u64, s.state_len(), -1.0, 1.0);
        let (mut want_states, mut want_state) = (states.clone(), state.clone());
        state_passing(&p, &dacs, &mut want_states, &mut want_state);
        let (dacs_b, states_b, state_b) = (upload(&dacs), upload(&states), upload(&state));
        let d = k.bind(
            ctx,
            &p,
            SsdStatePassingBuffers {
                dacs: &dacs_b,
                states: &states_b,
                state: &state_b,
            },
        );
        run(ctx, &[&d]).unwrap();
        let what = format!("state_passing {s:?} len {len} Q {q}");
        assert_scaled(
            &format!("{what} states"),
            &read::<f32>(&states_b, n),
            &want_states,
            TWIN_ATOL,
            TWIN_RTOL,
        );
        assert_scaled(
            &format!("{what} state"),
            &read::<f32>(&state_b, s.state_len()),
            &want_state,
            TWIN_ATOL,
            TWIN_RTOL,
        );
    }
}

#[test]
fn chunk_scan_matches_twin() {
    let ctx = ctx();
    let k = SsdChunkScan::new(ctx).unwrap();
    // P below, at and past the 64-wide tile; N below, at and past the 32-wide slices; chunks
    // shorter than, equal to and longer than the 32-token tiles, partial last chunks.
    for (i, &(s, len, q, y_pad)) in [
        (Heads::new(1, 1, 1, 1, 1), 1, 1, 0),
        (Heads::new(2, 3, 3, 12, 40), 70, 33, 3),
        (Heads::new(1, 4, 2, 64, 128), 150, 64, 0),
        (Heads::new(2, 2, 1, 80, 72), 41, 256, 5),
        (Heads::new(1, 2, 2, 33, 8), 19, 8, 0),
        (Heads::new(1, 1, 1, 128, 128), 100, 100, 0),
    ]
    .iter()
    .enumerate()
    {
        let pr = Problem::new(40 + i as u64, s, len, NO_CLAMP);
        let (dt, dacs) = dt_dacs(&pr, len, q);
        let (_, p) = pr.params(len, q, y_pad);
        let n = s.batch * num_chunks(len as u32, q as u32) as usize * s.nh * s.hp * s.ns;
        let states = rand_vec(41 + i as u64, n, -1.0, 1.0);
        let y_len = s.batch * len * p.y_stride as usize;
        let mut want = vec![Y_FILL; y_len];
        chunk_scan(&p, &pr.xbc, &dt, &dacs, &states, &pr.heads, &mut want);
        let (xbc_b, dt_b, dacs_b, states_b, heads_b) = (
            upload(&pr.xbc),
            upload(&dt),
            upload(&dacs),
            upload(&states),
            upload(&pr.heads),
        );
        let y_b = upload(&vec![Y_FILL; y_len]);
        let d = k.bind(
            ctx,
            &p,
            SsdChunkScanBuffers {
                xbc: &xbc_b,
                dt: &dt_b,
                dacs: &dacs_b,
                states: &states_b,
                heads: &heads_b,
                y: &y_b,
            },
        );
        run(ctx, &[&d]).unwrap();
        assert_scaled(
            &format!("chunk_scan {s:?} len {len} Q {q}"),
            &read::<f32>(&y_b, y_len),
            &want,
            TWIN_ATOL,
            TWIN_RTOL,
        );
    }
}

/// Runs one prefill on the GPU and both CPU forms and checks all three against each other.
/// Returns the worst GPU error (units of scale) for the log.
fn check_pipeline(
    seed: u64,
    s: Heads,
    len: usize,
    q: usize,
    clamp: (f32, f32),
    init: bool,
    y_pad: usize,
) -> f32 {
    let pr = Problem::new(seed, s, len, clamp);
    let state0 = if init {
        rand_vec(seed + 9, s.state_len(), -2.0, 2.0)
    } else {
        vec![0.0; s.state_len()]
    };
    let (cum, scan) = pr.params(len, q, y_pad);
    let inp = SsdInputs {
        dt_raw: &pr.in_proj,
        xbc: &pr.xbc,
        heads: &pr.heads,
    };
    let mut want_state = state0.clone();
    let want_y = ssd_sequential(&cum, &scan, inp, &mut want_state);
    let mut cpu_state = state0.clone();
    let cpu_y = ssd_chunked(&cum, &scan, inp, &mut cpu_state);
    let mut gpu_state = state0;
    let gpu_y = gpu_prefill(&pr, 0, len, q, y_pad, 0, &mut gpu_state);
    let what = format!("{s:?} len {len} Q {q} clamp {clamp:?} init {init}");
    assert_scaled(
        &format!("CPU chunked y, {what}"),
        &cpu_y,
        &want_y,
        SEQ_ATOL,
        SEQ_RTOL,
    );
    assert_scaled(
        &format!("CPU chunked state, {what}"),
        &cpu_state,
        &want_state,
        SEQ_ATOL,
        SEQ_RTOL,
    );
    let want_y = with_fill(want_y, &s, y_pad);
    let ey = assert_scaled(
        &format!("GPU y, {what}"),
        &gpu_y,
        &want_y,
        SEQ_ATOL,
        SEQ_RTOL,
    );
    let es = assert_scaled(
        &format!("GPU state, {what}"),
        &gpu_state,
        &want_state,
        SEQ_ATOL,
        SEQ_RTOL,
    );
    ey.max(es)
}

#[test]
fn pipeline_matches_sequential() {
    // Head shapes cycled over the (chunk, length) grid: P = 12 and 64, N = 8, 40 and 128,
    // G = 1, 2 and 3, batch 1 and 2.
    let shapes = [
        Heads::new(1, 2, 1, 12, 8),
        Heads::new(2, 3, 3, 12, 40),
        Heads::new(1, 4, 2, 64, 128),
        Heads::new(2, 6, 3, 16, 8),
        Heads::new(2, 2, 2, 64, 40),
    ];
    let mut i = 0;
    let mut worst = 0.0f32;
    for q in [1usize, 8, 16, 64, 256] {
        let mut lens = vec![1, q.saturating_sub(1), q, q + 1, 3 * q + 5, 150];
        lens.retain(|&l| l > 0);
        lens.dedup();
        for len in lens {
            let mut s = shapes[i % shapes.len()];
            // Keep the longest prompts cheap for the CPU twins and lavapipe.
            if len > 300 {
                s = Heads::new(s.batch.min(1), 2, 2, s.hp, s.ns.min(40));
            }
            let clamp = if i % 3 == 1 { (0.01, 0.3) } else { NO_CLAMP };
            let e = check_pipeline(
                100 + i as u64,
                s,
                len,
                q,
                clamp,
                i % 2 == 0,
                3 * (i % 4 == 3) as usize,
            );
            worst = worst.max(e);
            i += 1;
        }
    }
    println!("pipeline vs sequential: worst error {worst:e} of scale");
}

#[test]
fn pipeline_with_large_heads_and_a_binding_clamp() {
    // P = N = 128 (two 64-wide p-tiles of the scan, four 32-wide tiles of p and n), and a
    // clamp of dt that binds on most tokens (dt_min above the small steps, dt_max below the
    // large ones) with a non-zero initial state.
    let (clamp, s) = ((0.05, 0.2), Heads::new(1, 2, 1, 128, 128));
    let (dt, _) = dt_dacs(&Problem::new(200, s, 75, clamp), 75, 32);
    let low = dt.iter().filter(|&&d| d == clamp.0).count();
    let high = dt.iter().filter(|&&d| d == clamp.1).count();
    assert!(
        low > 10 && high > 10,
        "the clamp should bind: {low} low, {high} high"
    );
    check_pipeline(200, s, 75, 32, clamp, true, 0);
    check_pipeline(
        201,
        Heads::new(2, 3, 1, 64, 64),
        100,
        256,
        (0.05, 0.2),
        true,
        0,
    );
}

#[test]
fn split_prefill_equals_one_prefill() {
    // Prefill L1 tokens, then L2 more from the state it left: y and the final state must equal
    // one prefill of L1 + L2 (and the sequential recurrence over all of it).
    for (i, &(s, l1, l2, q)) in [
        (Heads::new(2, 4, 2, 12, 40), 37, 50, 16),
        (Heads::new(1, 2, 1, 64, 128), 64, 1, 64),
        (Heads::new(2, 3, 3, 16, 8), 1, 150, 256),
    ]
    .iter()
    .enumerate()
    {
        let total = l1 + l2;
        let pr = Problem::new(300 + i as u64, s, total, NO_CLAMP);
        let state0 = rand_vec(310 + i as u64, s.state_len(), -1.0, 1.0);
        let mut whole_state = state0.clone();
        let whole_y = gpu_prefill(&pr, 0, total, q, 0, 0, &mut whole_state);
        let mut split_state = state0.clone();
        let y1 = gpu_prefill(&pr, 0, l1, q, 0, 0, &mut split_state);
        let y2 = gpu_prefill(&pr, l1, total, q, 0, 0, &mut split_state);
        // Back to [batch, total, d_inner] rows.
        let di = s.d_inner();
        let mut split_y = Vec::new();
        for b in 0..s.batch {
            split_y.extend_from_slice(&y1[b * l1 * di..(b + 1) * l1 * di]);
            split_y.extend_from_slice(&y2[b * l2 * di..(b + 1) * l2 * di]);
        }
        let (cum, scan) = pr.params(total, q, 0);
        let inp = SsdInputs {
            dt_raw: &pr.in_proj,
            xbc: &pr.xbc,
            heads: &pr.heads,
        };
        let mut want_state = state0;
        let want_y = ssd_sequential(&cum, &scan, inp, &mut want_state);
        let what = format!("{s:?} {l1} + {l2} Q {q}");
        assert_scaled(
            &format!("split y vs one, {what}"),
            &split_y,
            &whole_y,
            SEQ_ATOL,
            SEQ_RTOL,
        );
        assert_scaled(
            &format!("split state vs one, {what}"),
            &split_state,
            &whole_state,
            SEQ_ATOL,
            SEQ_RTOL,
        );
        assert_scaled(
            &format!("split y vs sequential, {what}"),
            &split_y,
            &want_y,
            SEQ_ATOL,
            SEQ_RTOL,
        );
        assert_scaled(
            &format!("split state vs sequential, {what}"),
            &split_state,
            &want_state,
            SEQ_ATOL,
            SEQ_RTOL,
        );
    }
}

#[test]
fn workgroup_counts_fold_past_65535() {
    // Q = 1 over 40,000 tokens and 2 heads: 80,000 workgroups for the cumsum, chunk state and
    // chunk scan. The counts fold into (x, y) with x, y <= 65,535 and x·y >= the count; the
    // shaders' side of the fold (recovering wg.x + wg.y·nwg.x, skipping the excess) is run by
    // `pipeline_survives_any_fold` with small counts (80,000 workgroups take ~20 s on lavapipe).
    let s = Heads::new(1, 2, 1, 1, 1);
    let len = 40_000u32;
    let (cum, scan) = Problem::new(400, s, 1, NO_CLAMP).params(len as usize, 1, 0);
    let want = 2 * len;
    for wg in [
        SsdChunkCumsum::workgroups(&cum),
        SsdChunkState::workgroups(&SsdChunkStateParams::from_scan(&scan)),
        SsdChunkScan::workgroups(&scan),
    ] {
        assert!(
            wg[0] <= 65_535 && wg[1] > 1 && wg[1] <= 65_535 && wg[2] == 1,
            "{wg:?}"
        );
        assert!(
            wg[0] * wg[1] >= want && (wg[0] - 1) * wg[1] < want,
            "{wg:?}"
        );
    }
    // 2·4 heads·ceil(100·100 / 256) = 320 state-passing groups; none at all for len = 0.
    let big = SsdStatePassingParams {
        batch: 2,
        len: 5,
        nheads: 4,
        head_dim: 100,
        d_state: 100,
        chunk: 2,
        _pad0: 0,
        _pad1: 0,
    };
    assert_eq!(SsdStatePassing::workgroups(&big), [320, 1, 1]);
    assert_eq!(
        SsdStatePassing::workgroups(&SsdStatePassingParams { len: 0, ..big })[0],
        0
    );
    assert_eq!(
        SsdChunkScan::workgroups(&SsdChunkScanParams { len: 0, ..scan })[0],
        0
    );
}

#[test]
fn pipeline_survives_any_fold() {
    // Every dispatch re-split as (k, ceil(n / k)) with k not dividing n, so the last row of
    // workgroups runs past the real count.
    for (i, &(s, len, q, k)) in [
        (Heads::new(2, 3, 3, 12, 40), 150, 16, 7),
        (Heads::new(1, 2, 1, 80, 8), 70, 32, 3),
    ]
    .iter()
    .enumerate()
    {
        let pr = Problem::new(410 + i as u64, s, len, NO_CLAMP);
        let state0 = rand_vec(420 + i as u64, s.state_len(), -1.0, 1.0);
        let (cum, scan) = pr.params(len, q, 0);
        let inp = SsdInputs {
            dt_raw: &pr.in_proj,
            xbc: &pr.xbc,
            heads: &pr.heads,
        };
        let mut want_state = state0.clone();
        let want_y = ssd_sequential(&cum, &scan, inp, &mut want_state);
        let mut state = state0;
        let y = gpu_prefill(&pr, 0, len, q, 0, k, &mut state);
        let what = format!("{s:?} len {len} Q {q} folded by {k}");
        assert_scaled(&format!("y, {what}"), &y, &want_y, SEQ_ATOL, SEQ_RTOL);
        assert_scaled(
            &format!("state, {what}"),
            &state,
            &want_state,
            SEQ_ATOL,
            SEQ_RTOL,
        );
    }
}
