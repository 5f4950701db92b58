// mamba_wgpu.sample: token sampling on the GPU, one workgroup per sequence, so that only the
// chosen ids leave the GPU (or none: `out` can be the next step's token-id buffer).
//
// Bindings: 0 params (uniform);
//           1 logits f32 (read): sequence b's logits at logits[logits_offset + b·logits_stride
//             + i], i < vocab;
//           2 steps u32 [batch] (read_write): sequence b's RNG counter, read and incremented
//             once per call (greedy too) by b's own workgroup: no cross-workgroup race;
//           3 out u32 (read_write): out[out_offset + b·out_stride] = the chosen id.
// Params:   batch, vocab, logits_offset, logits_stride, temperature, logit_scale, top_k, top_p,
//           seed_lo, seed_hi, out_offset, out_stride (12 × 4 bytes). logit_scale = log2(e)/T is
//           computed on the CPU (`SamplingConfig::params`): a WGSL division need not be
//           correctly rounded, so computed here it could differ between devices.
// Geometry: one workgroup of 256 invocations per sequence, folded into (x, y) past 65,535.
// Workgroup memory: 8.5 KiB of partial sums + 2 KiB for the argmax.
//
// Keys. Each logit maps to its order key, the u32 whose unsigned order is the f32 order
// (negative: all bits flipped; positive: sign bit set). NaN is read as -inf and -0 as +0, by
// integer tests only (WGSL lets a compiler assume that floats are never NaN or infinite).
// Greedy (temperature not a positive finite f32): out = the lowest index of the largest key,
// as torch.argmax except that NaN loses instead of winning. A row of only NaN/-inf gives 0,
// in sampling mode too; vocab = 0 gives 0.
// Sampling:
//   w_i   = 2^((l_i - max)·logit_scale) = exp((l_i - max)/T): 1 at the max, 0 for -inf and NaN
//           (and for every finite logit under a +inf max), 0 below 2^-125. 2^y is built from
//           integer operations only (exp2_fixed), so every device and the CPU twin get the
//           same bits.
//   top-k: tk = the largest key t with #{key_i ≥ t} ≥ top_k: the top_k-th largest key, every
//           token tied with it kept (as HF's TopKLogitsWarper). Off (tk = 0) unless
//           0 < top_k < vocab.
//   S(t)  = Σ w_i over key_i ≥ max(t, tk) (in the fixed order below).
//   top-p: tp = the largest key t with S(t) ≥ top_p·S(0): the smallest set of most likely
//           tokens whose mass, renormalised over the top-k set, reaches top_p, the token that
//           crosses it and its ties included (HF's TopPLogitsWarper keeps the crossing token;
//           its ties it breaks by sort order). Off (tp = tk) unless 0 < top_p < 1.
//   pick:  u = uniform in [0, 1) from an integer hash of (seed, b, steps[b]); goal = u·S(tp);
//          out = the largest i with M(i) ≤ goal, M(i) = Σ w_j over j < i with key_j ≥ tp: the
//          inverse CDF over the kept tokens in index order, so out is kept and has w > 0.
// Search. Each threshold is the largest t ≤ limit for which a monotone predicate holds (it
// holds at 0). An 8-ary radix search finds it: one pass sums, in one sweep over the vocabulary,
// the 8 candidates prefix + j·2^shift (j < 8) and keeps the largest that passes, 3 bits a pass:
// 11 passes for a key, ⌈bits(vocab - 1)/3⌉ for the pick. Greedy reads the logits once;
// sampling at most 2 + ⌈bits(vocab - 1)/3⌉ times, plus 11 for top-k and 10 for top-p (50280
// tokens: 8 reads, 29 with both filters).
// Sums. Every sum has one fixed order: invocation j adds elements j, j + 256, ... in index
// order; then, for each j < 16, partials j, j + 16, ..., j + 240 in order; then those 16 in
// order. Adding non-negative f32 terms in a fixed order is monotone in the set summed, so the
// predicates are monotone in the computed sums, and `reference::sample` replays the order to
// get the same bits, hence the same token.
// Precondition: vocab ≤ 2^24 (counts are summed in f32, exact up to 2^24).

