// mamba_wgpu.selective_state_update: Mamba-1 selective state update for decoding (one token per
// sequence), same params, bindings and math as mamba_wgpu.selective_scan.
//
// Bindings: 0 params (uniform);
//           1 dt  f32 rows, dt before bias/softplus at dt[dt_offset + r*dt_stride + d] (read);
//             with dt_rank = k > 0, dt_proj's input (k values at dt[dt_offset + r*dt_stride + j]),
//             dt_proj then applied here (see delta());
//           2 bc  f32 rows, B_t[n] at bc[bc_offset + r*bc_stride + n], C_t[n] at the same + d_state;
//           3 x   f32 rows at x[x_offset + r*x_stride + d];  4 z (gate) at z[z_offset + r*z_stride + d];
//           5 ssm per-layer constants packed (read as vec4s by ssm4(i), declared by a Rust-side
//             header with the binding: from a storage buffer, or from an rgba32float texture
//             holding vec4 i at texel (i % 4096, i / 4096); ssm1(i) is float i): A_log[d, n]
//             at float d*N + n, D[d] at d_inner*N + d, dt_bias[d] at d_inner*N + d_inner + d,
//             and when dt_rank = k > 0 dt_proj's weight W[d, j] at w0 + d*k4 + j, with
//             w0 = d_inner*(N + 2) rounded up to a multiple of 4 and k4 = k rounded up to a
//             multiple of 4 (rows zero-padded), so each channel's row is whole vec4s; the
//             buffer's length is a multiple of 4 floats (pack_ssm in
//             src/kernels/selective_scan.rs writes this layout);
//           6 state f32 [batch, d_inner, N] (read_write), updated in place;
//           7 y f32 rows, written at y[r*y_stride + d].
//           Row r = b*len + t (r = b for decode); N = d_state <= MAX_D_STATE.
// Params:   16 u32 (64 bytes), mirrored by `SelectiveScanParams` in src/kernels/selective_scan.rs.
// Geometry: workgroups of 64 invocations, one invocation per (b, d): ceil(d_inner / 64) groups
//           per sequence, batch of those, folded into (x, y). A workgroup never spans two
//           sequences, so the token's B and C (2N floats, shared by all channels) are read at
//           lane-uniform addresses: one load feeds the whole workgroup on CPU adapters and hits
//           the same cache line on GPUs. No workgroup memory, no barriers. Lanes past d_inner
//           compute on a clamped channel and write nothing; the only early exit is
//           workgroup-uniform.
// Lanes:    a Rust-side header (src/kernels/selective_state_update.rs) declares the entry
//           point `main`, which calls update() with the lane (0..7) and whether values are
//           shared: with subgroups of 8 or more lanes, lanes 0..7 load 8 consecutive values of
//           B, of C and of dt_proj's input and every lane takes them by subgroupBroadcast (one
//           load instruction for eight, which is what costs on CPU adapters); without, every
//           lane loads them itself.
// Math:     Δ = softplus(dt + dt_bias) (x if x > 20 else log1p(exp(x))), A = -exp(A_log),
//           h[n] = exp(Δ A[n]) h[n] + Δ B[n] x,   y = Σ_n C[n] h[n] (+ D x if flags & 2)
//           (· silu(z) if flags & 1), token after token for len tokens: the sequential form of
//           mamba_wgpu.selective_scan. With N <= 16 the state and A live in registers (4 vec4s
//           each, lanes past N held at 0) for the whole walk and y sums 4 states per dot;
//           a larger N walks the state in the buffer, one state at a time. Decode uses len = 1;
//           on CPU adapters (lavapipe), where the parallel scan's barriers and gathers cost more
//           than walking the tokens, prefill uses it too.

