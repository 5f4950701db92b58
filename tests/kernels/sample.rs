//! sample against `reference::sample`: greedy and seeded sampling must give exactly the twin's
//! tokens (the kernel's weights, random numbers and sums are bit-reproducible by design), the
//! tokens must stay in the top-k/top-p set, and their frequencies must match the plain
//! sort-based `kept_probabilities`.

use mamba_wgpu::kernels::run;
use mamba_wgpu::kernels::sample::{Sample, SampleBuffers, SampleParams, SamplingConfig};
use mamba_wgpu::reference::sample as twin;
use mamba_wgpu::Error;

use crate::common::*;

const SENTINEL: u32 = u32::MAX;

/// Settings as (temperature, top_k, top_p, seed).
fn cfg(temperature: f32, top_k: u32, top_p: f32, seed: u64) -> SamplingConfig {
    SamplingConfig {
        temperature,
        top_k,
        top_p,
        seed,
    }
}

/// GPU buffers for one sampler: logits, step counters and ids (filled with a sentinel so that
/// stray or missing writes show).
struct Gpu {
    logits: wgpu::Buffer,
    steps: wgpu::Buffer,
    out: wgpu::Buffer,
    out_len: usize,
}

impl Gpu {
    fn new(logits: &[f32], steps: &[u32], out_len: usize) -> Self {
        Self {
            logits: upload(logits),
            steps: upload(steps),
            out: upload(&vec![SENTINEL; out_len]),
            out_len,
        }
    }

    /// One dispatch, then the ids and the step counters read back.
    fn call(&self, p: &SampleParams) -> (Vec<u32>, Vec<u32>) {
        let ctx = ctx();
        let k = Sample::new(ctx).unwrap();
        let d = k.bind(
            ctx,
            p,
            SampleBuffers {
                logits: &self.logits,
                steps: &self.steps,
                out: &self.out,
            },
        );
        run(ctx, &[&d]).unwrap();
        (
            read::<u32>(&self.out, self.out_len),
            read::<u32>(&self.steps, p.batch as usize),
        )
    }
}

/// Runs `calls` consecutive dispatches on the GPU and on the twin from the same step counters
/// and requires identical ids after every call and identical counters. Returns each call's ids.
fn check_twin(
    what: &str,
    logits: &[f32],
    p: &SampleParams,
    steps: &[u32],
    out_len: usize,
    calls: usize,
) -> Vec<Vec<u32>> {
    let gpu = Gpu::new(logits, steps, out_len);
    let mut want_steps = steps.to_vec();
    let mut want = vec![SENTINEL; out_len];
    let mut outs = Vec::new();
    for call in 0..calls {
        twin::sample(logits, p, &mut want_steps, &mut want);
        let (got, got_steps) = gpu.call(p);
        assert_eq!(got, want, "{what}: ids of call {call} ({p:?})");
        assert_eq!(got_steps, want_steps, "{what}: steps after call {call}");
        outs.push(got);
    }
    outs
}

/// `batch` different rows of random logits in [-scale, scale), contiguous.
fn rows(seed: u64, batch: usize, vocab: usize, scale: f32) -> Vec<f32> {
    (0..batch)
        .flat_map(|b| rand_vec(seed * 31 + b as u64, vocab, -scale, scale))
        .collect()
}

/// The plain argmax (lowest index among the largest, NaN never wins).
fn naive_argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] || row[best].is_nan() && !v.is_nan() {
            best = i;
        }
    }
    best as u32
}