struct Params {
    batch: u32,
    vocab: u32,
    logits_offset: u32,
    logits_stride: u32,
    temperature: f32,
    logit_scale: f32,
    top_k: u32,
    top_p: f32,
    seed_lo: u32,
    seed_hi: u32,
    out_offset: u32,
    out_stride: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> steps: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

const WG: u32 = 256u;
const KEY_NEG_INF: u32 = 0x007FFFFFu; // order_key(-inf), also NaN's key
const KEY_POS_INF: u32 = 0xFF800000u; // order_key(+inf)

// What a search pass sums for candidate t.
const MODE_COUNT: u32 = 0u; // #{key_i ≥ t}                       (top-k)
const MODE_MASS: u32 = 1u;  // Σ w_i over key_i ≥ max(t, floor)    (top-p)
const MODE_INDEX: u32 = 2u; // Σ w_i over i < t with key_i ≥ floor  (the pick)

const ONE_Q31: u32 = 0x80000000u;
const LN2_Q32: u32 = 0xB17217F8u; // round(ln 2 · 2^32)

// round(2^(31 - a/16)), a < 16: 2^(-a/16) in Q31.
var<private> exp2_sixteenths: array<u32, 16> = array<u32, 16>(
    0x80000000u, 0x7A92BE8Bu, 0x75606374u, 0x70666F76u, 0x6BA27E65u, 0x6712460Bu, 0x62B39509u,
    0x5E8451D0u, 0x5A82799Au, 0x56AC1F75u, 0x52FF6B55u, 0x4F7A9930u, 0x4C1BF829u, 0x48E1E9BAu,
    0x45CAE0F2u, 0x42D561B4u);

// Partial sums of the 8 candidates, [WG][2] vec4: candidates 0-3 then 4-7 (8 KiB), and the
// 16 level-1 sums, and the 8 totals.
var<workgroup> part: array<vec4<f32>, 512>;
var<workgroup> level1: array<vec4<f32>, 32>;
var<workgroup> totals: array<vec4<f32>, 2>;
// Argmax reduction: (largest key, lowest index holding it) per invocation (2 KiB), and the total.
var<workgroup> best: array<vec2<u32>, WG>;
// (key, index, steps[row], unused) for workgroupUniformLoad.
var<workgroup> best_total: vec4<u32>;

// Per-sequence values, the same in every invocation of the workgroup.
var<private> row_base: u32;
var<private> row_max_key: u32;
var<private> row_max: f32;

fn order_key(l: f32) -> u32 {
    var bits = bitcast<u32>(l);
    if ((bits & 0x7FFFFFFFu) > 0x7F800000u) {
        bits = 0xFF800000u; // NaN -> -inf
    }
    if (bits == 0x80000000u) {
        bits = 0u; // -0 -> +0: equal logits get equal keys
    }
    if ((bits & 0x80000000u) != 0u) {
        return ~bits;
    }
    return bits | 0x80000000u;
}

fn key_value(key: u32) -> f32 {
    if ((key & 0x80000000u) != 0u) {
        return bitcast<f32>(key & 0x7FFFFFFFu);
    }
    return bitcast<f32>(~key);
}

// The 64-bit product a·b as (low, high) words, from 16-bit halves (WGSL has no 64-bit integers).
fn mul_wide(a: u32, b: u32) -> vec2<u32> {
    let al = a & 0xFFFFu;
    let ah = a >> 16u;
    let bl = b & 0xFFFFu;
    let bh = b >> 16u;
    let ll = al * bl;
    let lh = al * bh;
    let hl = ah * bl;
    let hh = ah * bh;
    let mid = (ll >> 16u) + (lh & 0xFFFFu) + (hl & 0xFFFFu); // < 3·2^16: no wrap
    return vec2<u32>((mid << 16u) | (ll & 0xFFFFu), hh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u));
}