struct Params {
    batch: u32,
    len: u32,
    d_inner: u32,
    d_state: u32,
    dt_offset: u32,
    dt_stride: u32,
    bc_offset: u32,
    bc_stride: u32,
    x_offset: u32,
    x_stride: u32,
    z_offset: u32,
    z_stride: u32,
    y_stride: u32,
    flags: u32,
    dt_rank: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> dt: array<f32>;
@group(0) @binding(2) var<storage, read> bc: array<f32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read> z: array<f32>;
// @group(0) @binding(5) ssm: declared by the constants header with ssm4().
@group(0) @binding(6) var<storage, read_write> state: array<f32>;
@group(0) @binding(7) var<storage, read_write> y: array<f32>;

const WG: u32 = 64u;
const MAX_D_STATE: u32 = 256u;
// The largest N kept in registers.
const REG_STATES: u32 = 16u;
const FLAG_GATE: u32 = 1u;
const FLAG_SKIP: u32 = 2u;

// torch's softplus (threshold 20): max(v, 0) + log1p(exp(-|v|)). WGSL has no log1p, and
// Vulkan lets log() be off by 2^-21 absolute near 1, which is a large relative error for the
// small steps Mamba uses; so log1p(e) = 2·atanh(s) with s = e / (2 + e) ≤ 1/3, summed as the
// odd series 2s(1 + s²/3 + s⁴/5 + ...) to s^15 (truncation below 2e-9 relative), from exp alone.
fn softplus(v: f32) -> f32 {
    if (v > 20.0) {
        return v;
    }
    let e = exp(-abs(v));
    let s = e / (2.0 + e);
    let t = s * s;
    let series = 1.0 + t * (1.0 / 3.0 + t * (1.0 / 5.0 + t * (1.0 / 7.0 + t * (1.0 / 9.0
        + t * (1.0 / 11.0 + t * (1.0 / 13.0 + t * (1.0 / 15.0)))))));
    return max(v, 0.0) + 2.0 * s * series;
}

// Float i of the packed constants.
fn ssm1(i: u32) -> f32 {
    return ssm4(i / 4u)[i % 4u];
}

// Δ of row r, channel d: softplus(dt + dt_bias). With dt_rank = 0, dt is read; otherwise it
// is dt_proj applied here, Σ_j W[d, j]·dt_in[j] over the row's first dt_rank x_proj outputs
// (lane-uniform addresses), W read a vec4 (4 columns of the channel's row) at a time: on CPU
// adapters each load instruction costs about the same whatever its width, and 12 vec4 loads
// for mamba-130m's rank 48 took 0.08 ms less per layer than 48 scalar ones. Summed in f32,
// 4 columns per dot, in j order.
fn delta(r: u32, d: u32, dt_bias: f32, lane: u32, share: bool) -> f32 {
    let base = params.dt_offset + r * params.dt_stride;
    if (params.dt_rank == 0u) {
        return softplus(dt[base + d] + dt_bias);
    }
    let d_inner = params.d_inner;
    let rank = params.dt_rank;
    // vec4 index of the channel's row: w0 / 4 + d * k4 / 4.
    var w = (d_inner * (params.d_state + 2u) + 3u) / 4u + d * ((rank + 3u) / 4u);
    var acc = 0.0;
    let last = rank - 1u;
    for (var j0 = 0u; j0 < rank; j0 += 8u) {
        // dt_in[j0 .. j0 + 7] (clamped to the last); shared: lane l loads j0 + l.
        let v = row8(dt[base + min(j0 + lane, last)], base, j0, last, share, 1u);
        // Columns past k meet W's zero padding with x = 0 (never the next row's B).
        let col = vec4<u32>(j0) + vec4<u32>(0u, 1u, 2u, 3u);
        acc += dot(ssm4(w), select(vec4<f32>(0.0), v.lo, col < vec4<u32>(rank)));
        if (j0 + 4u < rank) {
            acc += dot(ssm4(w + 1u), select(vec4<f32>(0.0), v.hi, col + 4u < vec4<u32>(rank)));
        }
        w += 2u;
    }
    return softplus(acc + dt_bias);
}

// Eight consecutive values of a row as two vec4s.
struct V8 {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

// Values j0 .. j0 + 7 of the row at base in buffer `which` (1: dt, 2: bc), each index clamped
// to last. Shared: lane l has loaded value j0 + l as `mine` and every lane takes all eight
// from fixed lanes (spread; on lavapipe a shuffle by a variable lane loops over the lanes,
// a broadcast from a constant one is one extract); otherwise each lane loads the eight.
fn row8(mine: f32, base: u32, j0: u32, last: u32, share: bool, which: u32) -> V8 {
    if (share) {
        return spread(mine);
    }
    var v: array<f32, 8>;
    for (var i = 0u; i < 8u; i++) {
        let k = base + min(j0 + i, last);
        if (which == 1u) {
            v[i] = dt[k];
        } else {
            v[i] = bc[k];
        }
    }
    return V8(vec4<f32>(v[0], v[1], v[2], v[3]), vec4<f32>(v[4], v[5], v[6], v[7]));
}

// v with the lanes n0 + i >= N set to 0 (so those lanes of h stay 0).
fn below(v: vec4<f32>, n0: u32, n_state: u32) -> vec4<f32> {
    return select(vec4<f32>(0.0), v, vec4<u32>(n0) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(n_state));
}

// A[d, n0 + i] = -exp(A_log[d, n0 + i]) for the lanes below N, 0 past N.
fn a4(d: u32, n0: u32, n_state: u32) -> vec4<f32> {
    if (n_state % 4u == 0u) {
        // Whole vec4s of the constants (d·N + n0 is a multiple of 4).
        return below(-exp(ssm4((d * n_state + n0) / 4u)), n0, n_state);
    }
    var v = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (n0 + i < n_state) {
            v[i] = -exp(ssm1(d * n_state + n0 + i));
        }
    }
    return v;
}

// state[base + n0 + i] for the lanes below N, 0 past N.
fn h4(base: u32, n0: u32, n_state: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (n0 + i < n_state) {
            v[i] = state[base + n0 + i];
        }
    }
    return v;
}

fn store_h4(base: u32, n0: u32, n_state: u32, v: vec4<f32>) {
    for (var i = 0u; i < 4u; i++) {
        if (n0 + i < n_state) {
            state[base + n0 + i] = v[i];
        }
    }
}

