// mamba_wgpu.conv1d: causal depthwise conv1d + bias + SiLU over a prompt (prefill), continuing
// from and updating the conv state.
//
// Bindings: 0 params (uniform);
//           1 x f32, rows b·len + t: u[b,t,c] = x[x_offset + (b·len + t)·x_stride + c] (read);
//           2 weight f32 [channels, K] (PyTorch [channels, 1, K]) (read);
//           3 bias f32 [channels] (read; not touched when has_bias = 0, any buffer may be bound);
//           4 state f32 [batch, channels, S], S = K-1, the previous S inputs oldest first (read_write);
//           5 out f32, rows b·len + t: out[(b·len + t)·out_stride + c] (read_write).
// Params:   batch, len, channels, kernel (K, 2..=8; 1 also works), x_offset, x_stride, out_stride,
//           has_bias; all u32, 32 bytes.
// Geometry: workgroups of 64 invocations, one channel each (adjacent invocations read adjacent
//           channels: coalesced). Each invocation handles TOKENS consecutive tokens of one
//           (b, c). Linear workgroup index = cg + channel_groups·(block + blocks·b) with
//           channel_groups = ceil(channels/64), blocks = ceil(len/TOKENS); folded into (x, y) as
//           wg.x + wg.y·num_workgroups.x.
// Math:     u[b,t,c] for t < 0 is state[(b·channels + c)·S + (S + t)];
//           out[b,t,c] = silu(bias[c] + Σ_{j<K} weight[c·K + j]·u[b, t + j - S, c]);
//           afterwards state[b,c,:] = the last S values of (old state ++ u[b, 0..len, c]).
//           With a zero state this is nn.Conv1d(groups=channels, padding=K-1)(x)[..., :len].
//
// The K taps are right-aligned into MAX_K registers (taps with j < MAX_K - K have weight 0 and
// a zero window entry), so every loop has a constant trip count, unrolls, and indexes the
// private arrays with constants. Each invocation slides the window over its block, loading
// each input once plus an S-input halo at the block's start.
//
// State race: only token block 0 reaches negative times (the halo of a block starting at
// t0 >= TOKENS >= MAX_K - 1 is all at t >= 0), so the invocation of block 0 is the only one that
// reads state[b,c,:]; it reads it into registers before anything else and is the one that writes
// the new state at the end.

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
// Tokens per invocation; must equal `TOKENS_PER_INVOCATION` in src/kernels/conv1d.rs and be at
// least HALO (see the state race note above).
const TOKENS: u32 = 32u;
const MAX_K: u32 = 8u;
const HALO: u32 = MAX_K - 1u;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let channels = params.channels;
    let len = params.len;
    let k = params.kernel;
    let s = k - 1u;
    let channel_groups = (channels + WG - 1u) / WG;
    let blocks = max((len + TOKENS - 1u) / TOKENS, 1u);
    let linear = wg.x + wg.y * nwg.x;
    let c = (linear % channel_groups) * WG + lid;
    let rest = linear / channel_groups;
    let block = rest % blocks;
    let b = rest / blocks;
    // No barriers below, so invocations past the end (fold round-up, channel tail) just leave.
    if (b >= params.batch || c >= channels || k > MAX_K) {
        return;
    }

    // w[i] is tap j = i - (MAX_K - K); the taps in front of it stay 0.
    var w: array<f32, MAX_K>;
    for (var i = 0u; i < MAX_K; i++) {
        if (i + k >= MAX_K) {
            w[i] = weight[c * k + i + k - MAX_K];
        }
    }
    var acc0 = 0.0;
    if (params.has_bias != 0u) {
        acc0 = bias[c];
    }

    // win[i] = u[b, t - HALO + i, c] for the token t about to be computed; only the last S
    // entries carry weight, so only those are loaded (the rest stay 0).
    let row0 = b * len;
    let t0 = block * TOKENS;
    let state_base = (b * channels + c) * s;
    var win: array<f32, HALO>;
    for (var i = 0u; i < HALO; i++) {
        if (i + k >= MAX_K) {
            // tau = t0 + i - HALO >= -S because i >= HALO - S.
            if (t0 + i < HALO) {
                win[i] = state[state_base + s + t0 + i - HALO];
            } else {
                win[i] = x[params.x_offset + (row0 + t0 + i - HALO) * params.x_stride + c];
            }
        }
    }

    let t_end = min(t0 + TOKENS, len);
    for (var t = t0; t < t_end; t++) {
        let cur = x[params.x_offset + (row0 + t) * params.x_stride + c];
        // Same order as the CPU twin (tap 0 first); the leading zero taps add exact zeros.
        var acc = acc0;
        for (var i = 0u; i < HALO; i++) {
            acc += w[i] * win[i];
        }
        acc += w[HALO] * cur;
        out[(row0 + t) * params.out_stride + c] = acc / (1.0 + exp(-acc));
        for (var i = 0u; i + 1u < HALO; i++) {
            win[i] = win[i + 1u];
        }
        win[HALO - 1u] = cur;
    }

    if (block == 0u) {
        // New state[j] = u[b, len - S + j, c]. When block 0 covered the whole prompt its window
        // holds exactly these (old state entries included when len < S); otherwise
        // len > TOKENS >= S, so they are all inputs of this call, read from x.
        for (var i = 0u; i < HALO; i++) {
            if (i + k >= MAX_K) {
                let j = i + k - MAX_K;
                var v = win[i];
                if (len > TOKENS) {
                    v = x[params.x_offset + (row0 + len - s + j) * params.x_stride + c];
                }
                state[state_base + j] = v;
            }
        }
    }
}