// ⌊a·b / 2^31⌋ for Q31 values a, b ≤ 2^31 (the result fits: ≤ 2^31).
fn mul_q31(a: u32, b: u32) -> u32 {
    let p = mul_wide(a, b);
    return (p.y << 1u) | (p.x >> 31u);
}

// 2^(-q / 2^20) as an f32, from integer operations only: no exp, and no multiply-add a compiler
// could contract into an FMA, so every device gets the same bits. With q = n·2^20 + a·2^16 + r:
// 2^-n goes to the exponent field, 2^(-a/16) comes from the table, and 2^(-r/2^20) = e^(-z) with
// z = r·ln2/2^20 < ln2/16 from 4 Taylor terms in Q31 (truncation error ≤ z^5/120 < 1.3e-9, far
// below the 2^-24 of the f32 mantissa). n ≥ 125 (results ≤ 2^-125) gives 0: no subnormals.
fn exp2_fixed(q: u32) -> f32 {
    let n = q >> 20u;
    if (n >= 125u) {
        return 0.0;
    }
    let a = (q >> 16u) & 15u;
    let r = q & 0xFFFFu;
    let z = mul_wide(r << 11u, LN2_Q32).y; // z·2^31 = r·ln2·2^11
    var p = ONE_Q31 - z / 4u;              // Horner: 1 - z(1 - z/2(1 - z/3(1 - z/4)))
    p = ONE_Q31 - mul_q31(z / 3u, p);
    p = ONE_Q31 - mul_q31(z / 2u, p);
    p = ONE_Q31 - mul_q31(z, p);
    let v = mul_q31(exp2_sixteenths[a], p); // 2^(-(q mod 2^20)/2^20) in Q31: [2^30, 2^31]
    if (v >= ONE_Q31) {
        return bitcast<f32>((127u - n) << 23u);
    }
    // v/2^31 in [0.5, 1): exponent 2^(-1-n), mantissa bits v's 23 bits below its leading one.
    return bitcast<f32>(((126u - n) << 23u) | ((max(v, 0x40000000u) >> 7u) & 0x7FFFFFu));
}

// exp((l - max)/T) for the logit l whose key is `key` (see the header).
fn weight(key: u32, l: f32) -> f32 {
    if (key == row_max_key) {
        return 1.0;
    }
    if (key == KEY_NEG_INF || row_max_key == KEY_POS_INF) {
        return 0.0;
    }
    // l < max, so y ≤ 0; -y·2^20 is exact (a power of two) and its truncation is q.
    let y = clamp((l - row_max) * params.logit_scale, -126.0, 0.0);
    return exp2_fixed(u32(-y * 1048576.0));
}

// lowbias32 (C. Wellons' hash prospector): a bijective 32-bit mix with strong avalanche.
fn mix32(x_in: u32) -> u32 {
    var x = x_in;
    x ^= x >> 16u;
    x *= 0x7FEB352Du;
    x ^= x >> 15u;
    x *= 0x846CA68Bu;
    x ^= x >> 16u;
    return x;
}

// Uniform in [0, 1) with 24 bits, keyed by (seed, sequence, step); a bijection of `step` for a
// fixed (seed, sequence), so a stream does not repeat within 2^32 steps.
fn random_uniform(seq: u32, step: u32) -> f32 {
    var h = mix32(params.seed_lo ^ 0x9E3779B9u);
    h = mix32(h ^ params.seed_hi);
    h = mix32(h ^ seq);
    h = mix32(h ^ step);
    return f32(h >> 8u) * (1.0 / 16777216.0);
}

