//! selective_scan and selective_state_update against `reference::selective_scan::selective_scan`.
//!
//! Tolerance (all comparisons): |got − want| ≤ 1e-5·scale + 1e-4·|want|, scale = the largest
//! |want| of the tensor compared. The parallel scan multiplies the exp(Δ·A) factors in tree
//! order rather than one by one (relative error of each h term ~ (4 + log2(32))·eps_f32 within
//! a 128-token chunk, plus the sequential carry's own ~len·eps_f32 that the twin shares), the
//! GPU's exp may differ from libm's by a few ulp per factor, and y sums up to N products C·h in
//! another order (lanes of 8, then across lanes), so y can cancel to far below its terms: hence
//! an absolute part relative to the tensor's magnitude. Observed on lavapipe: worst error
//! ≤ 4e-6·scale (N = 256) and ≤ 1e-6·scale (N ≤ 17), a tenth of the tolerance or less.

use mamba_wgpu::kernels::run;
use mamba_wgpu::kernels::selective_scan::{
    check_params, pack_ssm, SelectiveScan, SelectiveScanBuffers, SelectiveScanParams, MAX_D_STATE,
};
use mamba_wgpu::kernels::selective_state_update::{ssm_texture, SelectiveStateUpdate};
use mamba_wgpu::reference::selective_scan::{selective_scan, silu, softplus, SelectiveScanInputs};

use crate::common::*;

const GATE: u32 = 1;
const SKIP: u32 = 2;

/// The model's tensors, dense and logical: dt, x, z `[batch, total_len, d_inner]`;
/// B, C `[batch, total_len, n]`; ssm packed as the kernels read it; the initial state.
struct Problem {
    batch: usize,
    total_len: usize,
    d_inner: usize,
    n: usize,
    dt: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    x: Vec<f32>,
    z: Vec<f32>,
    ssm: Vec<f32>,
    state0: Vec<f32>,
}

impl Problem {
    fn new(
        seed: u64,
        batch: usize,
        total_len: usize,
        d_inner: usize,
        n: usize,
        init: bool,
    ) -> Self {
        let rows = batch * total_len;
        let dt_bias = rand_vec(seed + 5, d_inner, -4.0, -1.0);
        // dt + dt_bias mostly in [-7, 0] (Δ from 1e-3 to 0.7, the model's range), with every
        // 13th above 20 (softplus is the identity), every 17th at ~0 and every 19th at -40.
        let mut dt = rand_vec(seed + 1, rows * d_inner, -3.0, 1.0);
        for (i, v) in dt.iter_mut().enumerate() {
            let d = i % d_inner;
            if i % 13 == 5 {
                *v += 25.0;
            } else if i % 17 == 3 {
                *v = -dt_bias[d] + 1e-3 * *v;
            } else if i % 19 == 7 {
                *v = -40.0;
            }
        }
        // A = -exp(A_log): Mamba's init A[d, n] = -(n + 1), scaled down by up to e^-2 so that
        // some channels decay slowly and the carry matters over hundreds of tokens.
        let a_log: Vec<f32> = rand_vec(seed + 2, d_inner * n, -2.0, 0.3)
            .iter()
            .enumerate()
            .map(|(i, u)| ((i % n) as f32 + 1.0).ln() + u)
            .collect();
        let d_skip = rand_vec(seed + 3, d_inner, 0.5, 1.5);
        let ssm = pack_ssm(&a_log, &d_skip, &dt_bias, None);
        let state0 = if init {
            rand_vec(seed + 4, batch * d_inner * n, -1.0, 1.0)
        } else {
            vec![0.0; batch * d_inner * n]
        };
        Self {
            batch,
            total_len,
            d_inner,
            n,
            dt,
            b: rand_vec(seed + 6, rows * n, -1.0, 1.0),
            c: rand_vec(seed + 7, rows * n, -1.0, 1.0),
            x: rand_vec(seed + 8, rows * d_inner, -2.0, 2.0),
            z: rand_vec(seed + 9, rows * d_inner, -4.0, 4.0),
            ssm,
            state0,
        }
    }
}

