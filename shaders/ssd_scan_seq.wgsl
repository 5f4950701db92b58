// mamba_wgpu.ssd_scan_seq: Mamba-2 (SSD) over a prompt walked token by token, the state of
// each (sequence, head, channel p) kept in the invocation for the whole walk: the sequential
// twin of the chunked kernels (ssd_chunk_cumsum/_state, ssd_state_passing, ssd_chunk_scan)
// for CPU adapters, where it does the same math with no workgroup memory and no barrier.
//
// Bindings: 0 params (uniform);
//           1 xbc    f32 rows (the conv1d output), read as vec4s: row r holds x[h, p] at
//                    xbc[r*x_stride + x_offset + h*P + p], B[g, n] at
//                    xbc[r*x_stride + b_offset + g*N + n], C[g, n] at ... + c_offset + g*N + n;
//           2 dt_raw f32 rows (the in_proj output): dt before bias at dt_raw[r*dt_stride + dt_offset + h],
//                    and with the gate on, z at dt_raw[r*dt_stride + z_offset + h*P + p];
//           3 heads  per-layer constants packed: A_log[h] at h, D[h] at H + h, dt_bias[h] at 2H + h;
//           4 state  f32 [batch, H, P, N] (read_write, as vec4s), element (b*H + h)*P*N + p*N + n:
//                    read as the initial state, overwritten with the final one;
//           5 y      f32 rows, written at y[r*y_stride + h*P + p] (other elements untouched).
//           Row r = b*len + t of sequence b, token t; group g = h / (H / G); N <= MAX_D_STATE.
//           x_stride, b_offset, c_offset and N are multiples of 4 (checked on the Rust side),
//           so B and C rows are whole vec4s.
// Entry:    Rust-side headers (src/kernels/ssd_scan_seq.rs) declare the entry point `main`,
//           `entry`, which it calls, `spread` and `shuffle`. entry runs walk (prompts: the
//           state in a private array for the whole prompt) or step_tokens (decode: the state
//           updated in the buffer at each token) with the invocation's lane (0..7) and
//           whether B and C are shared: with subgroups of 8 or more lanes, lanes 0..7 load 8
//           consecutive vec4s of B (and of C) at once and every lane takes them, in the step
//           by subgroupBroadcast from fixed lanes (spread: a broadcast from a constant lane is
//           one extract where a shuffle by index loops over the lanes on lavapipe), in the
//           walk by subgroupShuffle (see walk); without, every lane loads them itself.
// Params:   20 x 4 bytes, mirrored by `SsdScanSeqParams` in src/kernels/ssd_scan_seq.rs.
// Geometry: workgroups of 64 invocations, one per channel p of a tile of 64; a workgroup owns
//           one (b, h), so dt, dA, B and C are read at lane-uniform addresses (one load for
//           the workgroup on CPU adapters). The grid is (ceil(P / 64), H, batch): the
//           workgroup's tile, head and sequence with no division by a runtime value (which CPU
//           adapters run lane by lane). Invocations past P compute on a clamped p and write
//           nothing (they take part in the broadcasts).
// Math:     per token t: dt = clamp(softplus(dt_raw + dt_bias[h]), dt_min, dt_max),
//           A = -exp(A_log[h]), dA = exp(dt * A); h[p, n] = dA * h[p, n] + dt * x[p] * B[n];
//           y[p] = sum_n C[n] * h[p, n] + D[h] * x[p], times silu(z[p]) = z / (1 + exp(-z))
//           when gate is 1 (Mamba-2's gate, which its gated RMSNorm applies before the norm:
//           then a plain RMSNorm of this y is that norm). The same recurrence (and clamp) as
//           mamba_wgpu.ssd_state_update, for len tokens.

