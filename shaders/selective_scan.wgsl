// mamba_wgpu.selective_scan: Mamba-1 selective scan over a prompt, as a parallel associative
// scan over time (transformers' MambaMixer slow path, all f32).
//
// Bindings: 0 params (uniform);
//           1 dt  f32 rows, dt before bias/softplus at dt[dt_offset + r*dt_stride + d] (read);
//           2 bc  f32 rows, B_t[n] at bc[bc_offset + r*bc_stride + n], C_t[n] at the same + d_state;
//           3 x   f32 rows at x[x_offset + r*x_stride + d];  4 z (gate) at z[z_offset + r*z_stride + d];
//           5 ssm per-layer constants packed (to stay under 8 storage buffers): A_log[d, n] at
//             ssm[d*N + n], D[d] at ssm[d_inner*N + d], dt_bias[d] at ssm[d_inner*N + d_inner + d];
//           6 state f32 [batch, d_inner, N] (read_write): the initial state, overwritten with the final one;
//           7 y f32 rows, written at y[r*y_stride + d].
//           Row r = b*len + t; N = d_state <= MAX_D_STATE.
// Params:   16 u32 (64 bytes), mirrored by `SelectiveScanParams` in src/kernels/selective_scan.rs.
// Geometry: one workgroup of 256 invocations per (b, d), batch*d_inner workgroups folded into
//           (x, y). Invocation lid = g*8 + lane owns state lanes n = 8k + lane (8 neighbours read
//           8 neighbouring B/C floats) and the ITEMS = 4 consecutive tokens g*4 .. g*4 + 3 of
//           each chunk of CHUNK = 32 groups x 4 = 128 tokens.
// Math:     Δ_t = softplus(dt + dt_bias) (x if x > 20 else log1p(exp(x))), A = -exp(A_log),
//           h_t[n] = exp(Δ_t A[n]) h_{t-1}[n] + Δ_t B_t[n] x_t            (h_{-1} = state)
//           y_t = Σ_n C_t[n] h_t[n] (+ D x_t if flags & 2) (· silu(z_t) if flags & 1).
// Scan:     the recurrence is the composition of affine maps h -> a_t h + b_t with
//           (a_t, b_t) = (exp(Δ_t A), Δ_t B_t x_t) and (a1,b1)∘(a0,b0) = (a1 a0, a1 b0 + b1),
//           which is associative. Per chunk and block of 8 states, a two-level scan (as CUB's
//           BlockScan with items per thread): each invocation composes its 4 tokens' pairs, an
//           inclusive Hillis-Steele scan over the 32 groups (5 steps, ping-pong buffers, one
//           barrier each) gives every group the h entering it, and each invocation re-walks its
//           4 tokens from there. The carry (the state after the previous chunk) is folded into
//           group 0, so the scanned b is h itself; group 31 ends on the chunk's last h, the next
//           chunk's carry, so any length works. Past-the-end tokens and states past N use the
//           identity (1, 0). Four tokens per invocation cut the barriers per token by 4 (they
//           dominate on CPU adapters such as lavapipe) and the log-depth work to a quarter.

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
    dt_rank: u32, // 0 here: this kernel reads dt after dt_proj
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

const ITEMS: u32 = 4u;   // consecutive tokens per invocation
const GROUPS: u32 = 32u; // token groups per chunk
const LANES: u32 = 8u;   // state lanes per group
const WG: u32 = 256u;    // GROUPS * LANES
const CHUNK: u32 = 128u; // GROUPS * ITEMS tokens
const MAX_D_STATE: u32 = 256u;
const FLAG_GATE: u32 = 1u;
const FLAG_SKIP: u32 = 2u;

