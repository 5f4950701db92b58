//! ssd_state_update against `reference::ssd_step::ssd_state_update` (and several steps against
//! an independent f64 recurrence), ssd_scan_seq (a whole prompt in one dispatch) against the
//! same twin step after step and the f64 recurrence, rmsnorm_gated against
//! `reference::rmsnorm_gated`. ssd_scan_seq sums y over N in order, so the same tolerances
//! hold.
//!
//! Tolerances (see `assert_ssd_close`, `assert_norm_close`):
//! - SSD state: |got − want| ≤ 1e-5·|want| + 1e-5·scale, scale = the largest |want| of the
//!   tensor. Each element is dA·h + dt·x·B: a few roundings, plus the GPU's exp (WGSL allows
//!   3 + 2|x| ulp) inside dA and softplus; the absolute part covers cancellation between the
//!   two terms. Over T steps the errors add up but dA < 1 damps them, so T ≤ 5 stays inside.
//! - SSD y: the same with 1e-5·sqrt(N) in both parts: y sums N products C·h in another order
//!   (32 lanes, then across lanes), so rounding grows like sqrt(N)·eps_f32 of the terms' size,
//!   and y may cancel far below its terms (hence the part relative to the tensor's scale).
//! - Gated norm: 1e-6 + 1e-5·sqrt(group)·|want|: the mean square sums `group` squares in
//!   another order; silu's exp and inverseSqrt add a few ulp.
//!
//! Observed on lavapipe: worst error below 4% of these tolerances. They are kept wider for
//! real GPUs, whose exp may be off by 3 + 2|x| ulp (WGSL's bound), not libm's ~1.

use mamba_wgpu::kernels::rmsnorm_gated::{
    check_params as check_norm_params, RmsnormGated, RmsnormGatedBuffers, RmsnormGatedParams,
};
use mamba_wgpu::kernels::run;
use mamba_wgpu::kernels::ssd_scan_seq::{
    check_params as check_seq_params, SsdScanSeq, SsdScanSeqBuffers, SsdScanSeqParams,
};
use mamba_wgpu::kernels::ssd_state_update::{
    check_params, SsdStateUpdate, SsdStateUpdateBuffers, SsdStateUpdateParams, MAX_D_STATE,
};
use mamba_wgpu::reference::rmsnorm_gated::rmsnorm_gated;
use mamba_wgpu::reference::selective_scan::silu;
use mamba_wgpu::reference::ssd_step::ssd_state_update;

use crate::common::*;

/// Sentinel in y's padding columns: both the GPU and the twin must leave it alone.
const Y_PAD: f32 = 7.0;

#[derive(Clone, Copy, Debug)]
struct Shape {
    batch: usize,
    h: usize,
    g: usize,
    p: usize,
    n: usize,
}

impl Shape {
    fn d_inner(&self) -> usize {
        self.h * self.p
    }
    /// The conv1d output row: x (d_inner), B (G·N), C (G·N).
    fn conv_width(&self) -> usize {
        self.d_inner() + 2 * self.g * self.n
    }
    /// The in_proj output row: z (d_inner), xBC (conv width), dt (H).
    fn in_proj_width(&self) -> usize {
        self.d_inner() + self.conv_width() + self.h
    }
}

/// Where the pre-softplus value v = dt_raw + dt_bias falls.
#[derive(Clone, Copy, Debug)]
enum Regime {
    /// v in about [-6.5, 2.5]: dt from 1e-3 to 2.6, the model's range.
    Mixed,
    /// v in [-40.5, -9.5]: dt = softplus(v) from 2.6e-18 to 7.5e-5 (the log1p regime).
    Negative,
    /// |v| ≤ 1e-3: dt ≈ ln 2.
    NearZero,
    /// v in [20.5, 30.5]: softplus is the identity.
    Large,
}

/// Logical tensors of a few decoding steps: x `[T, batch, H, P]`, B and C `[T, batch, G, N]`,
/// dt_raw `[T, batch, H]`, per-head constants, and the initial state `[batch, H, P, N]`.
struct Problem {
    s: Shape,
    steps: usize,
    x: Vec<f32>,
    bm: Vec<f32>,
    cm: Vec<f32>,
    dt: Vec<f32>,
    a_log: Vec<f32>,
    d: Vec<f32>,
    dt_bias: Vec<f32>,
    state0: Vec<f32>,
    dt_min: f32,
    dt_max: f32,
    y_stride: usize,
}