#[test]
fn sample_twin_is_right_on_hand_computed_cases() {
    // Order keys follow the f32 order; NaN sits with -inf, -0 with +0.
    let ordered = [
        f32::NEG_INFINITY,
        -3.0e38,
        -1.0,
        -1.0e-45,
        0.0,
        1.0e-45,
        1.0,
        3.0e38,
        f32::INFINITY,
    ];
    for w in ordered.windows(2) {
        assert!(twin::order_key(w[0]) < twin::order_key(w[1]), "{w:?}");
    }
    for v in ordered {
        assert_eq!(twin::key_value(twin::order_key(v)), v);
    }
    assert_eq!(twin::order_key(f32::NAN), twin::KEY_NEG_INF);
    assert_eq!(twin::order_key(-f32::NAN), twin::KEY_NEG_INF);
    assert_eq!(twin::order_key(-0.0), twin::order_key(0.0));
    assert_eq!(twin::order_key(f32::INFINITY), twin::KEY_POS_INF);

    // The integer exp2 agrees with f64 to the f32 mantissa's truncation (2^-23 relative).
    for q in (0..125u32 << 20)
        .step_by(9973)
        .chain([0, 1, 0xFFFF, 0x10000, 0xFFFFF])
    {
        let want = (-(q as f64) / 1_048_576.0).exp2();
        let got = twin::exp2_fixed(q) as f64;
        assert!(
            ((got - want) / want).abs() < 1.3e-7,
            "exp2_fixed({q}) = {got}, want {want}"
        );
    }
    assert_eq!(twin::exp2_fixed(0), 1.0);
    assert_eq!(twin::exp2_fixed(1 << 20), 0.5);
    assert_eq!(twin::exp2_fixed(125 << 20), 0.0);
    for (i, &t) in twin::EXP2_SIXTEENTHS.iter().enumerate() {
        assert_eq!(t, (31.0 - i as f64 / 16.0).exp2().round() as u32);
    }
    // ... and the shader holds the same table.
    let src = mamba_wgpu::kernels::sample::INFO.source;
    let start = src
        .find("exp2_sixteenths: array<u32, 16>")
        .expect("table in the shader");
    let table = &src[start..start + src[start..].find(");").unwrap()];
    let shader_table: Vec<u32> = table
        .split("0x")
        .skip(1)
        .map(|h| u32::from_str_radix(&h[..8], 16).unwrap())
        .collect();
    assert_eq!(shader_table, twin::EXP2_SIXTEENTHS);

    // Greedy: lowest index of the largest, NaN as -inf, -0 == +0.
    let nan = f32::NAN;
    let ninf = f32::NEG_INFINITY;
    assert_eq!(twin::greedy(&[1.0, 3.0, 3.0, 2.0]), 1);
    assert_eq!(twin::greedy(&[nan, 0.0, nan, -1.0]), 1);
    assert_eq!(twin::greedy(&[nan, nan]), 0);
    assert_eq!(twin::greedy(&[ninf, ninf, nan]), 0);
    assert_eq!(twin::greedy(&[-1.0, -0.0, 0.0]), 1);

    // p = [0.1, 0.2, 0.3, 0.4] at T = 1.
    let l: Vec<f32> = [0.1f32, 0.2, 0.3, 0.4].iter().map(|p| p.ln()).collect();
    let close = |got: Vec<f32>, want: [f32; 4]| {
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    };
    close(
        twin::kept_probabilities(&l, 1.0, 0, 1.0),
        [0.1, 0.2, 0.3, 0.4],
    );
    close(
        twin::kept_probabilities(&l, 1.0, 4, 1.0),
        [0.1, 0.2, 0.3, 0.4],
    );
    close(
        twin::kept_probabilities(&l, 1.0, 2, 1.0),
        [0.0, 0.0, 3.0 / 7.0, 4.0 / 7.0],
    );
    // top-p keeps the token that crosses the threshold: 0.4 + 0.3 ≥ 0.65.
    close(
        twin::kept_probabilities(&l, 1.0, 0, 0.65),
        [0.0, 0.0, 3.0 / 7.0, 4.0 / 7.0],
    );
    close(
        twin::kept_probabilities(&l, 1.0, 0, 0.75),
        [0.0, 2.0 / 9.0, 3.0 / 9.0, 4.0 / 9.0],
    );
    close(
        twin::kept_probabilities(&l, 1.0, 0, 0.3),
        [0.0, 0.0, 0.0, 1.0],
    );
    // top-p renormalises over the top-k set: 4/7 ≥ 0.5.
    close(
        twin::kept_probabilities(&l, 1.0, 2, 0.5),
        [0.0, 0.0, 0.0, 1.0],
    );
    close(
        twin::kept_probabilities(&l, 0.0, 0, 1.0),
        [0.0, 0.0, 0.0, 1.0],
    );
    // T = 2 takes square roots: ∝ [√.1, √.2, √.3, √.4].
    let s: Vec<f32> = [0.1f32, 0.2, 0.3, 0.4].iter().map(|p| p.sqrt()).collect();
    let z: f32 = s.iter().sum();
    close(
        twin::kept_probabilities(&l, 2.0, 0, 1.0),
        [s[0] / z, s[1] / z, s[2] / z, s[3] / z],
    );
    // Ties at the k-th value are all kept.
    close(
        twin::kept_probabilities(&[1.0, 2.0, 2.0, 0.0], 1.0, 1, 1.0),
        [0.0, 0.5, 0.5, 0.0],
    );

    // The inverse CDF in index order: weights [.25, .5, .75, 1] (relative to the max).
    let p = cfg(1.0, 0, 1.0, 0).params(1, 4);
    for (u, want) in [
        (0.0, 0),
        (0.05, 0),
        (0.15, 1),
        (0.45, 2),
        (0.65, 3),
        (0.999, 3),
    ] {
        assert_eq!(twin::sample_row(&l, &p, u), want, "u = {u}");
    }
    // top_k = 2 keeps [.75, 1]: index 2 below u = 3/7, index 3 above.
    let p = cfg(1.0, 2, 1.0, 0).params(1, 4);
    for (u, want) in [(0.0, 2), (0.4, 2), (0.45, 3), (0.999, 3)] {
        assert_eq!(twin::sample_row(&l, &p, u), want, "top-k, u = {u}");
    }
    // top_p = 0.75 keeps [.5, .75, 1] (mass 2.25): index 1 below u = 2/9, 2 below 5/9.
    let p = cfg(1.0, 0, 0.75, 0).params(1, 4);
    for (u, want) in [(0.0, 1), (0.2, 1), (0.25, 2), (0.5, 2), (0.6, 3)] {
        assert_eq!(twin::sample_row(&l, &p, u), want, "top-p, u = {u}");
    }

    // The random numbers: in [0, 1), mean 1/2, a new value at every step.
    let us: Vec<f32> = (0..10_000).map(|s| twin::random_uniform(7, 3, s)).collect();
    assert!(us.iter().all(|&u| (0.0..1.0).contains(&u)));
    let mean = us.iter().map(|&u| u as f64).sum::<f64>() / us.len() as f64;
    // The mean of 10,000 uniforms has σ = 0.289/100; 5σ.
    assert!((mean - 0.5).abs() < 0.0145, "mean {mean}");
    assert_ne!(twin::random_uniform(7, 3, 0), twin::random_uniform(8, 3, 0));
    assert_ne!(twin::random_uniform(7, 3, 0), twin::random_uniform(7, 4, 0));
    assert_ne!(
        twin::random_uniform(7, 3, 0),
        twin::random_uniform(7 | 1 << 40, 3, 0)
    );
}

