// mamba_wgpu.ssd_chunk_state: Mamba-2 SSD step 2, each chunk's own final state (the state it
// would end on starting from zero), a [P x Q]·[Q x N] product per (sequence, chunk, head).
//
// Bindings: 0 params (uniform);
//           1 xbc f32 rows (read): x_t[p] at xbc[r*x_stride + x_offset + h*P + p],
//             B_t[n] at xbc[r*x_stride + b_offset + g*N + n], g = h / (H / G);
//           2 dt   f32 [batch, H, len] (read), index (b*H + h)*len + t;
//           3 dacs f32 [batch, H, len] (read), same layout;
//           4 states f32 [batch, nchunks, H, P, N] (written), nchunks = ceil(len / Q).
//           Row r = b*len + t; chunk c holds tokens c*Q .. min(c*Q + Q, len) - 1.
// Params:   12 x 4 bytes (48 bytes), mirrored by `SsdChunkStateParams`.
// Geometry: one workgroup of 64 invocations per (b, c, h, 32-row tile of p, 32-column tile of
//           n): batch*nchunks*H*ceil(P/32)*ceil(N/32) workgroups folded into (x, y), linear
//           index (((b*nchunks + c)*H + h)*ceil(P/32) + p-tile)*ceil(N/32) + n-tile.
//           Invocation lid owns the 4x4 outputs p = 4*(lid/8) + i, n = 4*(lid%8) + j.
// Math:     S_c[p, n] = sum_{s in c} w_s * x_s[p] * B_s[n],
//           w_s = exp(min(dacs_last - dacs_s, 0)) * dt_s, dacs_last = dacs of the chunk's last
//           token (the min guards rounding: dacs is non-increasing within a chunk as A < 0).
//           The reduction over s runs in tiles of 32 tokens staged in workgroup memory (x and B
//           rows read once per tile, coalesced); w_s is computed once per token into workgroup
//           memory and folded into x as it is read from there. f32 accumulation.

struct Params {
    batch: u32,
    len: u32,
    nheads: u32,
    head_dim: u32,
    d_state: u32,
    ngroups: u32,
    chunk: u32,
    x_offset: u32,
    x_stride: u32,
    b_offset: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> xbc: array<f32>;
@group(0) @binding(2) var<storage, read> dt: array<f32>;
@group(0) @binding(3) var<storage, read> dacs: array<f32>;
@group(0) @binding(4) var<storage, read_write> states: array<f32>;

const WG: u32 = 64u;
const TP: u32 = 32u; // p per workgroup
const TN: u32 = 32u; // n per workgroup
const KT: u32 = 32u; // tokens per reduction tile
const ROW: u32 = 8u;  // vec4s per tile row (32 floats)

// Workgroup memory: (256 + 256) * 16 + 32 * 4 = 8,320 bytes. Tiles hold vec4s of 4
// consecutive p (or n) of one token: one vec4 load feeds 4 multiply-adds (workgroup loads are
// gathers on lavapipe), and 8 neighbouring vec4s of a row are 32 consecutive banks.
var<workgroup> x_tile: array<vec4<f32>, 256>; // [KT][ROW]: x_s[p0 + 4g .. 4g + 3]
var<workgroup> b_tile: array<vec4<f32>, 256>; // [KT][ROW]: B_s[n0 + 4g .. 4g + 3]
var<workgroup> w: array<f32, KT>;              // w_s of the tile's tokens (0 past the chunk)

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let len = params.len;
    let nh = params.nheads;
    let hp = params.head_dim;
    let ns = params.d_state;
    let q = params.chunk;
    let nchunks = (len + q - 1u) / q;
    let ptiles = (hp + TP - 1u) / TP;
    let ntiles = (ns + TN - 1u) / TN;
    let group = wg.x + wg.y * nwg.x;
    // `group` is uniform across the workgroup, so returning here keeps the barriers uniform.
    if (group >= params.batch * nchunks * nh * ptiles * ntiles) {
        return;
    }
    let nt = group % ntiles;
    let pt = (group / ntiles) % ptiles;
    let bch = group / (ntiles * ptiles); // (b*nchunks + c)*H + h
    let h = bch % nh;
    let c = (bch / nh) % nchunks;
    let b = bch / (nh * nchunks);
    let g = h / (nh / params.ngroups);
    let p0 = pt * TP;
    let n0 = nt * TN;
    let start = c * q;
    let end = min(start + q, len);
    let dbase = (b * nh + h) * len;
    let dacs_last = dacs[dbase + end - 1u];
    let x_col = params.x_offset + h * hp + p0;
    let b_col = params.b_offset + g * ns + n0;

    // Invocation lid owns p = p0 + 4*(lid/8) + i (acc_i) and n = n0 + 4*(lid%8) + 0..3.
    let pi = lid / 8u;
    let nj = lid % 8u;
    // Named vectors rather than an indexed array so every compiler keeps them in registers.
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var s0 = start; s0 < end; s0 += KT) {
        // The previous tile's readers are done before it is overwritten.
        workgroupBarrier();
        // 256 vec4s of each tile, 4 per invocation: vec4 e = (token e/8, columns 4(e%8)..+3),
        // so 8 neighbouring invocations read 32 neighbouring floats of one row. Scalar,
        // bounds-checked loads: offsets and strides need not be multiples of 4.
        for (var k = 0u; k < (KT * ROW) / WG; k++) {
            let e = lid + k * WG;
            let sl = e / ROW;
            let col = 4u * (e % ROW);
            let row = (b * len + s0 + sl) * params.x_stride;
            var xv = vec4<f32>(0.0);
            var bv = vec4<f32>(0.0);
            if (s0 + sl < end) {
                for (var u = 0u; u < 4u; u++) {
                    if (p0 + col + u < hp) {
                        xv[u] = xbc[row + x_col + col + u];
                    }
                    if (n0 + col + u < ns) {
                        bv[u] = xbc[row + b_col + col + u];
                    }
                }
            }
            x_tile[e] = xv;
            b_tile[e] = bv;
        }
        if (lid < KT) {
            var ws = 0.0;
            let s = s0 + lid;
            if (s < end) {
                ws = exp(min(dacs_last - dacs[dbase + s], 0.0)) * dt[dbase + s];
            }
            w[lid] = ws;
        }
        workgroupBarrier();
        // The tile's live tokens (uniform bound): short chunks and a partial tail do less work.
        let live = min(KT, end - s0);
        for (var sl = 0u; sl < live; sl++) {
            let xv = x_tile[sl * ROW + pi] * w[sl];
            let bv = b_tile[sl * ROW + nj];
            acc0 += xv.x * bv;
            acc1 += xv.y * bv;
            acc2 += xv.z * bv;
            acc3 += xv.w * bv;
        }
    }

    let sbase = bch * hp * ns;
    store_row(sbase, p0 + 4u * pi, n0 + 4u * nj, acc0);
    store_row(sbase, p0 + 4u * pi + 1u, n0 + 4u * nj, acc1);
    store_row(sbase, p0 + 4u * pi + 2u, n0 + 4u * nj, acc2);
    store_row(sbase, p0 + 4u * pi + 3u, n0 + 4u * nj, acc3);
}

// Writes v[j] to states[sbase + p*N + n + j] for the (p, n + j) inside the P x N state.
fn store_row(sbase: u32, p: u32, n: u32, v: vec4<f32>) {
    if (p >= params.head_dim) {
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        if (n + j < params.d_state) {
            states[sbase + p * params.d_state + n + j] = v[j];
        }
    }
}
