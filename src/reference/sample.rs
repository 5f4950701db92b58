//! CPU twin of `shaders/sample.wgsl`: the same keys, weights, random numbers, thresholds and
//! summation order, so [`sample`] returns the kernel's tokens bit for bit. Also
//! [`kept_probabilities`], a separate sort-based statement of the distribution the kernel draws
//! from, written for obviousness rather than to match the kernel's bits.
//!
//! Semantics in short (the shader's header has the details):
//! - Greedy (temperature not a positive finite number): the lowest index of the largest logit;
//!   NaN counts as -inf (torch.argmax would pick a NaN), -0 equals +0.
//! - Sampling: `p_i ∝ exp((l_i - max)/T)`; top-k keeps the `k` largest and everything tied
//!   with the `k`-th; top-p keeps the smallest set of most likely tokens whose mass (over the
//!   top-k set) reaches `top_p`, the crossing token and its ties included; the token is drawn
//!   from the kept set with `u = random_uniform(seed, b, steps[b])`.
//! - Rows whose logits are all -inf or NaN give token 0; vocab 0 gives 0.

use crate::kernels::sample::SampleParams;

/// Invocations per workgroup in the kernel: the width of its fixed summation order.
pub const WORKGROUP: usize = 256;

/// The order key of NaN and of -inf: the smallest key a logit can have.
pub const KEY_NEG_INF: u32 = 0x007F_FFFF;
/// The order key of +inf: the largest key a logit can have.
pub const KEY_POS_INF: u32 = 0xFF80_0000;

/// `round(2^(31 - a/16))` for `a < 16`: `2^(-a/16)` in Q31 (the same table as the shader's).
pub const EXP2_SIXTEENTHS: [u32; 16] = [
    0x8000_0000,
    0x7A92_BE8B,
    0x7560_6374,
    0x7066_6F76,
    0x6BA2_7E65,
    0x6712_460B,
    0x62B3_9509,
    0x5E84_51D0,
    0x5A82_799A,
    0x56AC_1F75,
    0x52FF_6B55,
    0x4F7A_9930,
    0x4C1B_F829,
    0x48E1_E9BA,
    0x45CA_E0F2,
    0x42D5_61B4,
];

const ONE_Q31: u32 = 0x8000_0000;
/// `round(ln 2 · 2^32)`.
const LN2_Q32: u32 = 0xB172_17F8;

/// The u32 whose unsigned order is the f32 order of `logit`: negative values have every bit
/// flipped, positive ones the sign bit set. NaN maps to -inf's key and -0 to +0's.
pub fn order_key(logit: f32) -> u32 {
    let mut bits = logit.to_bits();
    if bits & 0x7FFF_FFFF > 0x7F80_0000 {
        bits = 0xFF80_0000; // NaN -> -inf
    }
    if bits == 0x8000_0000 {
        bits = 0; // -0 -> +0
    }
    if bits & 0x8000_0000 != 0 {
        !bits
    } else {
        bits | 0x8000_0000
    }
}

/// The logit an order key stands for (the inverse of [`order_key`] on non-NaN values).
pub fn key_value(key: u32) -> f32 {
    if key & 0x8000_0000 != 0 {
        f32::from_bits(key & 0x7FFF_FFFF)
    } else {
        f32::from_bits(!key)
    }
}

/// `⌊a·b / 2^31⌋` for Q31 values `a, b ≤ 2^31`.
fn mul_q31(a: u32, b: u32) -> u32 {
    ((a as u64 * b as u64) >> 31) as u32
}

/// `2^(-q / 2^20)` as an f32 computed from integers only, as the shader does, so both get the
/// same bits. With `q = n·2^20 + a·2^16 + r`: `2^-n` is the exponent, `2^(-a/16)` comes from
/// [`EXP2_SIXTEENTHS`], and `2^(-r/2^20) = e^-z` (`z = r·ln2/2^20 < ln2/16`) from four Taylor
/// terms in Q31. Relative error below 1e-7 (the mantissa is truncated to 24 bits); 0 for
/// `n ≥ 125`.
pub fn exp2_fixed(q: u32) -> f32 {
    let n = q >> 20;
    if n >= 125 {
        return 0.0;
    }
    let a = ((q >> 16) & 15) as usize;
    let r = q & 0xFFFF;
    let z = ((((r << 11) as u64) * LN2_Q32 as u64) >> 32) as u32; // z·2^31
    let mut p = ONE_Q31 - z / 4;
    p = ONE_Q31 - mul_q31(z / 3, p);
    p = ONE_Q31 - mul_q31(z / 2, p);
    p = ONE_Q31 - mul_q31(z, p);
    let v = mul_q31(EXP2_SIXTEENTHS[a], p);
    if v >= ONE_Q31 {
        return f32::from_bits((127 - n) << 23);
    }
    f32::from_bits(((126 - n) << 23) | ((v.max(0x4000_0000) >> 7) & 0x7F_FFFF))
}

