//! The CPU references (`mamba_wgpu::reference`) checked against each other and against
//! properties of the math, with no GPU: chunked SSD equals the plain recurrence, a scan or
//! conv split in two calls equals one call (the state carries exactly), the sampler's rules.
//! Small shapes on purpose: this file also runs under Miri (`scripts/miri.sh`).

use mamba_wgpu::kernels::sample::SamplingConfig;
use mamba_wgpu::kernels::selective_scan::SelectiveScanParams;
use mamba_wgpu::kernels::ssd_chunk_cumsum::SsdChunkCumsumParams;
use mamba_wgpu::kernels::ssd_chunk_scan::SsdChunkScanParams;
use mamba_wgpu::reference::conv1d::{conv1d, Conv1dShape};
use mamba_wgpu::reference::rmsnorm::rmsnorm;
use mamba_wgpu::reference::sample::{greedy, kept_probabilities, sample_row};
use mamba_wgpu::reference::selective_scan::{selective_scan, SelectiveScanInputs};
use mamba_wgpu::reference::ssd::{ssd_chunked, ssd_sequential, SsdInputs};

/// Seeded values in [lo, hi) (xorshift).
fn vals(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}

/// |a - b| ≤ atol + rtol·|b| elementwise, all finite.
fn close(what: &str, a: &[f32], b: &[f32], atol: f32, rtol: f32) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(x.is_finite() && y.is_finite(), "{what}[{i}]: {x} vs {y}");
        assert!(
            (x - y).abs() <= atol + rtol * y.abs(),
            "{what}[{i}]: {x} vs {y}"
        );
    }
}

/// Bit-for-bit equality, except under Miri, which deliberately perturbs the results of `exp`
/// and `ln` by a few ULPs per call (so the same expression evaluated twice may differ): there,
/// 1e-6 relative.
fn same(what: &str, a: &[f32], b: &[f32]) {
    if cfg!(miri) {
        close(what, a, b, 1e-7, 1e-6);
    } else {
        assert_eq!(a, b, "{what}");
    }
}

/// The chunked SSD (the four kernels' math) equals the plain recurrence: batch 2, 7 tokens in
/// chunks of 3 (a partial last chunk), 4 heads in 2 groups, P = 3, N = 5. Both sum the same
/// terms in different orders over ≤ 7 tokens of O(1) values: 1e-5 relative plus 1e-5 absolute
/// is about 100 f32 roundings.
#[test]
fn chunked_ssd_equals_the_recurrence() {
    let (batch, len, nh, hp, ns, ng) = (2u32, 7u32, 4u32, 3u32, 5u32, 2u32);
    let width = nh * hp + 2 * ng * ns;
    let rows = (batch * len) as usize;
    let p = SsdChunkScanParams {
        batch,
        len,
        nheads: nh,
        head_dim: hp,
        d_state: ns,
        ngroups: ng,
        chunk: 3,
        x_offset: 0,
        x_stride: width,
        b_offset: nh * hp,
        c_offset: nh * hp + ng * ns,
        y_stride: nh * hp,
    };
    let dtp = SsdChunkCumsumParams {
        batch,
        len,
        nheads: nh,
        chunk: 3,
        dt_offset: 0,
        dt_stride: nh,
        dt_min: 0.0,
        dt_max: f32::INFINITY,
    };
    let xbc = vals(1, rows * width as usize, -1.0, 1.0);
    let dt_raw = vals(2, rows * nh as usize, -3.0, 1.0);
    let mut heads = vals(3, nh as usize, 0.0, 2.0); // A_log
    heads.extend(vals(4, nh as usize, 0.5, 1.5)); // D
    heads.extend(vals(5, nh as usize, -1.0, 0.0)); // dt_bias
    let inp = SsdInputs {
        dt_raw: &dt_raw,
        xbc: &xbc,
        heads: &heads,
    };
    let state0 = vals(6, (batch * nh * hp * ns) as usize, -0.5, 0.5);
    let (mut s_seq, mut s_chk) = (state0.clone(), state0);
    let y_seq = ssd_sequential(&dtp, &p, inp, &mut s_seq);
    let y_chk = ssd_chunked(&dtp, &p, inp, &mut s_chk);
    close("y", &y_chk, &y_seq, 1e-5, 1e-5);
    close("final state", &s_chk, &s_seq, 1e-5, 1e-5);
    assert!(y_seq.iter().any(|v| v.abs() > 0.1), "degenerate inputs");
}

