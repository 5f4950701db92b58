// mamba_wgpu.selective_state_update: Mamba-1 selective state update for decoding (one token per
// sequence), same params, bindings and math as mamba_wgpu.selective_scan.
//
// Bindings: 0 params (uniform);
//           1 dt  f32 rows, dt before bias/softplus at dt[dt_offset + r*dt_stride + d] (read);
//           2 bc  f32 rows, B_t[n] at bc[bc_offset + r*bc_stride + n], C_t[n] at the same + d_state;
//           3 x   f32 rows at x[x_offset + r*x_stride + d];  4 z (gate) at z[z_offset + r*z_stride + d];
//           5 ssm per-layer constants packed: A_log[d, n] at ssm[d*N + n], D[d] at
//             ssm[d_inner*N + d], dt_bias[d] at ssm[d_inner*N + d_inner + d];
//           6 state f32 [batch, d_inner, N] (read_write), updated in place;
//           7 y f32 rows, written at y[r*y_stride + d].
//           Row r = b*len + t (r = b for decode); N = d_state <= MAX_D_STATE.
// Params:   16 u32 (64 bytes), mirrored by `SelectiveScanParams` in src/kernels/selective_scan.rs.
// Geometry: workgroups of 64 invocations, one invocation per (b, d): ceil(d_inner / 64) groups
//           per sequence, batch of those, folded into (x, y). A workgroup never spans two
//           sequences, so it stages the token's B and C (2N floats, shared by all channels) in
//           workgroup memory once instead of every invocation reading them.
// Math:     Δ = softplus(dt + dt_bias) (x if x > 20 else log1p(exp(x))), A = -exp(A_log),
//           h[n] = exp(Δ A[n]) h[n] + Δ B[n] x,   y = Σ_n C[n] h[n] (+ D x if flags & 2)
//           (· silu(z) if flags & 1). Meant for len = 1; a longer len is walked sequentially
//           (token by token, the state kept in the buffer), which is correct but slow.

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
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> dt: array<f32>;
@group(0) @binding(2) var<storage, read> bc: array<f32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read> z: array<f32>;
@group(0) @binding(5) var<storage, read> ssm: array<f32>;
@group(0) @binding(6) var<storage, read_write> state: array<f32>;
@group(0) @binding(7) var<storage, read_write> y: array<f32>;

const WG: u32 = 64u;
const MAX_D_STATE: u32 = 256u;
const FLAG_GATE: u32 = 1u;
const FLAG_SKIP: u32 = 2u;

// 2 * 256 * 4 = 2 KiB of workgroup memory.
var<workgroup> b_row: array<f32, MAX_D_STATE>;
var<workgroup> c_row: array<f32, MAX_D_STATE>;

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

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let d_inner = params.d_inner;
    let n_state = params.d_state;
    let len = params.len;
    let blocks = (d_inner + WG - 1u) / WG;
    let group = wg.x + wg.y * nwg.x;
    // `group` is uniform across the workgroup, so returning here keeps the barriers uniform.
    if (group >= params.batch * blocks) {
        return;
    }
    let b = group / blocks;
    let d = (group % blocks) * WG + lid;
    // Invocations past d_inner stay to help stage B and C and to reach the barriers.
    let live = d < d_inner;
    let dc = min(d, d_inner - 1u);
    let d_skip = ssm[d_inner * n_state + dc];
    let dt_bias = ssm[d_inner * n_state + d_inner + dc];
    let state_base = (b * d_inner + dc) * n_state;

    for (var t = 0u; t < len; t++) {
        let r = b * len + t;
        let bc_row = params.bc_offset + r * params.bc_stride;
        // Orders the previous token's reads of b_row/c_row before they are overwritten.
        workgroupBarrier();
        for (var n = lid; n < n_state; n += WG) {
            b_row[n] = bc[bc_row + n];
            c_row[n] = bc[bc_row + n_state + n];
        }
        workgroupBarrier();
        if (live) {
            let dlt = softplus(dt[params.dt_offset + r * params.dt_stride + d] + dt_bias);
            let xv = x[params.x_offset + r * params.x_stride + d];
            var s = 0.0;
            for (var n = 0u; n < n_state; n++) {
                let a = exp(dlt * -exp(ssm[d * n_state + n]));
                let h = a * state[state_base + n] + dlt * b_row[n] * xv;
                state[state_base + n] = h;
                s += c_row[n] * h;
            }
            if ((params.flags & FLAG_SKIP) != 0u) {
                s += d_skip * xv;
            }
            if ((params.flags & FLAG_GATE) != 0u) {
                let zv = z[params.z_offset + r * params.z_stride + d];
                s *= zv / (1.0 + exp(-zv));
            }
            y[r * params.y_stride + d] = s;
        }
    }
}