/// The unnormalised probability of the logit `l` (key `key`) in a row whose largest key is
/// `max_key`: `2^((l - max)·logit_scale) = exp((l - max)/T)`, exactly 1 at the max, 0 for -inf
/// or NaN and for every finite logit when the max is +inf.
pub fn weight(l: f32, key: u32, max_key: u32, logit_scale: f32) -> f32 {
    if key == max_key {
        return 1.0;
    }
    if key == KEY_NEG_INF || max_key == KEY_POS_INF {
        return 0.0;
    }
    let y = ((l - key_value(max_key)) * logit_scale).clamp(-126.0, 0.0);
    exp2_fixed((-y * 1_048_576.0) as u32)
}

/// lowbias32 (C. Wellons' hash prospector): a bijective 32-bit mix with strong avalanche.
pub fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7FEB_352D);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846C_A68B);
    x ^= x >> 16;
    x
}

/// The kernel's random number for sequence `seq` at step `step`: uniform in [0, 1) with 24
/// bits, from integer hashing only (identical on every device). For a fixed seed and sequence it
/// is a bijection of `step`, so a stream does not repeat within 2^32 steps.
pub fn random_uniform(seed: u64, seq: u32, step: u32) -> f32 {
    let mut h = mix32(seed as u32 ^ 0x9E37_79B9);
    h = mix32(h ^ (seed >> 32) as u32);
    h = mix32(h ^ seq);
    h = mix32(h ^ step);
    (h >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// The kernel's summation order for `n` terms: invocation `j < 256` adds terms `j, j + 256, ...`
/// in order; then, for each `j < 16`, partials `j, j + 16, ..., j + 240` are added in order;
/// then those 16 sums in order.
fn workgroup_sum(n: usize, term: impl Fn(usize) -> f32) -> f32 {
    let mut part = [0.0f32; WORKGROUP];
    for (j, p) in part.iter_mut().enumerate() {
        for i in (j..n).step_by(WORKGROUP) {
            *p += term(i);
        }
    }
    let mut total = 0.0f32;
    for j in 0..16 {
        let mut level1 = part[j];
        for k in 1..16 {
            level1 += part[j + 16 * k];
        }
        total = if j == 0 { level1 } else { total + level1 };
    }
    total
}

/// The largest `t ≤ limit` with `pred(t)`, for a monotone `pred` (true, then false) that holds
/// at 0. The kernel finds the same `t` by an 8-ary radix search.
fn largest_true(limit: u32, pred: impl Fn(u32) -> bool) -> u32 {
    let (mut lo, mut hi) = (0u32, limit);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if pred(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// The index of the largest key, the lowest one on ties (0 for an empty row).
fn argmax(keys: &[u32]) -> usize {
    let mut best = 0;
    for (i, &k) in keys.iter().enumerate() {
        if k > keys[best] {
            best = i;
        }
    }
    best
}

/// Greedy choice: the lowest index of the largest logit, NaN counting as -inf (0 for an empty
/// or all -inf/NaN row).
pub fn greedy(row: &[f32]) -> u32 {
    let keys: Vec<u32> = row.iter().map(|&l| order_key(l)).collect();
    argmax(&keys) as u32
}

/// The kernel's choice for one row of logits given its random number `u` in [0, 1), with the
/// temperature, `logit_scale`, `top_k` and `top_p` of `p` (its other fields are ignored).
pub fn sample_row(row: &[f32], p: &SampleParams, u: f32) -> u32 {
    let vocab = row.len();
    if vocab == 0 {
        return 0;
    }
    let keys: Vec<u32> = row.iter().map(|&l| order_key(l)).collect();
    let arg = argmax(&keys);
    let max_key = keys[arg];
    let t_bits = p.temperature.to_bits();
    let sampling = t_bits > 0 && t_bits < 0x7F80_0000; // positive and finite
    if !sampling || max_key == KEY_NEG_INF || vocab == 1 {
        return arg as u32;
    }
    let w: Vec<f32> = row
        .iter()
        .zip(&keys)
        .map(|(&l, &k)| weight(l, k, max_key, p.logit_scale))
        .collect();

    // top-k: the k-th largest key (ties with it stay in).
    let top_k_key = if p.top_k > 0 && (p.top_k as usize) < vocab {
        let mut sorted = keys.clone();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        sorted[p.top_k as usize - 1]
    } else {
        0
    };
    // S(t): the mass of the top-k tokens with key ≥ t.
    let mass = |t: u32| {
        let t = t.max(top_k_key);
        workgroup_sum(vocab, |i| if keys[i] >= t { w[i] } else { 0.0 })
    };
    let p_bits = p.top_p.to_bits();
    let (kept_key, kept_mass) = if p_bits > 0 && p_bits < 0x3F80_0000 {
        // top-p: the largest key whose upper set still holds top_p of the mass.
        let goal = p.top_p * mass(0);
        let t = largest_true(u32::MAX, |t| mass(t) >= goal);
        (t, mass(t))
    } else {
        (top_k_key, mass(0))
    };
    // Inverse CDF in index order: the last i whose kept mass before it is ≤ u·S.
    let target = u * kept_mass;
    let before = |i: u32| {
        workgroup_sum(vocab, |j| {
            if (j as u32) < i && keys[j] >= kept_key {
                w[j]
            } else {
                0.0
            }
        })
    };
    largest_true(vocab as u32 - 1, |i| before(i) <= target)
}

/// What one dispatch of the kernel does: for each sequence `b < p.batch`, reads the logits at
/// `logits[p.logits_offset + b·p.logits_stride..][..p.vocab]`, writes the chosen id to
/// `out[p.out_offset + b·p.out_stride]` and increments `steps[b]` (the step it used).
pub fn sample(logits: &[f32], p: &SampleParams, steps: &mut [u32], out: &mut [u32]) {
    let seed = p.seed_lo as u64 | (p.seed_hi as u64) << 32;
    for b in 0..p.batch {
        let start = (p.logits_offset + b * p.logits_stride) as usize;
        let row = &logits[start..start + p.vocab as usize];
        let u = random_uniform(seed, b, steps[b as usize]);
        out[(p.out_offset + b * p.out_stride) as usize] = sample_row(row, p, u);
        steps[b as usize] = steps[b as usize].wrapping_add(1);
    }
}

/// The probability of each token under the kernel's rules, computed the plain way in f64:
/// softmax at `temperature`, sort by logit, keep the `top_k` largest and their ties, walk down
/// the sorted list until the kept mass reaches `top_p` of the top-k mass (keeping the ties of
/// the last token taken), renormalise. Temperature ≤ 0 (or NaN) gives the greedy one-hot; NaN
/// logits count as -inf. For statistical checks of the kernel, not bit-exact with it.
pub fn kept_probabilities(logits: &[f32], temperature: f32, top_k: u32, top_p: f32) -> Vec<f32> {
    let n = logits.len();
    let mut probs = vec![0.0f32; n];
    if n == 0 {
        return probs;
    }
    let l: Vec<f64> = logits
        .iter()
        .map(|&x| {
            if x.is_nan() {
                f64::NEG_INFINITY
            } else {
                x as f64
            }
        })
        .collect();
    // Descending by logit, ascending index among equals.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| l[b].total_cmp(&l[a]).then(a.cmp(&b)));
    let max = l[order[0]];
    if !(temperature > 0.0 && temperature.is_finite()) || max == f64::NEG_INFINITY {
        probs[order[0]] = 1.0;
        return probs;
    }
    let t = temperature as f64;
    let w: Vec<f64> = l
        .iter()
        .map(|&x| if x == max { 1.0 } else { ((x - max) / t).exp() })
        .collect();
    let k = if top_k == 0 {
        n
    } else {
        (top_k as usize).min(n)
    };
    let mut threshold = l[order[k - 1]];
    if top_p > 0.0 && top_p < 1.0 {
        let top_k_mass: f64 = (0..n).filter(|&i| l[i] >= threshold).map(|i| w[i]).sum();
        let mut cum = 0.0;
        for &i in &order {
            cum += w[i];
            if cum >= top_p as f64 * top_k_mass {
                threshold = threshold.max(l[i]);
                break;
            }
        }
    }
    let kept_mass: f64 = (0..n).filter(|&i| l[i] >= threshold).map(|i| w[i]).sum();
    for i in 0..n {
        if l[i] >= threshold {
            probs[i] = (w[i] / kept_mass) as f32;
        }
    }
    probs
}