#[test]
fn sampling_config_validates_and_builds_params() {
    let d = SamplingConfig::default();
    assert!(d.is_greedy() && d.validate().is_ok());
    assert!(cfg(0.7, 40, 0.95, 1).validate().is_ok());
    assert!(cfg(1.0, 0, 1.0, 0).validate().is_ok());
    for bad in [
        cfg(-0.1, 0, 1.0, 0),
        cfg(f32::NAN, 0, 1.0, 0),
        cfg(f32::INFINITY, 0, 1.0, 0),
        cfg(1.0, 0, 0.0, 0),
        cfg(1.0, 0, -0.5, 0),
        cfg(1.0, 0, 1.5, 0),
        cfg(1.0, 0, f32::NAN, 0),
    ] {
        assert!(
            matches!(bad.validate(), Err(Error::InvalidInput(_))),
            "{bad:?} should be rejected"
        );
    }
    let p = cfg(0.5, 3, 0.9, 0x1234_5678_9ABC_DEF0).params(4, 100);
    assert_eq!((p.batch, p.vocab, p.top_k, p.top_p), (4, 100, 3, 0.9));
    assert_eq!((p.logits_offset, p.logits_stride), (0, 100));
    assert_eq!((p.out_offset, p.out_stride), (0, 1));
    assert_eq!((p.seed_lo, p.seed_hi), (0x9ABC_DEF0, 0x1234_5678));
    assert_eq!(p.temperature, 0.5);
    assert_eq!(p.logit_scale, std::f32::consts::LOG2_E / 0.5);
    let p = p.with_logits(7, 200).with_out(1, 2);
    assert_eq!(
        (p.logits_offset, p.logits_stride, p.out_offset, p.out_stride),
        (7, 200, 1, 2)
    );
    assert_eq!(std::mem::size_of::<SampleParams>() % 16, 0);
}