/// Tokens `t0..t0 + len` of every sequence laid out in buffers as one call sees them.
/// `strided` lays them out the way the model does: dt with an offset and padded rows, B and C
/// after dt_rank = 3 columns of the x_proj output, x and z the two halves of one xz buffer,
/// y rows padded by one. Padding holds NaN, so reading it would poison the result.
struct Packed {
    params: SelectiveScanParams,
    dt: Vec<f32>,
    bc: Vec<f32>,
    x: Vec<f32>,
    /// None: z shares the x buffer (the xz layout).
    z: Option<Vec<f32>>,
    y_len: usize,
}

fn pack(p: &Problem, t0: usize, len: usize, flags: u32, strided: bool) -> Packed {
    let (di, n) = (p.d_inner, p.n);
    let rows = p.batch * len;
    let (dt_offset, dt_stride) = if strided { (2, di + 3) } else { (0, di) };
    let dt_rank = if strided { 3 } else { 0 };
    let bc_stride = dt_rank + 2 * n;
    let (x_stride, z_offset, y_stride) = if strided {
        (2 * di, di, di + 1)
    } else {
        (di, 0, di)
    };
    let mut dt = vec![f32::NAN; dt_offset + rows * dt_stride];
    let mut bc = vec![f32::NAN; rows * bc_stride];
    let mut x = vec![f32::NAN; rows * x_stride];
    let mut z = vec![f32::NAN; rows * di];
    for b in 0..p.batch {
        for t in 0..len {
            let r = b * len + t; // the call's row
            let src = b * p.total_len + t0 + t; // the logical row
            for d in 0..di {
                dt[dt_offset + r * dt_stride + d] = p.dt[src * di + d];
                x[r * x_stride + d] = p.x[src * di + d];
                if strided {
                    x[r * x_stride + z_offset + d] = p.z[src * di + d];
                } else {
                    z[r * di + d] = p.z[src * di + d];
                }
            }
            for k in 0..n {
                bc[r * bc_stride + dt_rank + k] = p.b[src * n + k];
                bc[r * bc_stride + dt_rank + n + k] = p.c[src * n + k];
            }
        }
    }
    let params = SelectiveScanParams {
        batch: p.batch as u32,
        len: len as u32,
        d_inner: di as u32,
        d_state: n as u32,
        dt_offset: dt_offset as u32,
        dt_stride: dt_stride as u32,
        bc_offset: dt_rank as u32,
        bc_stride: bc_stride as u32,
        x_offset: 0,
        x_stride: x_stride as u32,
        z_offset: z_offset as u32,
        z_stride: x_stride as u32,
        y_stride: y_stride as u32,
        flags,
        ..Default::default()
    };
    Packed {
        params,
        dt,
        bc,
        x,
        z: (!strided).then_some(z),
        y_len: rows * y_stride,
    }
}