impl Problem {
    #[allow(clippy::too_many_arguments)]
    fn new(
        seed: u64,
        s: Shape,
        steps: usize,
        regime: Regime,
        dt_min: f32,
        dt_max: f32,
        y_pad: usize,
        zero_state: bool,
    ) -> Self {
        let Shape { batch, h, g, p, n } = s;
        let dt_bias = match regime {
            Regime::NearZero => vec![0.0; h],
            _ => rand_vec(seed + 1, h, -0.5, 0.5),
        };
        let (lo, hi) = match regime {
            Regime::Mixed => (-6.0, 2.0),
            Regime::Negative => (-40.0, -10.0),
            Regime::NearZero => (-1e-3, 1e-3),
            Regime::Large => (21.0, 30.0),
        };
        let state0 = if zero_state {
            vec![0.0; batch * h * p * n]
        } else {
            rand_vec(seed + 2, batch * h * p * n, -1.0, 1.0)
        };
        Self {
            s,
            steps,
            x: rand_vec(seed + 3, steps * batch * h * p, -2.0, 2.0),
            bm: rand_vec(seed + 4, steps * batch * g * n, -1.0, 1.0),
            cm: rand_vec(seed + 5, steps * batch * g * n, -1.0, 1.0),
            dt: rand_vec(seed + 6, steps * batch * h, lo, hi),
            // Mamba-2's init: A = -exp(A_log) in [-16, -1].
            a_log: rand_vec(seed + 7, h, 0.0, 16f32.ln()),
            d: rand_vec(seed + 8, h, 0.5, 1.5),
            dt_bias,
            state0,
            dt_min,
            dt_max,
            y_stride: s.d_inner() + y_pad,
        }
    }

    /// The per-head constants as the kernel reads them: A_log, D, dt_bias.
    fn heads(&self) -> Vec<f32> {
        [&self.a_log[..], &self.d, &self.dt_bias].concat()
    }

    /// The model's layout: xbc rows of the conv width (x at 0, B at d_inner, C at
    /// d_inner + GN); dt a column slice of in_proj rows (z, xBC, dt), the rest of which is
    /// NaN so that a misread poisons the result.
    fn params(&self) -> SsdStateUpdateParams {
        let s = self.s;
        let (di, gn) = (s.d_inner(), s.g * s.n);
        SsdStateUpdateParams {
            batch: s.batch as u32,
            nheads: s.h as u32,
            head_dim: s.p as u32,
            d_state: s.n as u32,
            ngroups: s.g as u32,
            x_offset: 0,
            x_stride: s.conv_width() as u32,
            b_offset: di as u32,
            c_offset: (di + gn) as u32,
            dt_offset: (2 * di + 2 * gn) as u32,
            dt_stride: s.in_proj_width() as u32,
            y_stride: self.y_stride as u32,
            dt_min: self.dt_min,
            dt_max: self.dt_max,
            ..Default::default()
        }
    }

    /// Step t's packed xbc and in_proj rows.
    fn pack(&self, t: usize) -> (Vec<f32>, Vec<f32>) {
        let Shape { batch, h, g, n, .. } = self.s;
        let (di, cw, iw) = (
            self.s.d_inner(),
            self.s.conv_width(),
            self.s.in_proj_width(),
        );
        let mut xbc = vec![f32::NAN; batch * cw];
        let mut in_proj = vec![f32::NAN; batch * iw];
        for b in 0..batch {
            let tb = t * batch + b;
            xbc[b * cw..][..di].copy_from_slice(&self.x[tb * di..][..di]);
            xbc[b * cw + di..][..g * n].copy_from_slice(&self.bm[tb * g * n..][..g * n]);
            xbc[b * cw + di + g * n..][..g * n].copy_from_slice(&self.cm[tb * g * n..][..g * n]);
            in_proj[b * iw + di + cw..][..h].copy_from_slice(&self.dt[tb * h..][..h]);
        }
        (xbc, in_proj)
    }

    /// The plain recurrence in f64 on the logical tensors, step after step: y per step
    /// `[batch, H, P]` and the final state. Independent of the twin's addressing.
    fn sequential_f64(&self) -> (Vec<Vec<f64>>, Vec<f64>) {
        let Shape { batch, h, g, p, n } = self.s;
        let softplus = |v: f64| if v > 20.0 { v } else { v.exp().ln_1p() };
        let mut state: Vec<f64> = self.state0.iter().map(|&v| v as f64).collect();
        let mut ys = Vec::new();
        for t in 0..self.steps {
            let mut y = vec![0.0f64; batch * h * p];
            for b in 0..batch {
                let tb = t * batch + b;
                for hh in 0..h {
                    let gg = hh * g / h; // = hh / (H / G) when G divides H
                    let v = self.dt[tb * h + hh] as f64 + self.dt_bias[hh] as f64;
                    let dt = softplus(v).max(self.dt_min as f64).min(self.dt_max as f64);
                    let da = (-dt * (self.a_log[hh] as f64).exp()).exp();
                    for q in 0..p {
                        let x = self.x[(tb * h + hh) * p + q] as f64;
                        let mut acc = self.d[hh] as f64 * x;
                        for k in 0..n {
                            let bn = self.bm[(tb * g + gg) * n + k] as f64;
                            let cn = self.cm[(tb * g + gg) * n + k] as f64;
                            let st = &mut state[((b * h + hh) * p + q) * n + k];
                            *st = da * *st + dt * x * bn;
                            acc += cn * *st;
                        }
                        y[(b * h + hh) * p + q] = acc;
                    }
                }
            }
            ys.push(y);
        }
        (ys, state)
    }
}