#[test]
fn sample_greedy_matches_reference_on_awkward_vocabs() {
    for vocab in [1, 7, 255, 256, 257, 1000, 50_280] {
        let logits = rows(vocab as u64, 3, vocab, 10.0);
        let p = SamplingConfig::default().params(3, vocab as u32);
        let outs = check_twin("greedy", &logits, &p, &[5, 0, 9], 3, 1);
        for (b, row) in logits.chunks(vocab).enumerate() {
            assert_eq!(outs[0][b], naive_argmax(row), "vocab {vocab} row {b}");
        }
    }
}

#[test]
fn sample_greedy_ties_and_non_finite_logits() {
    let vocab = 600; // three invocation strides, the last partial
    let base = rand_vec(11, vocab, -3.0, 3.0);
    let mut cases: Vec<(Vec<f32>, u32)> = Vec::new();
    // Ties at the max in one invocation (44, 300, 556) and in others, of other level-1 groups
    // (45, 286, 529): the lowest index wins.
    let mut r = base.clone();
    for i in [556, 529, 300, 286, 45, 44] {
        r[i] = 5.0;
    }
    cases.push((r, 44));
    // NaN (which torch.argmax would pick) and -inf entries lose.
    let mut r = base.clone();
    for i in [0, 7, 257, 599] {
        r[i] = f32::NAN;
    }
    for i in [1, 300] {
        r[i] = f32::NEG_INFINITY;
    }
    r[400] = 4.0;
    cases.push((r, 400));
    cases.push((vec![f32::NAN; vocab], 0));
    let mut r = vec![f32::NEG_INFINITY; vocab];
    r[599] = f32::NAN;
    r[3] = -f32::NAN;
    cases.push((r, 0));
    // +inf wins, the first of two.
    let mut r = base.clone();
    r[456] = f32::INFINITY;
    r[123] = f32::INFINITY;
    cases.push((r, 123));
    // -0 ties with +0.
    let mut r = vec![-1.0; vocab];
    r[10] = 0.0;
    r[3] = -0.0;
    cases.push((r, 3));
    // One finite logit among NaN and -inf.
    let mut r = vec![f32::NAN; vocab];
    r[598] = -1e30;
    r[2] = f32::NEG_INFINITY;
    cases.push((r, 598));

    let logits: Vec<f32> = cases.iter().flat_map(|(r, _)| r.clone()).collect();
    let want: Vec<u32> = cases.iter().map(|c| c.1).collect();
    let batch = cases.len() as u32;
    let p = SamplingConfig::default().params(batch, vocab as u32);
    let steps = vec![0; cases.len()];
    let outs = check_twin("greedy ties", &logits, &p, &steps, cases.len(), 1);
    assert_eq!(outs[0], want);

    // Sampling on the same rows never picks a NaN or -inf, always the +inf, and falls back to
    // index 0 on rows without a finite logit.
    let p = cfg(1.0, 0, 1.0, 3).params(batch, vocab as u32);
    let outs = check_twin("sampling non-finite", &logits, &p, &steps, cases.len(), 8);
    for out in &outs {
        for (b, (row, _)) in cases.iter().enumerate() {
            let v = row[out[b] as usize];
            let finite_row = row.iter().any(|x| x.is_finite() || *x == f32::INFINITY);
            assert!(
                !finite_row || v.is_finite() || v == f32::INFINITY,
                "row {b}: {v}"
            );
        }
        assert!([123, 456].contains(&out[4]), "+inf row gave {}", out[4]);
        assert_eq!((out[2], out[3], out[6]), (0, 0, 598));
    }
}

#[test]
fn sample_offsets_strides_and_empty_vocab() {
    let (batch, vocab) = (3usize, 257usize);
    let stride = vocab + 3;
    let logits = rand_vec(5, 5 + batch * stride, -4.0, 4.0);
    for c in [SamplingConfig::default(), cfg(0.9, 10, 0.9, 42)] {
        let p = c
            .params(batch as u32, vocab as u32)
            .with_logits(5, stride as u32)
            .with_out(2, 3);
        let outs = check_twin("layout", &logits, &p, &[1, 2, 3], 2 + 3 * batch, 2);
        for out in &outs {
            for (i, &id) in out.iter().enumerate() {
                if i >= 2 && (i - 2) % 3 == 0 {
                    assert!(id < vocab as u32);
                } else {
                    assert_eq!(id, SENTINEL, "out[{i}] must be untouched");
                }
            }
        }
    }
    // vocab 0 writes id 0 and still counts the step.
    let p = cfg(1.0, 0, 1.0, 0).params(2, 0);
    let gpu = Gpu::new(&[1.0], &[4, 5], 2);
    assert_eq!(gpu.call(&p), (vec![0, 0], vec![5, 6]));
}

