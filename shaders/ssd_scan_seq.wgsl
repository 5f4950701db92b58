// mamba_wgpu.ssd_scan_seq: Mamba-2 (SSD) over a prompt walked token by token, the state of
// each (sequence, head, channel p) kept in the invocation for the whole walk: the sequential
// twin of the chunked kernels (ssd_chunk_cumsum/_state, ssd_state_passing, ssd_chunk_scan)
// for CPU adapters, where it does the same math with no workgroup memory and no barrier.
//
// Bindings: 0 params (uniform);
//           1 xbc    f32 rows (the conv1d output), read as vec4s: row r holds x[h, p] at
//                    xbc[r*x_stride + x_offset + h*P + p], B[g, n] at
//                    xbc[r*x_stride + b_offset + g*N + n], C[g, n] at ... + c_offset + g*N + n;
//           2 dt_raw f32 rows (the in_proj output): dt before bias at dt_raw[r*dt_stride + dt_offset + h];
//           3 heads  per-layer constants packed: A_log[h] at h, D[h] at H + h, dt_bias[h] at 2H + h;
//           4 state  f32 [batch, H, P, N] (read_write, as vec4s), element (b*H + h)*P*N + p*N + n:
//                    read as the initial state, overwritten with the final one;
//           5 y      f32 rows, written at y[r*y_stride + h*P + p] (other elements untouched).
//           Row r = b*len + t of sequence b, token t; group g = h / (H / G); N <= MAX_D_STATE.
//           x_stride, b_offset, c_offset and N are multiples of 4 (checked on the Rust side),
//           so B and C rows are whole vec4s.
// Lanes:    a Rust-side header (src/kernels/ssd_scan_seq.rs) declares the entry point `main`,
//           which calls scan() with the invocation's lane (0..7) and whether B and C are
//           shared: with subgroups of 8 or more lanes, lanes 0..7 load 8 consecutive vec4s of
//           B (and of C) at once and every lane takes them by subgroupShuffle (one load for
//           eight); without, every lane loads them itself.
// Params:   16 x 4 bytes, mirrored by `SsdScanSeqParams` in src/kernels/ssd_scan_seq.rs.
// Geometry: workgroups of 64 invocations, one per channel p of a tile of 64; a workgroup owns
//           one (b, h), so dt, dA, B and C are read at lane-uniform addresses (one load for
//           the workgroup on CPU adapters). batch * H * ceil(P / 64) workgroups, folded into
//           (x, y). Invocations past P compute on a clamped p and write nothing (they take
//           part in the shuffles).
// Math:     per token t: dt = clamp(softplus(dt_raw + dt_bias[h]), dt_min, dt_max),
//           A = -exp(A_log[h]), dA = exp(dt * A); h[p, n] = dA * h[p, n] + dt * x[p] * B[n];
//           y[p] = sum_n C[n] * h[p, n] + D[h] * x[p]. The same recurrence (and clamp) as
//           mamba_wgpu.ssd_state_update, for len tokens; the state's N floats live in a
//           private array of vec4s and touch the buffer only at the start and the end (for
//           one token, decode, they are updated in the buffer directly).

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
    _pad0: u32,
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

// vec4s of B and C.
struct BC {
    b: vec4<f32>,
    c: vec4<f32>,
}

// Shared: lane l loads vec4 j0 + l of B and of C (clamped to the last), for bc_at.
fn bc_lanes(tk: Token, j0: u32, n4: u32, lane: u32, share: bool) -> BC {
    if (!share) {
        return BC(vec4<f32>(0.0), vec4<f32>(0.0));
    }
    let jl = min(j0 + lane, n4 - 1u);
    return BC(xbc[tk.bb + jl], xbc[tk.cb + jl]);
}

// vec4 j0 + i of B and C: taken from lane i's bc_lanes when shared, loaded here otherwise.
fn bc_at(tk: Token, mine: BC, j0: u32, i: u32, share: bool) -> BC {
    if (share) {
        return BC(shuffle(mine.b, i), shuffle(mine.c, i));
    }
    return BC(xbc[tk.bb + j0 + i], xbc[tk.cb + j0 + i]);
}

fn scan(wg: vec3<u32>, nwg: vec3<u32>, lid: u32, lane: u32, share: bool) {
    let n_heads = params.nheads;
    let head_dim = params.head_dim;
    let n_state = params.d_state;
    let len = params.len;
    let tiles = (head_dim + WG - 1u) / WG;
    let index = wg.x + wg.y * nwg.x;
    // Workgroup-uniform exit only (the shuffles need every lane).
    if (index >= params.batch * n_heads * tiles) {
        return;
    }
    let p_real = (index % tiles) * WG + lid;
    let live = p_real < head_dim;
    let p = min(p_real, head_dim - 1u);
    let bh = index / tiles;
    let b = bh / n_heads;
    let h = bh % n_heads;
    let g = h / (n_heads / params.ngroups);
    let a = -exp(heads[h]);
    let d_skip = heads[n_heads + h];
    let dt_bias = heads[2u * n_heads + h];
    let n4 = n_state / 4u;
    let state_base = (bh * head_dim + p) * n4;

    // One token (decode): the state streams from the buffer and back in the same loop, with
    // no private copy (copying N floats in and out costs more than the update). The grid
    // term (always true) keeps lavapipe from specialising the shader on len and recompiling
    // it at every dispatch (see mamba_wgpu.linear_tex's `single`).
    if ((len == 1u) & (nwg.y != 0u)) {
        let tk = token(b, h, g, p, a, dt_bias);
        var acc = 0.0;
        for (var j0 = 0u; j0 < n4; j0 += 8u) {
            let mine = bc_lanes(tk, j0, n4, lane, share);
            for (var i = 0u; i < 8u; i++) {
                let j = j0 + i;
                if (j < n4) {
                    let v = bc_at(tk, mine, j0, i, share);
                    let sv = tk.da * state[state_base + j] + tk.dtx * v.b;
                    if (live) {
                        state[state_base + j] = sv;
                    }
                    acc += dot(v.c, sv);
                }
            }
        }
        if (live) {
            y[b * params.y_stride + h * head_dim + p] = acc + d_skip * tk.xv;
        }
        return;
    }

    var s: array<vec4<f32>, 64>;
    for (var j = 0u; j < n4; j++) {
        s[j] = state[state_base + j];
    }

    for (var t = 0u; t < len; t++) {
        let r = b * len + t;
        let tk = token(r, h, g, p, a, dt_bias);
        var acc = 0.0;
        for (var j0 = 0u; j0 < n4; j0 += 8u) {
            let mine = bc_lanes(tk, j0, n4, lane, share);
            for (var i = 0u; i < 8u; i++) {
                let j = j0 + i;
                if (j < n4) {
                    let v = bc_at(tk, mine, j0, i, share);
                    let sv = tk.da * s[j] + tk.dtx * v.b;
                    s[j] = sv;
                    acc += dot(v.c, sv);
                }
            }
        }
        if (live) {
            y[r * params.y_stride + h * head_dim + p] = acc + d_skip * tk.xv;
        }
    }

    if (live) {
        for (var j = 0u; j < n4; j++) {
            state[state_base + j] = s[j];
        }
    }
}