/// See the module docs for the tolerance; `len` is the reduction length (N for y, 1 for the
/// state).
fn assert_ssd_close(what: &str, got: &[f32], want: &[f32], len: usize) {
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let k = 1e-5 * (len as f32).sqrt();
    assert_close(what, got, want, k * scale, k);
}

/// Runs the problem's steps on the GPU and on the twin, comparing y after every step and the
/// final state; with `f64_check` also against the f64 recurrence. Returns the GPU's final state.
fn check_ssd(what: &str, pr: &Problem, f64_check: bool) -> Vec<f32> {
    // The variant the model picks for N (vec4 states when N % 4 == 0), and the f32-state one,
    // which must give the same (both are checked against the twin).
    let picked = SsdStateUpdate::for_d_state(ctx(), pr.s.n as u32).unwrap();
    let got = check_ssd_with(&picked, &format!("{what} (picked)"), pr, f64_check);
    if pr.s.n.is_multiple_of(4) {
        let scalar = SsdStateUpdate::new(ctx()).unwrap();
        check_ssd_with(&scalar, &format!("{what} (f32 state)"), pr, f64_check);
    }
    got
}

fn check_ssd_with(kernel: &SsdStateUpdate, what: &str, pr: &Problem, f64_check: bool) -> Vec<f32> {
    let ctx = ctx();
    let params = pr.params();
    check_params(&params).unwrap();
    let Shape { batch, h, p, n, .. } = pr.s;
    let y_len = batch * pr.y_stride;
    let heads = pr.heads();
    let (heads_b, state_b) = (upload(&heads), upload(&pr.state0));
    let mut want_state = pr.state0.clone();
    let truth = f64_check.then(|| pr.sequential_f64());
    for t in 0..pr.steps {
        let (xbc, in_proj) = pr.pack(t);
        let mut want_y = vec![Y_PAD; y_len];
        ssd_state_update(
            &params,
            &xbc,
            &in_proj,
            &heads,
            &mut want_state,
            &mut want_y,
        );
        let (xbc_b, dt_b, y_b) = (upload(&xbc), upload(&in_proj), upload(&vec![Y_PAD; y_len]));
        let d = kernel.bind(
            ctx,
            &params,
            SsdStateUpdateBuffers {
                xbc: &xbc_b,
                dt_raw: &dt_b,
                heads: &heads_b,
                state: &state_b,
                y: &y_b,
            },
        );
        run(ctx, &[&d]).unwrap();
        let got_y = read::<f32>(&y_b, y_len);
        assert_ssd_close(&format!("{what}: y step {t}"), &got_y, &want_y, n);
        if let Some((ys, _)) = &truth {
            let d_inner = h * p;
            let got_dense: Vec<f32> = (0..batch)
                .flat_map(|b| got_y[b * pr.y_stride..][..d_inner].to_vec())
                .collect();
            let want_dense: Vec<f32> = ys[t].iter().map(|&v| v as f32).collect();
            assert_ssd_close(
                &format!("{what}: y step {t} vs f64 recurrence"),
                &got_dense,
                &want_dense,
                n,
            );
        }
    }
    let got_state = read::<f32>(&state_b, want_state.len());
    assert_ssd_close(&format!("{what}: state"), &got_state, &want_state, 1);
    if let Some((_, st)) = &truth {
        let want: Vec<f32> = st.iter().map(|&v| v as f32).collect();
        assert_ssd_close(
            &format!("{what}: state vs f64 recurrence"),
            &got_state,
            &want,
            1,
        );
    }
    got_state
}

fn shape(batch: usize, h: usize, g: usize, p: usize, n: usize) -> Shape {
    Shape { batch, h, g, p, n }
}