#[test]
fn sample_matches_twin_exactly() {
    let configs = [
        cfg(1.0, 0, 1.0, 0),
        cfg(0.7, 40, 1.0, 1),
        cfg(1.3, 0, 0.8, 0xDEAD_BEEF_0123_4567),
        cfg(0.8, 50, 0.9, 7),
        cfg(2.0, 5, 0.5, 99),
    ];
    for vocab in [2usize, 7, 255, 256, 257, 1000] {
        let logits = rows(100 + vocab as u64, 3, vocab, 6.0);
        for c in &configs {
            let p = c.params(3, vocab as u32);
            check_twin(
                &format!("vocab {vocab}"),
                &logits,
                &p,
                &[0, 17, 4_000_000_000],
                3,
                2,
            );
        }
    }
    // A real vocabulary, with a few likely tokens standing out as in a language model: one
    // config with both filters, one with neither.
    let vocab = 50_280;
    let mut logits = rows(3, 3, vocab, 8.0);
    for (n, i) in [
        17usize,
        4_000,
        25_000,
        50_279,
        50_280 + 9,
        2 * 50_280 + 31_000,
    ]
    .into_iter()
    .enumerate()
    {
        logits[i] = 12.0 + n as f32 * 0.37;
    }
    for c in [cfg(0.9, 500, 0.95, 5), cfg(1.0, 0, 1.0, 6)] {
        check_twin(
            "vocab 50280",
            &logits,
            &c.params(3, vocab as u32),
            &[0, 1, 2],
            3,
            1,
        );
    }
}

/// Rows of two logits whose draw sits on its decision boundary. With `u` the row's random
/// number, `w = e^l ≤ 1` and `S = w + 1`: for `u ≤ 1/2` the row is `[l, 0]` and token 0 is
/// drawn iff `u·S < w`; for `u > 1/2` it is `[0, l]` and token 0 is drawn iff `u·S < 1`. `l`
/// is picked among the f32 values near the boundary for the smallest gap (by the twin's
/// arithmetic): 0 or 1 ulp on most rows, so one wrong bit in a weight, a sum, `u` or `u·S` on
/// the GPU flips some draws. Returns (logits, params, gaps in ulps).
fn boundary_rows(n: usize, seed: u64) -> (Vec<f32>, SampleParams, Vec<f32>) {
    let p = cfg(1.0, 0, 1.0, seed).params(n as u32, 2);
    let max_key = twin::order_key(0.0);
    let mut logits = vec![0.0f32; 2 * n];
    let mut gaps = Vec::new();
    for b in 0..n {
        let u = twin::random_uniform(seed, b as u32, 0).max(1e-3);
        let low = u <= 0.5;
        let w_star = if low { u / (1.0 - u) } else { (1.0 - u) / u };
        let l0 = (w_star as f64).ln() as f32;
        let gap = |l: f32| {
            let w = twin::weight(l, twin::order_key(l), max_key, p.logit_scale);
            let edge = if low { w } else { 1.0 };
            ((u * (w + 1.0) - edge) / (edge * f32::EPSILON)).abs()
        };
        let l = (-400..=400)
            .map(|k| f32::from_bits((l0.to_bits() as i32 + k) as u32))
            .min_by(|a, b| gap(*a).total_cmp(&gap(*b)))
            .unwrap();
        gaps.push(gap(l));
        logits[2 * b + usize::from(!low)] = l;
    }
    (logits, p, gaps)
}