/// The twin on a packed call: returns y (padding 0, as the GPU's zeroed buffer) and updates
/// `state`.
fn twin(p: &Problem, k: &Packed, state: &mut [f32]) -> Vec<f32> {
    let mut y = vec![0.0; k.y_len];
    let inp = SelectiveScanInputs {
        dt: &k.dt,
        bc: &k.bc,
        x: &k.x,
        z: k.z.as_deref().unwrap_or(&k.x),
        ssm: &p.ssm,
    };
    selective_scan(&k.params, inp, state, &mut y);
    y
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kernel {
    Scan,
    /// selective_state_update as the device picks it (subgroup lanes sharing loads where it
    /// has subgroups).
    Update,
    /// selective_state_update with every lane loading for itself.
    UpdatePlain,
    /// [`Kernel::Update`] reading the packed constants from a texture (CPU adapters' pick).
    UpdateTex,
    /// [`Kernel::UpdatePlain`] reading the packed constants from a texture.
    UpdatePlainTex,
}

/// The four state-update variants (lanes sharing or not, constants in a buffer or a texture).
const UPDATES: [Kernel; 4] = [
    Kernel::Update,
    Kernel::UpdatePlain,
    Kernel::UpdateTex,
    Kernel::UpdatePlainTex,
];

/// The constants' texture for the texture variants (every test shape fits lavapipe's limit).
fn ssm_tex(ssm: &[f32]) -> wgpu::TextureView {
    ssm_texture(ctx(), "ssm", ssm)
        .unwrap()
        .expect("the constants fit a texture")
}

/// One GPU call on a packed input against the state buffer `state`; returns y.
fn gpu(kernel: Kernel, p: &Problem, k: &Packed, state: &wgpu::Buffer) -> Vec<f32> {
    let ctx = ctx();
    check_params(&k.params).unwrap();
    let (dt, bc, x, ssm, y) = (
        upload(&k.dt),
        upload(&k.bc),
        upload(&k.x),
        upload(&p.ssm),
        zeros(k.y_len),
    );
    let z = k.z.as_ref().map(|z| upload(z));
    let b = SelectiveScanBuffers {
        dt: &dt,
        bc: &bc,
        x: &x,
        // Two read-only bindings of one buffer, as the model binds xz.
        z: z.as_ref().unwrap_or(&x),
        ssm: &ssm,
        state,
        y: &y,
    };
    let tex = ssm_tex(&p.ssm);
    let d = match kernel {
        Kernel::Scan => SelectiveScan::new(ctx).unwrap().bind(ctx, &k.params, b),
        Kernel::Update => SelectiveStateUpdate::new(ctx)
            .unwrap()
            .bind(ctx, &k.params, b, None),
        Kernel::UpdatePlain => SelectiveStateUpdate::variant(ctx, false)
            .unwrap()
            .bind(ctx, &k.params, b, None),
        Kernel::UpdateTex => {
            SelectiveStateUpdate::new_ssm_texture(ctx)
                .unwrap()
                .bind(ctx, &k.params, b, Some(&tex))
        }
        Kernel::UpdatePlainTex => SelectiveStateUpdate::variant_ssm_texture(ctx, false)
            .unwrap()
            .bind(ctx, &k.params, b, Some(&tex)),
    };
    run(ctx, &[&d]).unwrap();
    read::<f32>(&y, k.y_len)
}

/// See the module docs for the tolerance.
fn assert_scan_close(what: &str, got: &[f32], want: &[f32]) {
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert_close(what, got, want, 1e-5 * scale, 1e-4);
}

fn check_scan(
    batch: usize,
    len: usize,
    d_inner: usize,
    n: usize,
    flags: u32,
    strided: bool,
    init: bool,
) {
    check_scan_with(Kernel::Scan, batch, len, d_inner, n, flags, strided, init)
}

#[allow(clippy::too_many_arguments)]
fn check_scan_with(
    kernel: Kernel,
    batch: usize,
    len: usize,
    d_inner: usize,
    n: usize,
    flags: u32,
    strided: bool,
    init: bool,
) {
    let what = format!(
        "{kernel:?} batch {batch} len {len} d_inner {d_inner} d_state {n} flags {flags} strided {strided} init {init}"
    );
    let p = Problem::new(len as u64 * 31 + n as u64, batch, len, d_inner, n, init);
    let k = pack(&p, 0, len, flags, strided);
    let mut want_state = p.state0.clone();
    let want_y = twin(&p, &k, &mut want_state);
    let state = upload(&p.state0);
    let got_y = gpu(kernel, &p, &k, &state);
    assert_scan_close(&format!("{what}: y"), &got_y, &want_y);
    let got_state = read::<f32>(&state, want_state.len());
    assert_scan_close(&format!("{what}: state"), &got_state, &want_state);
}

#[test]
fn selective_scan_reference_matches_hand_computation() {
    // softplus regimes: torch's threshold, log1p near 0 and far below.
    assert_eq!(softplus(21.0), 21.0);
    assert!((softplus(0.0) - std::f32::consts::LN_2).abs() < 1e-7);
    assert!((softplus(-30.0) / (-30.0f32).exp() - 1.0).abs() < 1e-6);
    assert!((silu(1.0) - 0.731_058_6).abs() < 1e-6);

    // batch 1, len 2, d_inner 1, N 1, flags 3: A_log 0 (A = -1), D 0.5, dt_bias 0.
    // t0: Δ = ln 2, h = e^{-ln 2}·1 + ln2·1·1 = 0.5 + ln 2, y = (2h + 0.5·1)·silu(1).
    // t1: Δ = 25 (dt > 20), h = e^{-25}·h0 + 25·0.5·2, y = (1·h + 0.5·2)·silu(2).
    let params = SelectiveScanParams {
        batch: 1,
        len: 2,
        d_inner: 1,
        d_state: 1,
        dt_stride: 1,
        bc_stride: 2,
        x_stride: 1,
        z_stride: 1,
        y_stride: 1,
        flags: GATE | SKIP,
        ..Default::default()
    };
    let inp = SelectiveScanInputs {
        dt: &[0.0, 25.0],
        bc: &[1.0, 2.0, 0.5, 1.0],
        x: &[1.0, 2.0],
        z: &[1.0, 2.0],
        ssm: &[0.0, 0.5, 0.0],
    };
    let mut state = [1.0f32];
    let mut y = [0.0f32; 2];
    selective_scan(&params, inp, &mut state, &mut y);
    let ln2 = std::f64::consts::LN_2;
    let silu64 = |v: f64| v / (1.0 + (-v).exp());
    let h0 = 0.5 + ln2;
    let h1 = (-25.0f64).exp() * h0 + 25.0;
    let want = [(2.0 * h0 + 0.5) * silu64(1.0), (h1 + 1.0) * silu64(2.0)];
    for (g, w) in y.iter().zip(want) {
        assert!((*g as f64 - w).abs() < 1e-5 * w.abs(), "y {g} want {w}");
    }
    assert!(
        (state[0] as f64 - h1).abs() < 1e-5 * h1,
        "state {}",
        state[0]
    );
}

#[test]
fn selective_scan_matches_reference_on_awkward_shapes() {
    // Lengths: 1, around the 4 tokens of an invocation (2, 3, 5), around 32 tokens, within
    // the 128-token chunk, chunk-1/chunk/chunk+1, several chunks plus a remainder. Each length
    // meets every d_state (1, one block of 8 lanes, 1.5 blocks, 2 blocks, 2 blocks + 1);
    // d_inner, batch, flags, layout and initial state rotate over the cases.
    let mut i = 0usize;
    for &len in &[1, 2, 3, 5, 31, 32, 33, 37, 70, 127, 128, 129, 150, 257, 300] {
        for &n in &[1, 8, 12, 16, 17] {
            let d_inner = [1, 5, 72][i % 3];
            let batch = [1, 3][(i / 3) % 2];
            let flags = (i % 4) as u32;
            let strided = i.is_multiple_of(2);
            let init = (i / 2).is_multiple_of(2);
            check_scan(batch, len, d_inner, n, flags, strided, init);
            i += 1;
        }
    }
}

#[test]
fn sequential_state_update_walks_prompts_like_the_scan() {
    // selective_state_update over whole prompts (the prefill path on CPU adapters): lengths
    // from 1 to several hundred, N in registers (1, 3, 4, 5, 8, 12, 16: partial and whole
    // vec4 blocks) and in the buffer (17, 32), d_inner around its 64-invocation workgroup.
    let mut i = 0usize;
    for &len in &[1, 2, 5, 33, 128, 129, 300] {
        for &n in &[1, 3, 4, 5, 8, 12, 16, 17, 32] {
            let d_inner = [1, 5, 63, 65, 72][i % 5];
            let batch = [1, 3][(i / 5) % 2];
            let flags = (i % 4) as u32;
            let strided = i.is_multiple_of(2);
            let init = (i / 2).is_multiple_of(2);
            for kernel in UPDATES {
                check_scan_with(kernel, batch, len, d_inner, n, flags, strided, init);
            }
            i += 1;
        }
    }
}

#[test]
fn selective_scan_handles_max_d_state() {
    check_scan(2, 40, 3, MAX_D_STATE as usize, GATE | SKIP, true, true);
    let too_big = SelectiveScanParams {
        d_state: MAX_D_STATE + 1,
        ..Default::default()
    };
    assert!(check_params(&too_big).is_err());
}

/// Prefill L1 then L2 continuing from the state equals one prefill of L1 + L2, outputs and
/// final state, on the GPU and against the twin.
#[test]
fn selective_scan_continues_from_state() {
    for &(batch, l1, l2, d_inner, n, strided) in &[
        (1, 1, 31, 5, 16, false),
        (3, 32, 5, 5, 17, true),
        (3, 37, 70, 72, 16, true),
        (2, 100, 33, 7, 12, false),
        (2, 128, 131, 3, 16, true),
        (1, 129, 1, 2, 8, false),
    ] {
        let what = format!("split {l1}+{l2} batch {batch} d_inner {d_inner} d_state {n}");
        let flags = GATE | SKIP;
        let p = Problem::new(l1 as u64 + 7 * l2 as u64, batch, l1 + l2, d_inner, n, true);
        let whole = pack(&p, 0, l1 + l2, flags, strided);
        let mut want_state = p.state0.clone();
        let want_whole = twin(&p, &whole, &mut want_state);
        let state_whole = upload(&p.state0);
        let y_whole = gpu(Kernel::Scan, &p, &whole, &state_whole);
        assert_scan_close(&format!("{what}: whole y"), &y_whole, &want_whole);

        let (k1, k2) = (
            pack(&p, 0, l1, flags, strided),
            pack(&p, l1, l2, flags, strided),
        );
        let state = upload(&p.state0);
        let y1 = gpu(Kernel::Scan, &p, &k1, &state);
        let y2 = gpu(Kernel::Scan, &p, &k2, &state);
        // Reassemble the two calls' rows in the one call's order.
        let ys = whole.params.y_stride as usize;
        let mut y_split = vec![0.0; whole.y_len];
        for b in 0..batch {
            for (t, src) in (0..l1)
                .map(|t| &y1[(b * l1 + t) * ys..][..ys])
                .chain((0..l2).map(|t| &y2[(b * l2 + t) * ys..][..ys]))
                .enumerate()
            {
                y_split[(b * (l1 + l2) + t) * ys..][..ys].copy_from_slice(src);
            }
        }
        assert_scan_close(&format!("{what}: split y vs one call"), &y_split, &y_whole);
        assert_scan_close(&format!("{what}: split y vs twin"), &y_split, &want_whole);
        let got_split = read::<f32>(&state, want_state.len());
        let got_whole = read::<f32>(&state_whole, want_state.len());
        assert_scan_close(&format!("{what}: split state"), &got_split, &got_whole);
        assert_scan_close(
            &format!("{what}: split state vs twin"),
            &got_split,
            &want_state,
        );
    }
}

/// Decode steps (len 1) after a prefill equal a longer prefill; a step equals a scan of len 1.
#[test]
fn selective_state_update_continues_a_scan() {
    for &(batch, l1, steps, d_inner, n, flags, strided) in &[
        (1, 33, 4, 5, 16, GATE | SKIP, true),
        (3, 7, 5, 72, 17, SKIP, false),
        (2, 1, 3, 65, 8, GATE, true),
    ] {
        let what =
            format!("prefill {l1} + {steps} steps batch {batch} d_inner {d_inner} d_state {n}");
        let p = Problem::new(
            l1 as u64 * 3 + n as u64,
            batch,
            l1 + steps,
            d_inner,
            n,
            true,
        );
        let whole = pack(&p, 0, l1 + steps, flags, strided);
        let mut want_state = p.state0.clone();
        let want = twin(&p, &whole, &mut want_state);
        let ys = whole.params.y_stride as usize;

        let state = upload(&p.state0);
        let scan_state = upload(&p.state0);
        let y1 = gpu(Kernel::Scan, &p, &pack(&p, 0, l1, flags, strided), &state);
        let _ = gpu(
            Kernel::Scan,
            &p,
            &pack(&p, 0, l1, flags, strided),
            &scan_state,
        );
        let mut got = vec![0.0; whole.y_len];
        for b in 0..batch {
            for t in 0..l1 {
                got[(b * (l1 + steps) + t) * ys..][..ys]
                    .copy_from_slice(&y1[(b * l1 + t) * ys..][..ys]);
            }
        }
        for s in 0..steps {
            let k = pack(&p, l1 + s, 1, flags, strided);
            let y_step = gpu(Kernel::Update, &p, &k, &state);
            // The same token through the scan kernel with len 1.
            let y_scan = gpu(Kernel::Scan, &p, &k, &scan_state);
            assert_scan_close(
                &format!("{what}: step {s} update vs scan"),
                &y_step,
                &y_scan,
            );
            for b in 0..batch {
                got[(b * (l1 + steps) + l1 + s) * ys..][..ys]
                    .copy_from_slice(&y_step[b * ys..][..ys]);
            }
        }
        assert_scan_close(&format!("{what}: y"), &got, &want);
        let got_state = read::<f32>(&state, want_state.len());
        assert_scan_close(&format!("{what}: state"), &got_state, &want_state);
        let got_scan_state = read::<f32>(&scan_state, want_state.len());
        assert_scan_close(
            &format!("{what}: state update vs scan"),
            &got_state,
            &got_scan_state,
        );
    }
}

#[test]
fn selective_state_update_matches_reference_on_awkward_shapes() {
    // d_inner around the 64-invocation workgroup; len 3 exercises the sequential fallback.
    let mut i = 0usize;
    for &d_inner in &[1, 5, 63, 64, 65, 72, 200] {
        for &n in &[1, 8, 12, 17] {
            let batch = [1, 3][i % 2];
            let flags = (i % 4) as u32;
            let strided = (i / 2).is_multiple_of(2);
            let len = if i % 5 == 4 { 3 } else { 1 };
            let what = format!(
                "update batch {batch} len {len} d_inner {d_inner} d_state {n} flags {flags} strided {strided}"
            );
            let p = Problem::new(i as u64 + 100, batch, len, d_inner, n, true);
            let k = pack(&p, 0, len, flags, strided);
            let mut want_state = p.state0.clone();
            let want_y = twin(&p, &k, &mut want_state);
            for kernel in UPDATES {
                let state = upload(&p.state0);
                let got_y = gpu(kernel, &p, &k, &state);
                assert_scan_close(&format!("{what} {kernel:?}: y"), &got_y, &want_y);
                let got_state = read::<f32>(&state, want_state.len());
                assert_scan_close(
                    &format!("{what} {kernel:?}: state"),
                    &got_state,
                    &want_state,
                );
            }
            i += 1;
        }
    }
}

/// More than 65,535 workgroups: the dispatch folds into (x, y) and the shaders recover the
/// linear index; the groups past the real count (the fold rounds up) must write nothing.
#[test]
fn selective_scan_kernels_fold_many_workgroups() {
    // Scan: one workgroup per channel, 65,537 channels. Update: one workgroup per sequence
    // (d_inner 1), 65,537 sequences.
    for (kernel, batch, d_inner) in [(Kernel::Scan, 1, 65_537), (Kernel::Update, 65_537, 1)] {
        let p = Problem::new(11, batch, 1, d_inner, 1, true);
        let k = pack(&p, 0, 1, GATE | SKIP, false);
        let mut want_state = p.state0.clone();
        let want_y = twin(&p, &k, &mut want_state);
        let state = upload(&p.state0);
        let got_y = gpu(kernel, &p, &k, &state);
        assert_scan_close("fold y", &got_y, &want_y);
        let got_state = read::<f32>(&state, want_state.len());
        assert_scan_close("fold state", &got_state, &want_state);
    }
}

/// selective_state_update with dt_proj applied in the kernel (`dt_rank > 0`, the decode
/// step's form): dt_proj's input sits in the first `rank` columns of the bc rows (as x_proj
/// writes them) and its weight after dt_bias in `ssm` (`pack_ssm`'s padded rows). Checked against the twin
/// on the same call, and the twin's fused path against its plain one fed `W·dt_in` computed
/// here in f64, so a shared mistake in the fused addressing would show.
#[test]
fn selective_state_update_applies_dt_proj() {
    let mut i = 0u64;
    for &(batch, len, d_inner, n, rank) in &[
        (1, 1, 1, 1, 1),
        (1, 1, 65, 16, 48),
        (3, 1, 72, 17, 5),
        (2, 3, 63, 8, 7),
        (1, 1, 200, 12, 160),
    ] {
        i += 1;
        let what = format!("batch {batch} len {len} d_inner {d_inner} d_state {n} rank {rank}");
        let p = Problem::new(500 + i, batch, len, d_inner, n, true);
        let rows = batch * len;
        // W ~ U(-0.5, 0.5)/sqrt(rank)-ish and dt_in ~ U(-1, 1): W·dt_in spans a few units,
        // around dt_bias's [-4, -1], so softplus sees both of its regimes.
        let w = rand_vec(600 + i, d_inner * rank, -1.5, 1.5);
        let dt_in = rand_vec(700 + i, rows * rank, -1.0, 1.0);
        // The same constants with W's rows appended (zero-padded to whole vec4s).
        let (a_log, rest) = p.ssm.split_at(d_inner * n);
        let (d_skip, rest) = rest.split_at(d_inner);
        let ssm = pack_ssm(a_log, d_skip, &rest[..d_inner], Some((&w, rank)));

        // bc rows: [dt_in (rank) | B (n) | C (n)], as x_proj's output.
        let stride = rank + 2 * n;
        let mut bc = vec![f32::NAN; rows * stride];
        for r in 0..rows {
            bc[r * stride..][..rank].copy_from_slice(&dt_in[r * rank..][..rank]);
            bc[r * stride + rank..][..n].copy_from_slice(&p.b[r * n..][..n]);
            bc[r * stride + rank + n..][..n].copy_from_slice(&p.c[r * n..][..n]);
        }
        let params = SelectiveScanParams {
            batch: batch as u32,
            len: len as u32,
            d_inner: d_inner as u32,
            d_state: n as u32,
            dt_offset: 0,
            dt_stride: stride as u32,
            dt_rank: rank as u32,
            bc_offset: rank as u32,
            bc_stride: stride as u32,
            x_offset: 0,
            x_stride: d_inner as u32,
            z_offset: 0,
            z_stride: d_inner as u32,
            y_stride: d_inner as u32,
            flags: GATE | SKIP,
            ..Default::default()
        };
        let inp = SelectiveScanInputs {
            dt: &bc,
            bc: &bc,
            x: &p.x,
            z: &p.z,
            ssm: &ssm,
        };
        let mut want_state = p.state0.clone();
        let mut want_y = vec![0.0; rows * d_inner];
        selective_scan(&params, inp, &mut want_state, &mut want_y);

        // The plain path on dt = W·dt_in.
        let dt: Vec<f32> = (0..rows * d_inner)
            .map(|k| {
                let (r, d) = (k / d_inner, k % d_inner);
                (0..rank)
                    .map(|j| w[d * rank + j] as f64 * dt_in[r * rank + j] as f64)
                    .sum::<f64>() as f32
            })
            .collect();
        let plain = SelectiveScanParams {
            dt_stride: d_inner as u32,
            dt_rank: 0,
            ..params
        };
        let mut plain_state = p.state0.clone();
        let mut plain_y = vec![0.0; rows * d_inner];
        let inp_plain = SelectiveScanInputs { dt: &dt, ..inp };
        selective_scan(&plain, inp_plain, &mut plain_state, &mut plain_y);
        assert_scan_close(&format!("{what}: twin fused vs plain y"), &want_y, &plain_y);
        assert_scan_close(
            &format!("{what}: twin fused vs plain state"),
            &want_state,
            &plain_state,
        );

        let ctx = ctx();
        let (bc_buf, x, z, ssm_buf) = (upload(&bc), upload(&p.x), upload(&p.z), upload(&ssm));
        let tex = ssm_tex(&ssm);
        for (subgroup, texture) in [false, ctx.features().subgroup]
            .into_iter()
            .flat_map(|s| [(s, false), (s, true)])
        {
            let state = upload(&p.state0);
            let y = zeros(rows * d_inner);
            let bufs = SelectiveScanBuffers {
                dt: &bc_buf,
                bc: &bc_buf,
                x: &x,
                z: &z,
                ssm: &ssm_buf,
                state: &state,
                y: &y,
            };
            let d = if texture {
                SelectiveStateUpdate::variant_ssm_texture(ctx, subgroup)
                    .unwrap()
                    .bind(ctx, &params, bufs, Some(&tex))
            } else {
                SelectiveStateUpdate::variant(ctx, subgroup)
                    .unwrap()
                    .bind(ctx, &params, bufs, None)
            };
            run(ctx, &[&d]).unwrap();
            assert_scan_close(
                &format!("{what} subgroup {subgroup} texture {texture}: y"),
                &read::<f32>(&y, rows * d_inner),
                &want_y,
            );
            assert_scan_close(
                &format!("{what}: state"),
                &read::<f32>(&state, want_state.len()),
                &want_state,
            );
        }
    }
}

/// The parallel scan takes dt after dt_proj; asking it to apply dt_proj is refused.
#[test]
fn selective_scan_refuses_dt_rank() {
    let p = SelectiveScanParams {
        batch: 1,
        len: 4,
        d_inner: 8,
        d_state: 4,
        dt_rank: 2,
        ..Default::default()
    };
    assert!(check_params(&p).is_ok());
    assert!(matches!(
        mamba_wgpu::kernels::selective_scan::check_parallel(&p),
        Err(mamba_wgpu::Error::InvalidInput(_))
    ));
}