#[test]
fn ssd_step_reference_matches_hand_computation() {
    // H = G = P = 1, N = 2, batch 1. A_log 0 (A = -1), D 0.25, dt_bias 0, raw dt 0:
    // dt = softplus(0) = ln 2, dA = e^{-ln 2} = 1/2; x = 2, B = (1, -1), C = (3, 0.5), h = (4, 8).
    // h' = (2 + 2 ln 2, 4 - 2 ln 2); y = 3 h'0 + 0.5 h'1 + 0.25·2 = 8.5 + 5 ln 2.
    // xbc row: [x, B0, B1, C0, C1]; dt_raw row: [NaN, raw] (dt_offset 1).
    let ln2 = std::f32::consts::LN_2;
    let mut params = SsdStateUpdateParams {
        batch: 1,
        nheads: 1,
        head_dim: 1,
        d_state: 2,
        ngroups: 1,
        x_offset: 0,
        x_stride: 5,
        b_offset: 1,
        c_offset: 3,
        dt_offset: 1,
        dt_stride: 2,
        y_stride: 1,
        dt_min: 0.0,
        dt_max: f32::INFINITY,
        ..Default::default()
    };
    let xbc = [2.0, 1.0, -1.0, 3.0, 0.5];
    let dt_raw = [f32::NAN, 0.0];
    let heads = [0.0, 0.25, 0.0];
    let close = |g: f32, w: f32| (g - w).abs() <= 1e-6 * w.abs().max(1.0);
    let mut state = [4.0, 8.0];
    let mut y = [0.0];
    ssd_state_update(&params, &xbc, &dt_raw, &heads, &mut state, &mut y);
    let want_state = [2.0 + 2.0 * ln2, 4.0 - 2.0 * ln2];
    assert!(
        close(state[0], want_state[0]) && close(state[1], want_state[1]),
        "{state:?}"
    );
    assert!(close(y[0], 8.5 + 5.0 * ln2), "{y:?}");

    // The clamp binds at the top: dt = 0.5, dA = e^{-1/2}.
    params.dt_max = 0.5;
    let mut state = [4.0, 8.0];
    ssd_state_update(&params, &xbc, &dt_raw, &heads, &mut state, &mut y);
    let da = (-0.5f32).exp();
    let want_state = [4.0 * da + 1.0, 8.0 * da - 1.0];
    assert!(
        close(state[0], want_state[0]) && close(state[1], want_state[1]),
        "{state:?}"
    );
    assert!(
        close(y[0], 3.0 * want_state[0] + 0.5 * want_state[1] + 0.5),
        "{y:?}"
    );

    // ... and at the bottom: dt = 1, dA = e^{-1}; two heads in two groups with H/G = 1 so head
    // 1 reads group 1's B and C: x = (2, 1), B = (1, -1 | 2, 0), C = (3, 0.5 | 1, 1).
    params.dt_min = 1.0;
    params.dt_max = 2.0;
    params.nheads = 2;
    params.ngroups = 2;
    params.x_stride = 10;
    params.b_offset = 2;
    params.c_offset = 6;
    params.dt_stride = 3;
    params.y_stride = 2;
    let xbc = [2.0, 1.0, 1.0, -1.0, 2.0, 0.0, 3.0, 0.5, 1.0, 1.0];
    let dt_raw = [f32::NAN, 0.0, -5.0];
    // A_log (0, ln 2): A = (-1, -2); D (0.25, 0); dt_bias (0, 0).
    let heads = [0.0, 2f32.ln(), 0.25, 0.0, 0.0, 0.0];
    let mut state = [4.0, 8.0, 1.0, -1.0];
    let mut y = [0.0; 2];
    ssd_state_update(&params, &xbc, &dt_raw, &heads, &mut state, &mut y);
    let (e1, e2) = ((-1.0f32).exp(), (-2.0f32).exp());
    let want_state = [4.0 * e1 + 2.0, 8.0 * e1 - 2.0, e2 + 2.0, -e2];
    for (g, w) in state.iter().zip(want_state) {
        assert!(close(*g, w), "{state:?} want {want_state:?}");
    }
    let want_y = [
        3.0 * want_state[0] + 0.5 * want_state[1] + 0.5,
        want_state[2] + want_state[3],
    ];
    assert!(
        close(y[0], want_y[0]) && close(y[1], want_y[1]),
        "{y:?} want {want_y:?}"
    );
}

#[test]
fn ssd_state_update_matches_reference_on_shapes() {
    // mamba2-130m's heads (24 × 64 × 128, one group), several groups, odd sizes, P = 1 and
    // around the 16-channel tile (15, 16, 17, 65), N around the 32 lanes and the 256 maximum.
    let shapes = [
        shape(1, 24, 1, 64, 128),
        shape(3, 24, 1, 64, 128),
        shape(1, 6, 2, 12, 32),
        shape(3, 6, 2, 12, 32),
        shape(1, 12, 3, 8, 40),
        shape(3, 12, 3, 8, 40),
        shape(1, 1, 1, 1, 1),
        shape(3, 1, 1, 1, 1),
        shape(1, 2, 1, 65, 16),
        shape(3, 4, 2, 17, 33),
        shape(1, 3, 1, 15, 31),
        shape(3, 2, 2, 16, 256),
        shape(1, 5, 5, 3, 255),
    ];
    for (i, &s) in shapes.iter().enumerate() {
        let y_pad = i % 2 * 3;
        let pr = Problem::new(
            i as u64 * 101,
            s,
            1,
            Regime::Mixed,
            0.0,
            f32::INFINITY,
            y_pad,
            false,
        );
        check_ssd(&format!("{s:?}"), &pr, false);
    }
}