/// A selective scan over 5 tokens equals one over 2 then one over 3 continuing from its
/// state: bit for bit, since both run the same recurrence in the same order (see [`same`]).
#[test]
fn selective_scan_carries_its_state_exactly() {
    let (d_inner, ns) = (3u32, 4u32);
    let params = |len: u32| SelectiveScanParams {
        batch: 1,
        len,
        d_inner,
        d_state: ns,
        dt_stride: d_inner,
        bc_stride: 2 * ns,
        x_stride: d_inner,
        z_stride: d_inner,
        y_stride: d_inner,
        flags: 3,
        ..Default::default()
    };
    let (di, n) = (d_inner as usize, ns as usize);
    let dt = vals(1, 5 * di, -2.0, 1.0);
    let bc = vals(2, 5 * 2 * n, -1.0, 1.0);
    let x = vals(3, 5 * di, -1.0, 1.0);
    let z = vals(4, 5 * di, -1.0, 1.0);
    let mut ssm = vals(5, di * n, 0.0, 2.0);
    ssm.extend(vals(6, 2 * di, -0.5, 0.5));
    let inp = |t0: usize, t1: usize| SelectiveScanInputs {
        dt: &dt[t0 * di..t1 * di],
        bc: &bc[t0 * 2 * n..t1 * 2 * n],
        x: &x[t0 * di..t1 * di],
        z: &z[t0 * di..t1 * di],
        ssm: &ssm,
    };
    let (mut s_all, mut y_all) = (vec![0.0; di * n], vec![0.0; 5 * di]);
    selective_scan(&params(5), inp(0, 5), &mut s_all, &mut y_all);
    let (mut s, mut y1, mut y2) = (vec![0.0; di * n], vec![0.0; 2 * di], vec![0.0; 3 * di]);
    selective_scan(&params(2), inp(0, 2), &mut s, &mut y1);
    selective_scan(&params(3), inp(2, 5), &mut s, &mut y2);
    same("y", &[y1, y2].concat(), &y_all);
    same("state", &s, &s_all);
}

/// The same for the causal conv, with a call shorter than its K-1 = 3 state columns.
#[test]
fn conv1d_carries_its_state_exactly() {
    let (channels, kernel) = (5, 4);
    let shape = |len| Conv1dShape {
        batch: 2,
        len,
        channels,
        kernel,
    };
    let w = vals(1, channels * kernel, -1.0, 1.0);
    let bias = vals(2, channels, -0.5, 0.5);
    let x = vals(3, 2 * 6 * channels, -1.0, 1.0);
    // x is [batch, len, channels]: cut each sequence at token 2.
    let part = |t0: usize, t1: usize| -> Vec<f32> {
        (0..2)
            .flat_map(|b| x[(b * 6 + t0) * channels..(b * 6 + t1) * channels].to_vec())
            .collect()
    };
    let mut s_all = vec![0.0; 2 * channels * (kernel - 1)];
    let all = conv1d(&x, &w, Some(&bias), &mut s_all, shape(6));
    let mut s = vec![0.0; 2 * channels * (kernel - 1)];
    let a = conv1d(&part(0, 2), &w, Some(&bias), &mut s, shape(2));
    let b = conv1d(&part(2, 6), &w, Some(&bias), &mut s, shape(4));
    let joined: Vec<f32> = (0..2)
        .flat_map(|i| {
            [
                &a[i * 2 * channels..(i + 1) * 2 * channels],
                &b[i * 4 * channels..(i + 1) * 4 * channels],
            ]
            .concat()
        })
        .collect();
    same("y", &joined, &all);
    same("state", &s, &s_all);
}

/// RMSNorm of a row with every |value| equal to v gives ±weight (up to eps): mean(x²) = v².
#[test]
fn rmsnorm_of_a_constant_magnitude_row() {
    let mut r = vec![2.0, -2.0, 2.0, 2.0, -2.0];
    let w = vec![1.0, 2.0, 3.0, 4.0, 5.0];
    let out = rmsnorm(&mut r, Some(&[1.0, -1.0, 1.0, 1.0, -1.0]), &w, 5, 0.0);
    assert_eq!(r, [3.0, -3.0, 3.0, 3.0, -3.0]);
    close("out", &out, &[1.0, -2.0, 3.0, 4.0, -5.0], 0.0, 1e-6);
}

#[test]
fn sampling_rules() {
    assert_eq!(greedy(&[1.0, 3.0, 3.0, -1.0]), 1, "lowest index among ties");
    assert_eq!(greedy(&[f32::NAN, -1.0]), 1, "NaN counts as -inf");
    assert_eq!(greedy(&[]), 0);
    let row = vals(7, 37, -3.0, 3.0);
    let top = greedy(&row);
    // top_k = 1 keeps only the argmax, whatever the random number.
    let p = SamplingConfig {
        temperature: 1.5,
        top_k: 1,
        top_p: 1.0,
        seed: 3,
    }
    .params(1, 37);
    for u in [0.0, 0.3, 0.999_999] {
        assert_eq!(sample_row(&row, &p, u), top);
    }
    // Kept probabilities are a distribution over at most top_k tokens.
    let k = kept_probabilities(&row, 0.7, 5, 0.9);
    let sum: f32 = k.iter().sum();
    assert!((sum - 1.0).abs() < 1e-5, "{sum}");
    assert!(k.iter().filter(|&&v| v > 0.0).count() <= 5);
    assert!(k[top as usize] > 0.0);
}