struct Params {
    batch: u32,
    len: u32,
    nheads: u32,
    head_dim: u32,
    d_state: u32,
    ngroups: u32,
    x_offset: u32,
    x_stride: u32,
    b_offset: u32,
    c_offset: u32,
    dt_offset: u32,
    dt_stride: u32,
    y_stride: u32,
    dt_min: f32,
    dt_max: f32,
    gate: u32,
    z_offset: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> xbc: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> dt_raw: array<f32>;
@group(0) @binding(3) var<storage, read> heads: array<f32>;
@group(0) @binding(4) var<storage, read_write> state: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

const WG: u32 = 64u;
const MAX_D_STATE: u32 = 256u;

// torch's softplus (threshold 20), from exp alone: see mamba_wgpu.ssd_state_update.
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

fn xbc1(i: u32) -> f32 {
    return xbc[i / 4u][i % 4u];
}

// Writes y of row r, head h, channel p: v, gated by silu(z) when the gate is on.
fn store_y(r: u32, h: u32, p: u32, v: f32) {
    let c = h * params.head_dim + p;
    var out = v;
    if (params.gate != 0u) {
        let z = dt_raw[r * params.dt_stride + params.z_offset + c];
        out = v * z / (1.0 + exp(-z));
    }
    y[r * params.y_stride + c] = out;
}

// What one token r brings to head h, channel p (group g).
struct Token {
    // exp(dt · A), dt · x[p], x[p].
    da: f32,
    dtx: f32,
    xv: f32,
    // vec4 indices of the row's B and C for group g.
    bb: u32,
    cb: u32,
}

fn token(r: u32, h: u32, g: u32, p: u32, a: f32, dt_bias: f32) -> Token {
    let raw = dt_raw[r * params.dt_stride + params.dt_offset + h] + dt_bias;
    // min(max()) rather than clamp(): dt_max may be +inf (Mamba-2's default limit).
    let dt = min(max(softplus(raw), params.dt_min), params.dt_max);
    let row = r * params.x_stride;
    let xv = xbc1(row + params.x_offset + h * params.head_dim + p);
    return Token(exp(dt * a), dt * xv, xv, (row + params.b_offset + g * params.d_state) / 4u,
                 (row + params.c_offset + g * params.d_state) / 4u);
}

// Eight consecutive vec4s of a B or C row.
struct V8 {
    v0: vec4<f32>,
    v1: vec4<f32>,
    v2: vec4<f32>,
    v3: vec4<f32>,
    v4: vec4<f32>,
    v5: vec4<f32>,
    v6: vec4<f32>,
    v7: vec4<f32>,
}

// vec4s j0 .. j0 + 7 of the row at vec4 index base (clamped to its last, n4 - 1): shared,
// lane l loads vec4 j0 + l and every lane takes all eight by broadcast from fixed lanes
// (spread); otherwise every lane loads the eight itself.
fn row8(base: u32, j0: u32, n4: u32, lane: u32, share: bool) -> V8 {
    let last = n4 - 1u;
    if (share) {
        return spread(xbc[base + min(j0 + lane, last)]);
    }
    return V8(xbc[base + min(j0, last)], xbc[base + min(j0 + 1u, last)],
              xbc[base + min(j0 + 2u, last)], xbc[base + min(j0 + 3u, last)],
              xbc[base + min(j0 + 4u, last)], xbc[base + min(j0 + 5u, last)],
              xbc[base + min(j0 + 6u, last)], xbc[base + min(j0 + 7u, last)]);
}

// One vec4 j of the state in the buffer (decode): h = dA·h + dt·x·B, stored when the lane
// is live; returns its share of y, C·h. Nothing past n4.
fn step_buf(k: u32, j: u32, n4: u32, tk: Token, b: vec4<f32>, c: vec4<f32>, live: bool) -> f32 {
    if (j >= n4) {
        return 0.0;
    }
    let sv = tk.da * state[k + j] + tk.dtx * b;
    if (live) {
        state[k + j] = sv;
    }
    return dot(c, sv);
}

// The (sequence, head, channel p) an invocation owns, its head's constants and where its
// state starts; valid is false for workgroups past the grid (none with the Rust-side
// geometry), which must return as a whole (the broadcasts need every lane).
struct Chan {
    valid: bool,
    b: u32,
    h: u32,
    g: u32,
    p: u32,
    live: bool,
    a: f32,
    d_skip: f32,
    dt_bias: f32,
    n4: u32,
    state_base: u32,
}

fn chan(wg: vec3<u32>, lid: u32) -> Chan {
    var c: Chan;
    let head_dim = params.head_dim;
    // The grid is (tile of p, head, sequence): no division by a runtime value to find them
    // (CPU adapters run integer division lane by lane).
    c.valid = wg.y < params.nheads && wg.z < params.batch;
    let p_real = wg.x * WG + lid;
    c.live = p_real < head_dim;
    c.p = min(p_real, head_dim - 1u);
    c.h = min(wg.y, params.nheads - 1u);
    c.b = wg.z;
    c.g = c.h / (params.nheads / params.ngroups);
    c.a = -exp(heads[c.h]);
    c.d_skip = heads[params.nheads + c.h];
    c.dt_bias = heads[2u * params.nheads + c.h];
    c.n4 = params.d_state / 4u;
    c.state_base = ((c.b * params.nheads + c.h) * head_dim + c.p) * c.n4;
    return c;
}

// The step entry points (decode): token after token with the state updated in the buffer
// in the same loop, no private copy (for one token, copying N floats in and out costs more
// than the update, and the copy's array costs the invocation its setup even unused: on
// lavapipe a 64-vec4 private array made a one-token dispatch 40% slower).
fn step_tokens(wg: vec3<u32>, lid: u32, lane: u32, share: bool) {
    let c = chan(wg, lid);
    if (!c.valid) {
        return;
    }
    for (var t = 0u; t < params.len; t++) {
        let r = c.b * params.len + t;
        let tk = token(r, c.h, c.g, c.p, c.a, c.dt_bias);
        var acc = 0.0;
        for (var j0 = 0u; j0 < c.n4; j0 += 8u) {
            let bv = row8(tk.bb, j0, c.n4, lane, share);
            let cv = row8(tk.cb, j0, c.n4, lane, share);
            let k = c.state_base;
            acc += step_buf(k, j0, c.n4, tk, bv.v0, cv.v0, c.live)
                + step_buf(k, j0 + 1u, c.n4, tk, bv.v1, cv.v1, c.live)
                + step_buf(k, j0 + 2u, c.n4, tk, bv.v2, cv.v2, c.live)
                + step_buf(k, j0 + 3u, c.n4, tk, bv.v3, cv.v3, c.live)
                + step_buf(k, j0 + 4u, c.n4, tk, bv.v4, cv.v4, c.live)
                + step_buf(k, j0 + 5u, c.n4, tk, bv.v5, cv.v5, c.live)
                + step_buf(k, j0 + 6u, c.n4, tk, bv.v6, cv.v6, c.live)
                + step_buf(k, j0 + 7u, c.n4, tk, bv.v7, cv.v7, c.live);
        }
        if (c.live) {
            store_y(r, c.h, c.p, acc + c.d_skip * tk.xv);
        }
    }
}

// The walk entry points (prompts): the state's N floats in a private array of vec4s for the
// whole prompt, read from the buffer at the start and written back at the end.
fn walk(wg: vec3<u32>, lid: u32, lane: u32, share: bool) {
    let c = chan(wg, lid);
    if (!c.valid) {
        return;
    }
    var s: array<vec4<f32>, 64>;
    for (var j = 0u; j < c.n4; j++) {
        s[j] = state[c.state_base + j];
    }
    for (var t = 0u; t < params.len; t++) {
        let r = c.b * params.len + t;
        let tk = token(r, c.h, c.g, c.p, c.a, c.dt_bias);
        var acc = 0.0;
        // B and C by a shuffle loop here, not row8's unrolled broadcasts: beside the private
        // array the unrolled form ran 9% slower on lavapipe (62 vs 68 ms for a 512-token
        // mamba2-130m layer), while the step gains a little from it.
        for (var j0 = 0u; j0 < c.n4; j0 += 8u) {
            var mb = vec4<f32>(0.0);
            var mc = vec4<f32>(0.0);
            if (share) {
                let jl = min(j0 + lane, c.n4 - 1u);
                mb = xbc[tk.bb + jl];
                mc = xbc[tk.cb + jl];
            }
            for (var i = 0u; i < 8u; i++) {
                let j = j0 + i;
                if (j < c.n4) {
                    var vb: vec4<f32>;
                    var vc: vec4<f32>;
                    if (share) {
                        vb = shuffle(mb, i);
                        vc = shuffle(mc, i);
                    } else {
                        vb = xbc[tk.bb + j];
                        vc = xbc[tk.cb + j];
                    }
                    let sv = tk.da * s[j] + tk.dtx * vb;
                    s[j] = sv;
                    acc += dot(vc, sv);
                }
            }
        }
        if (c.live) {
            store_y(r, c.h, c.p, acc + c.d_skip * tk.xv);
        }
    }
    if (c.live) {
        for (var j = 0u; j < c.n4; j++) {
            state[c.state_base + j] = s[j];
        }
    }
}