#[test]
fn ssd_state_update_clamps_dt_at_both_ends() {
    // v in about [-6.5, 2.5]: softplus from 1.5e-3 to 2.6, clamped to [0.05, 0.5].
    for (i, s) in [shape(3, 6, 2, 12, 32), shape(1, 24, 1, 64, 128)]
        .into_iter()
        .enumerate()
    {
        let pr = Problem::new(7 + i as u64, s, 2, Regime::Mixed, 0.05, 0.5, 1, false);
        let sp = |v: f32| if v > 20.0 { v } else { v.exp().ln_1p() };
        let v: Vec<f32> = (0..pr.dt.len())
            .map(|j| sp(pr.dt[j] + pr.dt_bias[j % s.h]))
            .collect();
        assert!(
            v.iter().any(|&d| d < 0.05) && v.iter().any(|&d| d > 0.5),
            "clamp must bind"
        );
        check_ssd(&format!("clamped {s:?}"), &pr, true);
    }
}

#[test]
fn ssd_state_update_dt_regimes() {
    // From a zero state h' = dt·x·B exactly, so the state checks softplus's relative accuracy
    // directly (1e-5, including the log1p regime where dt is as small as 1e-18); then two more
    // steps from a random state.
    for (i, regime) in [
        Regime::Negative,
        Regime::NearZero,
        Regime::Large,
        Regime::Mixed,
    ]
    .into_iter()
    .enumerate()
    {
        let s = shape(3, 6, 2, 12, 32);
        let zero = Problem::new(50 + i as u64, s, 1, regime, 0.0, f32::INFINITY, 0, true);
        let got = check_ssd(&format!("{regime:?} from zero"), &zero, true);
        let (_, want) = zero.sequential_f64();
        let want: Vec<f32> = want.iter().map(|&v| v as f32).collect();
        assert_close(
            &format!("{regime:?}: dt·x·B elementwise"),
            &got,
            &want,
            0.0,
            1e-5,
        );
        let pr = Problem::new(60 + i as u64, s, 3, regime, 0.0, f32::INFINITY, 2, false);
        check_ssd(&format!("{regime:?} 3 steps"), &pr, true);
    }
}

#[test]
fn ssd_state_update_steps_equal_the_recurrence() {
    for (i, &s) in [
        shape(1, 24, 1, 64, 128),
        shape(3, 6, 2, 12, 32),
        shape(3, 12, 3, 8, 40),
        shape(2, 3, 1, 65, 7),
        shape(1, 1, 1, 1, 1),
    ]
    .iter()
    .enumerate()
    {
        let pr = Problem::new(200 + i as u64, s, 5, Regime::Mixed, 1e-3, 2.0, i % 2, false);
        check_ssd(&format!("5 steps {s:?}"), &pr, true);
    }
}

#[test]
fn ssd_state_update_folds_past_65535_workgroups() {
    // 3 · 1366 heads · 16 tiles of P = 256 = 65,568 workgroups.
    let s = shape(3, 1366, 2, 256, 1);
    let pr = Problem::new(9, s, 1, Regime::Mixed, 0.0, f32::INFINITY, 0, false);
    let wg = SsdStateUpdate::workgroups(&pr.params());
    assert!(wg[1] > 1, "{wg:?}");
    check_ssd("folded", &pr, false);
}

#[test]
fn ssd_state_update_checks_params() {
    let ok = SsdStateUpdateParams {
        batch: 1,
        nheads: 6,
        head_dim: 4,
        d_state: MAX_D_STATE,
        ngroups: 3,
        ..Default::default()
    };
    assert!(check_params(&ok).is_ok());
    for bad in [
        SsdStateUpdateParams {
            d_state: MAX_D_STATE + 1,
            ..ok
        },
        SsdStateUpdateParams { ngroups: 4, ..ok },
        SsdStateUpdateParams { ngroups: 0, ..ok },
        SsdStateUpdateParams { head_dim: 0, ..ok },
    ] {
        assert!(check_params(&bad).is_err(), "{bad:?}");
    }
}

