// mamba_wgpu.ssd_state_update: Mamba-2 (SSD) state update for decoding, one token per sequence.
//
// Bindings: 0 params (uniform);
//           1 xbc    f32 rows (the conv1d output): row r holds x[h, p] at
//                    xbc[r*x_stride + x_offset + h*P + p], B[g, n] at
//                    xbc[r*x_stride + b_offset + g*N + n], C[g, n] at ... + c_offset + g*N + n;
//           2 dt_raw f32 rows (the in_proj output): dt before bias at dt_raw[r*dt_stride + dt_offset + h];
//           3 heads  per-layer constants packed: A_log[h] at h, D[h] at H + h, dt_bias[h] at 2H + h;
//           4 state  f32 [batch, H, P, N] (read_write), element (b*H + h)*P*N + p*N + n, in place;
//                    declared by the Rust-side header (src/kernels/ssd_state_update.rs) as f32s
//                    (mamba_wgpu.ssd_state_update) or, when N % 4 == 0, as vec4s of 4 states
//                    (mamba_wgpu.ssd_state_update_vec4): the type SV of SW states, with
//                    sdot(c, s) the dot product and xbc_sv(i) the SW floats of xbc from i.
//           5 y      f32 rows, written at y[r*y_stride + h*P + p] (other elements untouched).
//           Row r = b (one token per sequence); group g = h / (H / G); N = d_state <= MAX_D_STATE.
// Params:   16 x 4 bytes, mirrored by `SsdStateUpdateParams` in src/kernels/ssd_state_update.rs.
// Geometry: workgroups of 256 invocations = 8 rows x 32 state lanes. A workgroup owns one
//           (b, h) and a tile of TILE_P = 16 head channels p; invocation (row, lane) updates
//           p = p0 + row and p0 + row + 8, states n = lane, lane + 32, ... < N, so 32 neighbours
//           touch 32 consecutive floats of one state row (coalesced), and each state element is
//           read and written exactly once. batch * H * ceil(P / 16) workgroups, folded into (x, y).
// Math:     dt = clamp(softplus(dt_raw + dt_bias[h]), dt_min, dt_max), A = -exp(A_log[h]),
//           dA = exp(dt * A);  h[p, n] = dA * h[p, n] + dt * x[p] * B[n];
//           y[p] = sum_n C[n] * h[p, n] + D[h] * x[p].
//           The clamp is applied here too (transformers skips it in decode), so decoding a prompt
//           token by token equals the chunked prefill.

struct Params {
    batch: u32,
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
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> xbc: array<f32>;
@group(0) @binding(2) var<storage, read> dt_raw: array<f32>;
@group(0) @binding(3) var<storage, read> heads: array<f32>;
// @group(0) @binding(4) state: declared by the header.
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

const WG: u32 = 256u;
const LANES: u32 = 32u;
const ROWS: u32 = WG / LANES;
const ROWS_PER_INVOCATION: u32 = 2u;
const TILE_P: u32 = ROWS * ROWS_PER_INVOCATION;
const MAX_D_STATE: u32 = 256u;

// (2 * 256 + 16 + 16 * 32) * 4 + 8 = 4,168 bytes of workgroup memory (B and C held as SV,
// the same bytes whatever SW is).
var<workgroup> b_group: array<SV, MAX_D_STATE / SW>;
var<workgroup> c_group: array<SV, MAX_D_STATE / SW>;
var<workgroup> x_tile: array<f32, TILE_P>;
// partial[i * LANES + lane]: lane's share of y for tile channel i.
var<workgroup> partial: array<f32, TILE_P * LANES>;
// (dt, dA) of the head, computed once by invocation 0.
var<workgroup> dt_da: vec2<f32>;

// torch's softplus (threshold 20) as max(v, 0) + log1p(exp(-|v|)), with log1p(e) for e in
// (0, 1] from 2 atanh(s) = 2 s (1 + s^2/3 + s^4/5 + ...), s = e / (2 + e) <= 1/3. This needs
// only exp and arithmetic: WGSL's log is allowed an absolute error of 2^-21 near 1, which the
// usual log(1 + e) tricks turn into a large relative error when v is very negative and the
// result tiny. Truncating after s^14/15 leaves a relative error below (1/9)^8 / 17 < 2e-9.
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

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let n_heads = params.nheads;
    let head_dim = params.head_dim;
    let n_state = params.d_state;
    let tiles = (head_dim + TILE_P - 1u) / TILE_P;
    let index = wg.x + wg.y * nwg.x;
    // `index` is uniform across the workgroup, so returning here keeps the barriers uniform.
    if (index >= params.batch * n_heads * tiles) {
        return;
    }
    let bh = index / tiles;
    let b = bh / n_heads;
    let h = bh % n_heads;
    let p0 = (index % tiles) * TILE_P;
    let g = h / (n_heads / params.ngroups);
    let xrow = b * params.x_stride;

    // Stage what every invocation shares: B and C of the group, the tile's x, and (dt, dA).
    let b_base = xrow + params.b_offset + g * n_state;
    let c_base = xrow + params.c_offset + g * n_state;
    let n_sv = n_state / SW;
    for (var n = lid; n < n_sv; n += WG) {
        b_group[n] = xbc_sv(b_base + n * SW);
        c_group[n] = xbc_sv(c_base + n * SW);
    }
    if (lid < TILE_P && p0 + lid < head_dim) {
        x_tile[lid] = xbc[xrow + params.x_offset + h * head_dim + p0 + lid];
    }
    if (lid == 0u) {
        let raw = dt_raw[b * params.dt_stride + params.dt_offset + h] + heads[2u * n_heads + h];
        // min(max()) rather than clamp(): dt_max may be +inf (Mamba-2's default limit).
        let dt = min(max(softplus(raw), params.dt_min), params.dt_max);
        dt_da = vec2<f32>(dt, exp(dt * -exp(heads[h])));
    }
    workgroupBarrier();

    let dt = dt_da.x;
    let da = dt_da.y;
    let lane = lid % LANES;
    let r0 = lid / LANES;
    for (var k = 0u; k < ROWS_PER_INVOCATION; k++) {
        let i = r0 + k * ROWS;
        let p = p0 + i;
        var acc = 0.0;
        if (p < head_dim) {
            let dtx = dt * x_tile[i];
            let base = (bh * head_dim + p) * n_sv;
            for (var n = lane; n < n_sv; n += LANES) {
                let s = da * state[base + n] + dtx * b_group[n];
                state[base + n] = s;
                acc += sdot(c_group[n], s);
            }
        }
        partial[i * LANES + lane] = acc;
    }
    workgroupBarrier();

    // One invocation per tile channel sums the 32 lanes' shares: one barrier instead of a
    // five-step tree (barriers are what cost on CPU implementations such as lavapipe).
    if (lid < TILE_P && p0 + lid < head_dim) {
        var s = 0.0;
        for (var l = 0u; l < LANES; l++) {
            s += partial[lid * LANES + l];
        }
        y[b * params.y_stride + h * head_dim + p0 + lid] = s + heads[n_heads + h] * x_tile[lid];
    }
}