// One search pass: the fixed-order sums of the 8 candidates t_j = prefix + j·2^shift, the
// same in every invocation. Elements at or past `end` are skipped (the pick passes its largest
// candidate: later elements add to none). Candidates that wrap past 2^32 are never used.
fn pass_sums(lid: u32, mode: u32, prefix: u32, shift: u32, floor_key: u32,
             end: u32) -> array<f32, 8> {
    let t_lo = vec4<u32>(prefix) + (vec4<u32>(0u, 1u, 2u, 3u) << vec4<u32>(shift));
    let t_hi = vec4<u32>(prefix) + (vec4<u32>(4u, 5u, 6u, 7u) << vec4<u32>(shift));
    let zero = vec4<f32>(0.0);
    var acc_lo = zero;
    var acc_hi = zero;
    for (var i = lid; i < end; i += WG) {
        let l = logits[row_base + i];
        let key = order_key(l);
        if (mode == MODE_COUNT) {
            acc_lo += select(zero, vec4<f32>(1.0), vec4<u32>(key) >= t_lo);
            acc_hi += select(zero, vec4<f32>(1.0), vec4<u32>(key) >= t_hi);
        } else {
            // Adding +0 leaves a non-negative sum unchanged, so the terms left out cost nothing
            // to the order: each candidate's sum is the sum of its own terms only.
            let w = vec4<f32>(select(0.0, weight(key, l), key >= floor_key));
            if (mode == MODE_MASS) {
                acc_lo += select(zero, w, vec4<u32>(key) >= t_lo);
                acc_hi += select(zero, w, vec4<u32>(key) >= t_hi);
            } else {
                acc_lo += select(zero, w, vec4<u32>(i) < t_lo);
                acc_hi += select(zero, w, vec4<u32>(i) < t_hi);
            }
        }
    }
    // Two levels of 16: three barriers a pass, with the one in workgroupUniformLoad (a binary
    // tree would take 9; lavapipe pays for each). part is free to overwrite: the previous pass
    // read it before its second barrier. level1 and totals are rewritten only after this pass's
    // first barrier, which every invocation reaches after reading the previous totals.
    part[2u * lid] = acc_lo;
    part[2u * lid + 1u] = acc_hi;
    workgroupBarrier();
    // Level 1: invocation j < 16 adds the partials j, j + 16, ..., j + 240 in that order.
    if (lid < 16u) {
        var lo = part[2u * lid];
        var hi = part[2u * lid + 1u];
        for (var k = 1u; k < 16u; k++) {
            lo += part[2u * (lid + 16u * k)];
            hi += part[2u * (lid + 16u * k) + 1u];
        }
        level1[2u * lid] = lo;
        level1[2u * lid + 1u] = hi;
    }
    workgroupBarrier();
    // Level 2: invocation 0 adds the 16 level-1 sums in order; workgroupUniformLoad hands the
    // totals to every invocation as uniform values (they steer the search loop).
    if (lid == 0u) {
        var lo = level1[0];
        var hi = level1[1];
        for (var j = 1u; j < 16u; j++) {
            lo += level1[2u * j];
            hi += level1[2u * j + 1u];
        }
        totals = array<vec4<f32>, 2>(lo, hi);
    }
    let t = workgroupUniformLoad(&totals);
    return array<f32, 8>(t[0].x, t[0].y, t[0].z, t[0].w, t[1].x, t[1].y, t[1].z, t[1].w);
}