/// rows × (group · ngroups) with z a column slice of wider rows (NaN around it).
fn check_gated(rows: usize, group: usize, ngroups: usize, norm_before_gate: bool) {
    let ctx = ctx();
    let cols = group * ngroups;
    let (z_offset, z_stride) = (cols + 3, 2 * cols + 5);
    let seed = (rows * 1000 + group * 10 + ngroups) as u64;
    let y = rand_vec(seed, rows * cols, -2.0, 2.0);
    let mut z = vec![f32::NAN; z_offset + rows * z_stride];
    let zv = rand_vec(seed + 1, rows * cols, -6.0, 6.0);
    for r in 0..rows {
        z[z_offset + r * z_stride..][..cols].copy_from_slice(&zv[r * cols..][..cols]);
    }
    let weight = rand_vec(seed + 2, cols, 0.5, 1.5);
    let params = RmsnormGatedParams {
        rows: rows as u32,
        cols: cols as u32,
        group: group as u32,
        eps: 1e-5,
        z_offset: z_offset as u32,
        z_stride: z_stride as u32,
        norm_before_gate: norm_before_gate as u32,
        ..Default::default()
    };
    check_norm_params(&params).unwrap();
    let want = rmsnorm_gated(&params, &y, &z, &weight);
    // Both workgroup sizes (256 for GPUs, 8 for CPU adapters).
    for narrow in [false, true] {
        let (y_b, z_b, w_b, out_b) = (upload(&y), upload(&z), upload(&weight), zeros(rows * cols));
        let d = RmsnormGated::variant(ctx, narrow).unwrap().bind(
            ctx,
            &params,
            RmsnormGatedBuffers {
                y: &y_b,
                z: &z_b,
                weight: &w_b,
                out: &out_b,
            },
        );
        run(ctx, &[&d]).unwrap();
        let got = read::<f32>(&out_b, rows * cols);
        let what = format!(
            "rmsnorm_gated rows {rows} group {group} ngroups {ngroups} before {norm_before_gate} narrow {narrow}"
        );
        assert_norm_close(&what, &got, &want, group);
    }
}

/// See the module docs for the tolerance.
fn assert_norm_close(what: &str, got: &[f32], want: &[f32], group: usize) {
    let k = 1e-5 * (group as f32).sqrt().max(1.0);
    assert_close(what, got, want, 1e-6, k);
}

#[test]
fn rmsnorm_gated_reference_matches_hand_computation() {
    // silu(ln 3) = ln 3 · sigmoid(ln 3) = 0.75 ln 3.
    let l3 = 3f32.ln();
    let close = |g: &[f32], w: &[f32]| {
        g.iter()
            .zip(w)
            .all(|(g, w)| (g - w).abs() <= 1e-6 * w.abs().max(1.0))
    };
    let mut params = RmsnormGatedParams {
        rows: 1,
        cols: 2,
        group: 2,
        eps: 0.0,
        z_offset: 1,
        z_stride: 3,
        norm_before_gate: 0,
        ..Default::default()
    };
    let y = [1.0, 2.0];
    let z = [f32::NAN, l3, l3];
    let w = [1.0, 2.0];
    // Gate first: v = (0.75, 1.5)·ln 3, mean v² = 1.40625 ln²3, out = v / rms · w.
    let rms = 1.40625f32.sqrt();
    let out = rmsnorm_gated(&params, &y, &z, &w);
    assert!(close(&out, &[0.75 / rms, 2.0 * 1.5 / rms]), "{out:?}");
    // Norm first: mean y² = 2.5, out = y / sqrt(2.5) · w · 0.75 ln 3.
    params.norm_before_gate = 1;
    let out = rmsnorm_gated(&params, &y, &z, &w);
    let k = 0.75 * l3 / 2.5f32.sqrt();
    assert!(close(&out, &[k, 4.0 * k]), "{out:?}");
    // Groups of one with eps 0 normalise each element to its sign: sign(y)·w·silu(z) or
    // sign(y·silu(z))·w. Two rows; z = (ln 3, -ln 3) with silu(-ln 3) = -0.25 ln 3.
    params.group = 1;
    params.rows = 2;
    params.z_offset = 0;
    params.z_stride = 2;
    let y = [1.0, 2.0, -3.0, 0.5];
    let z = [l3, -l3, l3, l3];
    let out = rmsnorm_gated(&params, &y, &z, &w);
    let s = 0.75 * l3;
    assert!(close(&out, &[s, 2.0 * -s / 3.0, -s, 2.0 * s]), "{out:?}");
    params.norm_before_gate = 0;
    let out = rmsnorm_gated(&params, &y, &z, &w);
    assert!(close(&out, &[1.0, -2.0, -1.0, 2.0]), "{out:?}");
}

#[test]
fn rmsnorm_gated_matches_reference_on_shapes() {
    for &rows in &[1, 5, 37] {
        for &group in &[1, 7, 12, 64, 255, 256, 257, 1536] {
            for &ngroups in &[1, 2, 3] {
                if rows * group * ngroups > 100_000 {
                    continue;
                }
                check_gated(rows, group, ngroups, false);
                check_gated(rows, group, ngroups, true);
            }
        }
    }
}

#[test]
fn rmsnorm_gated_folds_past_65535_workgroups() {
    // 16,385 rows × 4 groups = 65,540 workgroups.
    let params = RmsnormGatedParams {
        rows: 16_385,
        cols: 12,
        group: 3,
        ..Default::default()
    };
    assert!(RmsnormGated::workgroups(&params)[1] > 1);
    check_gated(16_385, 3, 4, false);
    let bad = RmsnormGatedParams { group: 5, ..params };
    assert!(check_norm_params(&bad).is_err());
}