// Workgroup memory: (256 + 256 + 3*128 + 2*512 + 1024) * 4 = 11,776 bytes, under WebGPU's 16 KiB.
var<workgroup> a_row: array<f32, MAX_D_STATE>;   // A[d, n] = -exp(A_log[d, n]), loaded once
var<workgroup> carry: array<f32, MAX_D_STATE>;   // h after the previous chunk, all N states
var<workgroup> delta_c: array<f32, CHUNK>;       // Δ of the chunk's tokens
var<workgroup> x_c: array<f32, CHUNK>;
var<workgroup> z_c: array<f32, CHUNK>;
var<workgroup> scan_a: array<f32, 512>;          // two ping-pong halves of WG elements
var<workgroup> scan_b: array<f32, 512>;
var<workgroup> y_part: array<f32, 1024>;         // CHUNK x LANES partial sums of C·h

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

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let group = wg.x + wg.y * nwg.x;
    // `group` is uniform across the workgroup, so returning here keeps the barriers uniform.
    if (group >= params.batch * params.d_inner) {
        return;
    }
    let d_inner = params.d_inner;
    let n_state = params.d_state;
    let len = params.len;
    let b = group / d_inner;
    let d = group % d_inner;
    let lane = lid % LANES;
    let g = lid / LANES;
    let state_base = (b * d_inner + d) * n_state;

    for (var n = lid; n < n_state; n += WG) {
        a_row[n] = -exp(ssm[d * n_state + n]);
        carry[n] = state[state_base + n];
    }
    // Only invocations below CHUNK use these (the dt loads and the epilogue).
    var d_skip = 0.0;
    var dt_bias = 0.0;
    if (lid < CHUNK) {
        d_skip = ssm[d_inner * n_state + d];
        dt_bias = ssm[d_inner * n_state + d_inner + d];
    }

    let n_chunks = (len + CHUNK - 1u) / CHUNK;
    let n_blocks = (n_state + LANES - 1u) / LANES;
    for (var c = 0u; c < n_chunks; c++) {
        let t0 = c * CHUNK;
        // Orders the previous chunk's epilogue reads of x_c/z_c (and, first time, the a_row and
        // carry writes) before this chunk's loads.
        workgroupBarrier();
        // Δ, x and z once per token: elements 0-127 are dt, 128-255 x, 256-383 z.
        for (var i = lid; i < 3u * CHUNK; i += WG) {
            let which = i / CHUNK;
            let tl = i % CHUNK;
            if (t0 + tl < len) {
                let r = b * len + t0 + tl;
                if (which == 0u) {
                    delta_c[tl] = softplus(dt[params.dt_offset + r * params.dt_stride + d] + dt_bias);
                } else if (which == 1u) {
                    x_c[tl] = x[params.x_offset + r * params.x_stride + d];
                } else if ((params.flags & FLAG_GATE) != 0u) {
                    z_c[tl] = z[params.z_offset + r * params.z_stride + d];
                }
            }
        }
        workgroupBarrier();

        var y_acc: array<f32, ITEMS>;
        for (var blk = 0u; blk < n_blocks; blk++) {
            let n = blk * LANES + lane;
            let on = n < n_state;
            // h entering group 0: the carry, folded into its composition below.
            var h_carry = 0.0;
            if (on && g == 0u) {
                h_carry = carry[n];
            }
            // Discretize this invocation's 4 tokens and compose them in order; identities
            // past the end of the prompt or past N.
            var da: array<f32, ITEMS>;
            var db: array<f32, ITEMS>;
            var acc_a = 1.0;
            var acc_b = h_carry;
            for (var k = 0u; k < ITEMS; k++) {
                let tl = g * ITEMS + k;
                var ak = 1.0;
                var bk = 0.0;
                if (on && t0 + tl < len) {
                    let dl = delta_c[tl];
                    ak = exp(dl * a_row[n]);
                    bk = dl * bc[params.bc_offset + (b * len + t0 + tl) * params.bc_stride + n] * x_c[tl];
                }
                da[k] = ak;
                db[k] = bk;
                acc_b = ak * acc_b + bk;
                acc_a = ak * acc_a;
            }
            // Inclusive Hillis-Steele scan over the 32 groups of this state lane. Step k reads
            // half p and writes half 1 - p; the barrier after each write also retires the reads
            // of the step before, so one barrier per step suffices.
            var p = 0u;
            scan_a[lid] = acc_a;
            scan_b[lid] = acc_b;
            workgroupBarrier();
            for (var off = 1u; off < GROUPS; off <<= 1u) {
                if (g >= off) {
                    let j = p * WG + lid - off * LANES;
                    acc_b = acc_a * scan_b[j] + acc_b;
                    acc_a = acc_a * scan_a[j];
                }
                p = 1u - p;
                scan_a[p * WG + lid] = acc_a;
                scan_b[p * WG + lid] = acc_b;
                workgroupBarrier();
            }
            // The h entering group g is the previous group's inclusive b. 5 steps leave the
            // results in half 1, which the next block's first writes (half 0) do not touch.
            var h = h_carry;
            if (g > 0u) {
                h = scan_b[p * WG + lid - LANES];
            }
            for (var k = 0u; k < ITEMS; k++) {
                h = da[k] * h + db[k];
                let tl = g * ITEMS + k;
                if (on && t0 + tl < len) {
                    y_acc[k] += bc[params.bc_offset + (b * len + t0 + tl) * params.bc_stride + n_state + n] * h;
                }
            }
            // Group 31 ends on h at the chunk's last live token (identities follow it). Group 0
            // read carry[n] into h_carry before the scan's first barrier, and the next read is
            // in the next chunk, after its barriers.
            if (g == GROUPS - 1u && on) {
                carry[n] = h;
            }
        }

        // Epilogue: reduce y over the 8 lanes, add D·x, gate, write one y per token.
        for (var k = 0u; k < ITEMS; k++) {
            y_part[(g * ITEMS + k) * LANES + lane] = y_acc[k];
        }
        workgroupBarrier();
        if (lid < CHUNK && t0 + lid < len) {
            var s = 0.0;
            for (var k = 0u; k < LANES; k++) {
                s += y_part[lid * LANES + k];
            }
            if ((params.flags & FLAG_SKIP) != 0u) {
                s += d_skip * x_c[lid];
            }
            if ((params.flags & FLAG_GATE) != 0u) {
                let zv = z_c[lid];
                s *= zv / (1.0 + exp(-zv));
            }
            y[(b * len + t0 + lid) * params.y_stride + d] = s;
        }
    }

    // The last carry writes are ordered before the write-back.
    workgroupBarrier();
    for (var n = lid; n < n_state; n += WG) {
        state[state_base + n] = carry[n];
    }
}
