// mamba_wgpu.conv1d_step: one-token causal depthwise conv1d + bias + SiLU for decoding. Consumes
// the conv state and the new input, writes the output and shifts the state by one.
//
// Bindings: same as mamba_wgpu.conv1d:
//           0 params (uniform);
//           1 x f32: the new input of sequence b is u[b,c] = x[x_offset + b·x_stride + c] (read);
//           2 weight f32 [channels, K] (read);
//           3 bias f32 [channels] (read; not touched when has_bias = 0, any buffer may be bound);
//           4 state f32 [batch, channels, S], S = K-1, the previous S inputs oldest first (read_write);
//           5 out f32: out[b·out_stride + c] (read_write).
// Params:   the conv1d params with len = 1 (required: rows are b·len + 0 = b; the Rust side
//           debug-asserts it). K in 2..=8 (1 also works).
// Geometry: one invocation per (b, c), index b·channels + c, 64 per workgroup (adjacent
//           invocations take adjacent channels); workgroups folded into (x, y) as
//           wg.x + wg.y·num_workgroups.x.
// Math:     window = state[b,c,0..S] ++ u[b,c];
//           out[b,c] = silu(bias[c] + Σ_{j<K} weight[c·K + j]·window[j]);
//           state[b,c,:] = window[1..K].
// As in conv1d the taps are right-aligned into MAX_K registers so the loops have constant trip
// counts; each invocation owns its state row, so reading then writing it is race-free.

struct Params {
    batch: u32,
    len: u32,
    channels: u32,
    kernel: u32,
    x_offset: u32,
    x_stride: u32,
    out_stride: u32,
    has_bias: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> state: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

const WG: u32 = 64u;
const MAX_K: u32 = 8u;
const HALO: u32 = MAX_K - 1u;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let channels = params.channels;
    let k = params.kernel;
    let s = k - 1u;
    let id = (wg.x + wg.y * nwg.x) * WG + lid;
    let b = id / channels;
    let c = id % channels;
    if (b >= params.batch || k > MAX_K) {
        return;
    }

    // w[i] is tap j = i - (MAX_K - K); win[i] = state entry i - (HALO - S); both zero in front.
    let state_base = (b * channels + c) * s;
    var w: array<f32, MAX_K>;
    var win: array<f32, HALO>;
    for (var i = 0u; i < MAX_K; i++) {
        if (i + k >= MAX_K) {
            w[i] = weight[c * k + i + k - MAX_K];
        }
    }
    for (var i = 0u; i < HALO; i++) {
        if (i + k >= MAX_K) {
            win[i] = state[state_base + i + k - MAX_K];
        }
    }
    let cur = x[params.x_offset + b * params.x_stride + c];

    // Same order as the CPU twin (tap 0 first); the leading zero taps add exact zeros.
    var acc = 0.0;
    if (params.has_bias != 0u) {
        acc = bias[c];
    }
    for (var i = 0u; i < HALO; i++) {
        acc += w[i] * win[i];
    }
    acc += w[HALO] * cur;
    out[b * params.out_stride + c] = acc / (1.0 + exp(-acc));

    // Shift: new state[j] = window[j + 1], the last one being the new input.
    for (var i = 0u; i < HALO; i++) {
        if (i + k >= MAX_K) {
            let j = i + k - MAX_K;
            var v = cur;
            if (i + 1u < HALO) {
                v = win[i + 1u];
            }
            state[state_base + j] = v;
        }
    }
}