/// Runs all of the problem's steps as one prompt through ssd_scan_seq (rows b·len + t, the
/// prefill layout) and compares every token's y and the final state with the twin stepped
/// token by token, and with the f64 recurrence when `f64_check`; then again with the gate
/// on, against the twin's y times silu(z) for z in the in_proj rows' first d_inner columns.
fn check_seq(what: &str, pr: &Problem, f64_check: bool) {
    let ctx = ctx();
    let step = pr.params();
    let batch = pr.s.batch;
    let len = pr.steps;
    let (cw, iw, ys) = (pr.s.conv_width(), pr.s.in_proj_width(), pr.y_stride);
    let heads = pr.heads();
    // The prompt's rows, and the twin's y laid out the same way.
    let mut xbc = vec![f32::NAN; batch * len * cw];
    let mut in_proj = vec![f32::NAN; batch * len * iw];
    let mut want_y = vec![Y_PAD; batch * len * ys];
    let mut want_state = pr.state0.clone();
    for t in 0..len {
        let (x_t, dt_t) = pr.pack(t);
        let mut y_t = vec![Y_PAD; batch * ys];
        ssd_state_update(&step, &x_t, &dt_t, &heads, &mut want_state, &mut y_t);
        for b in 0..batch {
            let r = b * len + t;
            xbc[r * cw..][..cw].copy_from_slice(&x_t[b * cw..][..cw]);
            in_proj[r * iw..][..iw].copy_from_slice(&dt_t[b * iw..][..iw]);
            want_y[r * ys..][..ys].copy_from_slice(&y_t[b * ys..][..ys]);
        }
    }
    let params = SsdScanSeqParams {
        batch: step.batch,
        len: len as u32,
        nheads: step.nheads,
        head_dim: step.head_dim,
        d_state: step.d_state,
        ngroups: step.ngroups,
        x_offset: step.x_offset,
        x_stride: step.x_stride,
        b_offset: step.b_offset,
        c_offset: step.c_offset,
        dt_offset: step.dt_offset,
        dt_stride: step.dt_stride,
        y_stride: step.y_stride,
        dt_min: step.dt_min,
        dt_max: step.dt_max,
        ..Default::default()
    };
    check_seq_params(&params).unwrap();
    let (xbc_b, dt_b, heads_b) = (upload(&xbc), upload(&in_proj), upload(&heads));
    // The gated run: z (from -6 to 6, both tails of silu) in columns 0..d_inner of the
    // in_proj rows, which the ungated run must not read (they are NaN there).
    let d_inner = pr.s.d_inner();
    let z = rand_vec(400 + pr.s.h as u64, batch * len * d_inner, -6.0, 6.0);
    let mut gated_in = in_proj.clone();
    let mut want_gated = want_y.clone();
    for r in 0..batch * len {
        gated_in[r * iw..][..d_inner].copy_from_slice(&z[r * d_inner..][..d_inner]);
        for c in 0..d_inner {
            want_gated[r * ys + c] *= silu(z[r * d_inner + c]);
        }
    }
    let gated_b = upload(&gated_in);
    let gated = SsdScanSeqParams {
        gate: 1,
        z_offset: 0,
        ..params
    };
    let lanes = if ctx.features().subgroup {
        vec![false, true]
    } else {
        vec![false]
    };
    // Every lane header with both paths: the walk, and the step (the decode kernel, which
    // takes any number of tokens).
    let variants = lanes.iter().flat_map(|&sg| [(sg, false), (sg, true)]);
    for (subgroup, step) in variants {
        let what = format!("{what} (subgroup {subgroup}, step {step})");
        let kernel = SsdScanSeq::variant(ctx, subgroup, step).unwrap();
        // One dispatch from the initial state: (y, final state).
        let walk = |params: &SsdScanSeqParams, dt_raw: &wgpu::Buffer| {
            let state_b = upload(&pr.state0);
            let y_b = upload(&vec![Y_PAD; want_y.len()]);
            let d = kernel.bind(
                ctx,
                params,
                SsdScanSeqBuffers {
                    xbc: &xbc_b,
                    dt_raw,
                    heads: &heads_b,
                    state: &state_b,
                    y: &y_b,
                },
            );
            run(ctx, &[&d]).unwrap();
            (y_b, state_b)
        };
        let (y_b, state_b) = walk(&params, &dt_b);
        check_seq_out(&what, pr, &y_b, &state_b, &want_y, &want_state, f64_check);
        let (y_b, state_b) = walk(&gated, &gated_b);
        let what = format!("{what}, gated");
        check_seq_out(&what, pr, &y_b, &state_b, &want_gated, &want_state, false);
    }
}