// y for one token from its sum s = C·h: the skip and the gate as the flags ask.
fn finish(s0: f32, xv: f32, d_skip: f32, zi: u32) -> f32 {
    var s = s0;
    if ((params.flags & FLAG_SKIP) != 0u) {
        s += d_skip * xv;
    }
    if ((params.flags & FLAG_GATE) != 0u) {
        let zv = z[zi];
        s *= zv / (1.0 + exp(-zv));
    }
    return s;
}

fn update(wg: vec3<u32>, nwg: vec3<u32>, lid: u32, lane: u32, share: bool) {
    let d_inner = params.d_inner;
    let n_state = params.d_state;
    let len = params.len;
    let blocks = (d_inner + WG - 1u) / WG;
    let group = wg.x + wg.y * nwg.x;
    let b = group / blocks;
    // A workgroup-uniform exit only (the lanes exchange values below). Lanes past the real
    // channels compute channel d_inner - 1 again and write nothing.
    if (group >= params.batch * blocks) {
        return;
    }
    let d_real = (group % blocks) * WG + lid;
    let live = d_real < d_inner;
    let d = min(d_real, d_inner - 1u);
    let d_skip = ssm1(d_inner * n_state + d);
    let dt_bias = ssm1(d_inner * n_state + d_inner + d);
    let state_base = (b * d_inner + d) * n_state;

    if (n_state <= REG_STATES) {
        let a0 = a4(d, 0u, n_state);
        let a1 = a4(d, 4u, n_state);
        let a2 = a4(d, 8u, n_state);
        let a3 = a4(d, 12u, n_state);
        var h0 = h4(state_base, 0u, n_state);
        var h1 = h4(state_base, 4u, n_state);
        var h2 = h4(state_base, 8u, n_state);
        var h3 = h4(state_base, 12u, n_state);
        let last = n_state - 1u;
        for (var t = 0u; t < len; t++) {
            let r = b * len + t;
            let bb = params.bc_offset + r * params.bc_stride;
            let cb = bb + n_state;
            // B and C, states 0..7 and 8..15 (clamped to N - 1, masked to 0 past N below).
            let b0 = row8(bc[bb + min(lane, last)], bb, 0u, last, share, 2u);
            let c0 = row8(bc[cb + min(lane, last)], cb, 0u, last, share, 2u);
            var b1 = V8(vec4<f32>(0.0), vec4<f32>(0.0));
            var c1 = V8(vec4<f32>(0.0), vec4<f32>(0.0));
            if (n_state > 8u) {
                b1 = row8(bc[bb + min(8u + lane, last)], bb, 8u, last, share, 2u);
                c1 = row8(bc[cb + min(8u + lane, last)], cb, 8u, last, share, 2u);
            }
            let dlt = delta(r, d, dt_bias, lane, share);
            let xv = x[params.x_offset + r * params.x_stride + d];
            let dx = dlt * xv;
            // Blocks wholly past N are skipped (a uniform branch); their lanes stay 0.
            h0 = exp(dlt * a0) * h0 + dx * below(b0.lo, 0u, n_state);
            var s = dot(below(c0.lo, 0u, n_state), h0);
            if (n_state > 4u) {
                h1 = exp(dlt * a1) * h1 + dx * below(b0.hi, 4u, n_state);
                s += dot(below(c0.hi, 4u, n_state), h1);
            }
            if (n_state > 8u) {
                h2 = exp(dlt * a2) * h2 + dx * below(b1.lo, 8u, n_state);
                s += dot(below(c1.lo, 8u, n_state), h2);
            }
            if (n_state > 12u) {
                h3 = exp(dlt * a3) * h3 + dx * below(b1.hi, 12u, n_state);
                s += dot(below(c1.hi, 12u, n_state), h3);
            }
            if (live) {
                y[r * params.y_stride + d] =
                    finish(s, xv, d_skip, params.z_offset + r * params.z_stride + d);
            }
        }
        if (live) {
            store_h4(state_base, 0u, n_state, h0);
            store_h4(state_base, 4u, n_state, h1);
            store_h4(state_base, 8u, n_state, h2);
            store_h4(state_base, 12u, n_state, h3);
        }
        return;
    }

    for (var t = 0u; t < len; t++) {
        let r = b * len + t;
        let bb = params.bc_offset + r * params.bc_stride;
        let dlt = delta(r, d, dt_bias, lane, share);
        let xv = x[params.x_offset + r * params.x_stride + d];
        var s = 0.0;
        for (var n = 0u; n < n_state; n++) {
            let a = exp(dlt * -exp(ssm1(d * n_state + n)));
            let h = a * state[state_base + n] + dlt * bc[bb + n] * xv;
            if (live) {
                state[state_base + n] = h;
            }
            s += bc[bb + n_state + n] * h;
        }
        if (live) {
            y[r * params.y_stride + d] =
                finish(s, xv, d_skip, params.z_offset + r * params.z_stride + d);
        }
    }
}