/// `n` rows of `vocab` random logits whose last logit is set to one of two adjacent f32 values
/// between which the twin's token changes, so an S, a prefix sum M(i) or a top-p sum one ulp
/// off on the GPU (say, added in another order) flips some draws. Returns (logits, params,
/// rows put on an edge).
fn edge_rows(c: &SamplingConfig, n: usize, vocab: usize) -> (Vec<f32>, SampleParams, usize) {
    let p = c.params(n as u32, vocab as u32);
    let mut logits = rows(13, n, vocab, 4.0);
    let mut on_edge = 0;
    for (b, row) in logits.chunks_mut(vocab).enumerate() {
        let u = twin::random_uniform(c.seed, b as u32, 0);
        let mut pick = |key: u32| {
            row[vocab - 1] = twin::key_value(key);
            twin::sample_row(row, &p, u)
        };
        // Bisect the last logit's key over [-4, 4] for adjacent keys with other tokens.
        let (mut lo, mut hi) = (twin::order_key(-4.0), twin::order_key(4.0));
        let at_lo = pick(lo);
        if pick(hi) == at_lo {
            continue;
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if pick(mid) == at_lo {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        pick(if b % 2 == 0 { lo } else { hi });
        on_edge += 1;
    }
    (logits, p, on_edge)
}

#[test]
fn sample_matches_twin_on_decision_boundaries() {
    let n = 1000;
    let (logits, p, gaps) = boundary_rows(n, 5);
    // Most rows are within an ulp of their boundary (about a third exactly on it).
    let close = gaps.iter().filter(|&&g| g <= 1.0).count();
    assert!(close > n / 2, "only {close} of {n} rows within an ulp");
    let outs = check_twin("boundary", &logits, &p, &vec![0; n], n, 1);
    // Both outcomes occur: the rows really straddle their boundaries.
    let zeros = outs[0].iter().filter(|&&id| id == 0).count();
    assert!(
        zeros > n / 10 && zeros < n - n / 10,
        "{zeros} of {n} draws gave 0"
    );

    // Longer rows test the summation order too (see `edge_rows`).
    for c in [cfg(1.0, 0, 1.0, 8), cfg(0.8, 100, 0.9, 9)] {
        let (n, vocab) = (200, 600);
        let (logits, p, on_edge) = edge_rows(&c, n, vocab);
        assert!(on_edge > n / 2, "{c:?}: {on_edge} rows on an edge");
        check_twin("sum boundary", &logits, &p, &vec![0; n], n, 1);
    }
}

#[test]
fn sample_top_k_one_and_tiny_top_p_are_greedy() {
    let (batch, vocab) = (4usize, 1000usize);
    let logits = rows(8, batch, vocab, 5.0);
    let greedy: Vec<u32> = logits.chunks(vocab).map(naive_argmax).collect();
    for seed in 0..4 {
        for c in [cfg(1.0, 1, 1.0, seed), cfg(1.5, 0, 1e-6, seed)] {
            let outs = check_twin(
                "greedy-like",
                &logits,
                &c.params(batch as u32, vocab as u32),
                &[0, 1, 2, 3],
                batch,
                2,
            );
            for out in outs {
                assert_eq!(out, greedy, "{c:?}");
            }
        }
    }
}

/// `n` draws from one row of logits in one dispatch: `n` sequences reading the same row
/// (stride 0), each with its own random stream. Returns the ids.
fn draws(logits: &[f32], c: &SamplingConfig, n: usize) -> Vec<u32> {
    let p = c.params(n as u32, logits.len() as u32).with_logits(0, 0);
    let gpu = Gpu::new(logits, &vec![0; n], n);
    let (ids, steps) = gpu.call(&p);
    assert!(steps.iter().all(|&s| s == 1));
    ids
}

#[test]
fn sample_tokens_stay_in_the_kept_set() {
    let vocab = 300;
    let logits = rand_vec(21, vocab, -4.0, 4.0);
    for c in [
        cfg(1.0, 20, 1.0, 1),
        cfg(0.7, 0, 0.5, 2),
        cfg(2.0, 50, 0.9, 3),
    ] {
        let keep = twin::kept_probabilities(&logits, c.temperature, c.top_k, c.top_p);
        let kept = keep.iter().filter(|&&p| p > 0.0).count();
        let ids = draws(&logits, &c, 500);
        let mut seen = vec![false; vocab];
        for &id in &ids {
            assert!(keep[id as usize] > 0.0, "{c:?}: token {id} is not kept");
            seen[id as usize] = true;
        }
        let distinct = seen.iter().filter(|&&s| s).count();
        assert!(
            distinct > 1 && distinct <= kept,
            "{c:?}: {distinct} of {kept}"
        );
    }
}

#[test]
fn sample_ties_at_the_thresholds_are_kept() {
    // top_k = 2 lands on a value held by three tokens: all three stay (4 kept). top_p = 0.6 is
    // crossed by the first of two tied tokens (0.534 + 0.197): both stay (3 kept).
    let cases = [
        (
            vec![3.0f32, 2.0, 2.0, 2.0, 1.0, 1.0, 0.0],
            cfg(1.0, 2, 1.0, 1),
            4,
        ),
        (vec![2.0f32, 1.0, 1.0, 0.0], cfg(1.0, 0, 0.6, 2), 3),
    ];
    for (logits, c, kept) in cases {
        let keep = twin::kept_probabilities(&logits, c.temperature, c.top_k, c.top_p);
        let want: Vec<usize> = (0..logits.len()).filter(|&i| keep[i] > 0.0).collect();
        assert_eq!(want, (0..kept).collect::<Vec<_>>(), "{c:?}: {keep:?}");
        let mut seen = vec![false; logits.len()];
        for id in draws(&logits, &c, 500) {
            seen[id as usize] = true;
        }
        // Each kept token has p ≥ 0.17: missing one in 500 draws has probability < 1e-40.
        let got: Vec<usize> = (0..logits.len()).filter(|&i| seen[i]).collect();
        assert_eq!(got, want, "{c:?}");
    }
    // The twin agrees draw for draw on tie-heavy rows (logits on a grid of 0.5).
    let (batch, vocab) = (3usize, 257usize);
    let logits: Vec<f32> = rows(77, batch, vocab, 4.0)
        .iter()
        .map(|x| (x * 2.0).round() / 2.0)
        .collect();
    for c in [
        cfg(1.0, 10, 1.0, 3),
        cfg(0.8, 0, 0.7, 4),
        cfg(1.1, 20, 0.6, 5),
    ] {
        check_twin("ties", &logits, &c.params(3, 257), &[0, 0, 0], batch, 3);
    }
}

#[test]
fn sample_frequencies_match_kept_probabilities() {
    let logits = [1.0f32, 2.0, 0.5, -1.0, 1.5];
    // Fewer draws where the filters' searches make a draw dearer (~0.5 ms each on lavapipe).
    for (c, n) in [
        (cfg(1.0, 0, 1.0, 11), 2000),
        (cfg(0.8, 4, 1.0, 12), 1000),
        (cfg(1.2, 0, 0.8, 13), 1000),
        (cfg(1.0, 3, 0.9, 14), 1000),
    ] {
        let probs = twin::kept_probabilities(&logits, c.temperature, c.top_k, c.top_p);
        let ids = draws(&logits, &c, n);
        let mut counts = [0usize; 5];
        for &id in &ids {
            counts[id as usize] += 1;
        }
        // Each count is Binomial(n, p): allow 5 standard deviations (a false alarm per token
        // has probability ~6e-7), and exactly 0 for removed tokens.
        for (i, (&k, &p)) in counts.iter().zip(&probs).enumerate() {
            let (mean, sd) = (
                n as f64 * p as f64,
                (n as f64 * p as f64 * (1.0 - p as f64)).sqrt(),
            );
            assert!(
                (k as f64 - mean).abs() <= 5.0 * sd + 1e-9,
                "{c:?}: token {i} drawn {k} times, expected {mean:.1} ± {sd:.1} (p = {probs:?})"
            );
        }
    }
}

#[test]
fn sample_steps_and_seeds_drive_the_stream() {
    let vocab = 50;
    let logits = rand_vec(31, vocab, -1.0, 1.0);
    let sequence = |seed: u64| -> Vec<Vec<u32>> {
        // Two sequences reading the same logits: independent streams.
        let p = cfg(1.0, 0, 1.0, seed)
            .params(2, vocab as u32)
            .with_logits(0, 0);
        let gpu = Gpu::new(&logits, &[0, 0], 2);
        let ids: Vec<Vec<u32>> = (0..24).map(|_| gpu.call(&p).0).collect();
        assert_eq!(read::<u32>(&gpu.steps, 2), vec![24, 24]);
        ids
    };
    let a = sequence(1);
    assert_eq!(a, sequence(1), "same seed, same tokens");
    assert_ne!(a, sequence(2), "another seed, other tokens");
    let col = |b: usize| a.iter().map(|ids| ids[b]).collect::<Vec<_>>();
    assert_ne!(
        col(0),
        col(1),
        "sequences of a batch have their own streams"
    );
    // The twin names the same tokens, step by step.
    let p = cfg(1.0, 0, 1.0, 1).params(1, vocab as u32);
    let want: Vec<u32> = (0..24)
        .map(|s| twin::sample_row(&logits, &p, twin::random_uniform(1, 0, s)))
        .collect();
    assert_eq!(col(0), want);
}