#[allow(clippy::too_many_arguments)]
fn check_seq_out(
    what: &str,
    pr: &Problem,
    y_b: &wgpu::Buffer,
    state_b: &wgpu::Buffer,
    want_y: &[f32],
    want_state: &[f32],
    f64_check: bool,
) {
    let Shape { batch, h, p, n, .. } = pr.s;
    let (len, ys) = (pr.steps, pr.y_stride);
    let got_y = read::<f32>(y_b, want_y.len());
    assert_ssd_close(&format!("{what}: seq y"), &got_y, want_y, n);
    let got_state = read::<f32>(state_b, want_state.len());
    assert_ssd_close(&format!("{what}: seq state"), &got_state, want_state, 1);
    if f64_check {
        let (ys64, st64) = pr.sequential_f64();
        let d_inner = h * p;
        for (t, y64) in ys64.iter().enumerate() {
            let got: Vec<f32> = (0..batch)
                .flat_map(|b| got_y[(b * len + t) * ys..][..d_inner].to_vec())
                .collect();
            let want: Vec<f32> = y64.iter().map(|&v| v as f32).collect();
            assert_ssd_close(&format!("{what}: seq y {t} vs f64"), &got, &want, n);
        }
        let want: Vec<f32> = st64.iter().map(|&v| v as f32).collect();
        assert_ssd_close(&format!("{what}: seq state vs f64"), &got_state, &want, 1);
    }
}

#[test]
fn ssd_scan_seq_walks_prompts_like_the_steps() {
    // mamba2-130m's heads, groups, P around the 64-channel tile (63, 64, 65), N of 4 (one
    // vec4), 12 and 36 (not a multiple of the 8 vec4s the lanes share) and the 256 maximum;
    // prompts of 1, 2, 5 and 9 tokens, each through the walk and the step. Widths are
    // multiples of 4, as the kernel requires.
    for (i, &(s, len)) in [
        (shape(1, 24, 1, 64, 128), 5),
        (shape(3, 6, 2, 12, 32), 9),
        (shape(2, 12, 3, 8, 40), 2),
        (shape(2, 4, 1, 65, 12), 5),
        (shape(1, 4, 2, 63, 36), 1),
        (shape(1, 4, 1, 1, 4), 9),
        (shape(2, 2, 2, 16, 256), 2),
        // One token (what the step decodes): several sequences, P past the tile, N not a
        // multiple of the 8 shared vec4s, the maximum N.
        (shape(3, 6, 2, 12, 32), 1),
        (shape(2, 4, 1, 65, 12), 1),
        (shape(1, 24, 1, 64, 128), 1),
        (shape(2, 2, 2, 16, 256), 1),
    ]
    .iter()
    .enumerate()
    {
        let pr = Problem::new(
            300 + i as u64,
            s,
            len,
            Regime::Mixed,
            1e-3,
            2.0,
            i % 2,
            i % 3 == 0,
        );
        check_seq(&format!("seq {len} tokens {s:?}"), &pr, true);
    }
    // Every dt regime, clamps that bind.
    for (i, regime) in [Regime::Negative, Regime::NearZero, Regime::Large]
        .into_iter()
        .enumerate()
    {
        let pr = Problem::new(
            320 + i as u64,
            shape(3, 6, 2, 12, 32),
            4,
            regime,
            0.0,
            f32::INFINITY,
            1,
            false,
        );
        check_seq(&format!("seq {regime:?}"), &pr, true);
    }
    let pr = Problem::new(
        330,
        shape(1, 24, 1, 64, 128),
        3,
        Regime::Mixed,
        0.05,
        0.5,
        0,
        false,
    );
    check_seq("seq clamped", &pr, true);
}

#[test]
fn ssd_scan_seq_checks_params() {
    let ok = SsdScanSeqParams {
        batch: 1,
        len: 4,
        nheads: 4,
        head_dim: 8,
        d_state: 16,
        ngroups: 2,
        ..Default::default()
    };
    assert!(check_seq_params(&ok).is_ok());
    for bad in [
        SsdScanSeqParams { d_state: 257, ..ok },
        SsdScanSeqParams { ngroups: 3, ..ok },
        SsdScanSeqParams { head_dim: 0, ..ok },
        // B, C or the state off vec4 boundaries.
        SsdScanSeqParams { d_state: 18, ..ok },
        SsdScanSeqParams { x_stride: 42, ..ok },
        SsdScanSeqParams { b_offset: 2, ..ok },
        SsdScanSeqParams { c_offset: 7, ..ok },
        // More sequences than one grid dimension holds.
        SsdScanSeqParams {
            batch: 65_536,
            ..ok
        },
    ] {
        assert!(check_seq_params(&bad).is_err(), "{bad:?}");
    }
    assert_eq!(
        SsdScanSeq::workgroups(&SsdScanSeqParams { len: 0, ..ok })[0],
        0
    );
}