// The better of two (key, index) pairs: the larger key, then the lower index.
fn better(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    if (b.x > a.x || (b.x == a.x && b.y < a.y)) {
        return b;
    }
    return a;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = wg.x + wg.y * nwg.x;
    // `row` is uniform across the workgroup, so returning here keeps barriers uniform.
    if (row >= params.batch) {
        return;
    }
    row_base = params.logits_offset + row * params.logits_stride;

    // Argmax: each invocation keeps the first largest key of its strided elements (strict >);
    // merging (two levels of 16, as in pass_sums) prefers the larger key, then the lower index.
    var b = vec2<u32>(0u, 0xFFFFFFFFu); // key 0 is below every real key (-inf's is 0x007FFFFF)
    for (var i = lid; i < params.vocab; i += WG) {
        let key = order_key(logits[row_base + i]);
        if (key > b.x) {
            b = vec2<u32>(key, i);
        }
    }
    best[lid] = b;
    workgroupBarrier();
    if (lid < 16u) {
        for (var k = 1u; k < 16u; k++) {
            b = better(b, best[lid + 16u * k]);
        }
        best[lid] = b;
    }
    workgroupBarrier();
    if (lid == 0u) {
        for (var j = 1u; j < 16u; j++) {
            b = better(b, best[j]);
        }
        // Only this workgroup touches steps[row]: read here, written back at the end.
        best_total = vec4<u32>(b, steps[row], 0u);
    }
    let found = workgroupUniformLoad(&best_total);
    let max_key = found.x;
    var chosen = found.y;
    let step = found.z;

    let t_bits = bitcast<u32>(params.temperature);
    let sampling = t_bits > 0u && t_bits < 0x7F800000u && max_key != KEY_NEG_INF
        && params.vocab > 1u;
    if (sampling) {
        row_max_key = max_key;
        row_max = key_value(max_key);
        let top_k_on = params.top_k > 0u && params.top_k < params.vocab;
        let p_bits = bitcast<u32>(params.top_p);
        let top_p_on = p_bits > 0u && p_bits < 0x3F800000u;
        // Three searches in a row, each for the largest t ≤ limit whose sum passes (≥ goal, or
        // ≤ goal for the pick); the predicate is monotone and holds at 0, so after each pass
        // the answer lies in [prefix, prefix + 2^shift):
        //   top-k (if on): MODE_COUNT, goal top_k -> floor_key = tk;
        //   top-p: MODE_MASS, goal top_p·S(0) -> floor_key = max(tp, tk) (tp ≥ tk anyway),
        //     and S(floor_key), the kept mass; with top-p off, limit 0 makes it one pass that
        //     only sums S(0);
        //   pick: MODE_INDEX, goal u·(kept mass) -> chosen.
        // They share one loop and one pass_sums call site: on lavapipe the cost of a workgroup
        // grows with the number of barriers in the code, executed or not.
        var mode = select(MODE_MASS, MODE_COUNT, top_k_on);
        var limit = select(0u, 0xFFFFFFFFu, top_k_on || top_p_on);
        var goal = f32(params.top_k);
        var floor_key = 0u;
        var pass_index = 0u;
        var prefix = 0u;
        loop {
            let passes = max(1u, (32u - countLeadingZeros(limit) + 2u) / 3u);
            let shift = 3u * (passes - 1u - pass_index);
            // Candidates past `limit` are not tested (prefix ≤ limit, so this cannot wrap).
            let j_max = min(7u, (limit - prefix) >> shift);
            var end = params.vocab;
            if (mode == MODE_INDEX) {
                end = min(end, prefix + (j_max << shift));
            }
            var sums = pass_sums(lid, mode, prefix, shift, floor_key, end);
            if (mode == MODE_MASS && pass_index == 0u) {
                goal = params.top_p * sums[0]; // candidate 0 of the first pass is t = 0: S(0)
            }
            var j_best = 0u;
            for (var j = 1u; j <= j_max; j++) {
                if (select(sums[j] >= goal, sums[j] <= goal, mode == MODE_INDEX)) {
                    j_best = j;
                }
            }
            prefix += j_best << shift;
            pass_index += 1u;
            if (pass_index < passes) {
                continue;
            }
            if (mode == MODE_INDEX) {
                chosen = prefix;
                break;
            }
            if (mode == MODE_COUNT) {
                floor_key = prefix;
                mode = MODE_MASS;
                limit = select(0u, 0xFFFFFFFFu, top_p_on);
            } else {
                floor_key = max(prefix, floor_key);
                mode = MODE_INDEX;
                limit = params.vocab - 1u;
                goal = random_uniform(row, step) * sums[j_best]; // u · S(kept)
            }
            pass_index = 0u;
            prefix = 0u;
        }
    }
    if (lid == 0u) {
        // vocab = 0 leaves the sentinel index: write 0 rather than an id past any vocabulary.
        out[params.out_offset + row * params.out_stride] = select(chosen, 0u, params.vocab == 0u);
        steps[row] = step + 1u;
    }
}
