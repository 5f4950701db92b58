// mamba_wgpu.ssd_chunk_scan: Mamba-2 SSD steps 4-5, the output of every token from its own
// chunk (a masked, decayed attention-like product) and from the state entering the chunk.
//
// Bindings: 0 params (uniform);
//           1 xbc f32 rows (read): x_t[p] at xbc[r*x_stride + x_offset + h*P + p],
//             B_t[n] at xbc[r*x_stride + b_offset + g*N + n], C_t[n] at the same with c_offset,
//             g = h / (H / G);
//           2 dt   f32 [batch, H, len] (read), index (b*H + h)*len + t;
//           3 dacs f32 [batch, H, len] (read), same layout;
//           4 states f32 [batch, nchunks, H, P, N] (read): S'_c, the state entering chunk c;
//           5 heads f32 [3H] packed (read): A_log, D at H + h, dt_bias;
//           6 y f32 rows (written): y_t[p] at y[r*y_stride + h*P + p] (other columns untouched).
//           Row r = b*len + t; chunk c holds tokens c*Q .. min(c*Q + Q, len) - 1.
// Params:   12 x 4 bytes (48 bytes), mirrored by `SsdChunkScanParams`.
// Geometry: one workgroup of 64 invocations per (b, c, h, 32-token tile of t, 64-column tile of
//           p): batch*nchunks*H*T*ceil(P/64) workgroups, T = ceil(min(Q, len)/32), folded into
//           (x, y); linear index ((((b*nchunks + c)*H + h)*T + t-tile)*ceil(P/64) + p-tile).
//           t-tiles past a partial last chunk return at once. Invocation lid owns the 4x8
//           outputs t = 4*(lid/8) + i, p = 4*(lid%8) + j and 32 + 4*(lid%8) + j (i, j < 4).
//           Any Q, P and N work (every dimension is tiled); P = 64, the head_dim of the Mamba-2
//           checkpoints, is one p-tile, so C·Bᵀ is computed once per head.
// Math:     y_t[p] = exp(dacs_t) * sum_n C_t[n] * S'_c[p, n]                       (inter-chunk)
//                  + sum_{s in c, s <= t} G[t, s] * dt_s * x_s[p]                   (intra-chunk)
//                  + D[h] * x_t[p],
//           G[t, s] = (C_t · B_s) * exp(min(dacs_t - dacs_s, 0))  (dacs is non-increasing
//           within a chunk; the min guards rounding).
//           Inter: a [32 x N]·[N x 64] product, C and S' staged in 32-wide slices of n.
//           Intra: for each 32-token tile of s up to the diagonal (tiles past t are skipped
//           whole; the diagonal tile is masked per element), first G = C·Bᵀ (a [32 x N] by
//           [N x 32] product, n in 32-wide slices) kept in registers, then masked and decayed into
//           workgroup memory, then y += G·(dt·X) with dt folded into the X tile as it is loaded.
//           f32 accumulation throughout. Each C, B, S', x element is read from global memory
//           once per tile that needs it, with neighbouring invocations on neighbouring floats.

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
    c_offset: u32,
    y_stride: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> xbc: array<f32>;
@group(0) @binding(2) var<storage, read> dt: array<f32>;
@group(0) @binding(3) var<storage, read> dacs: array<f32>;
@group(0) @binding(4) var<storage, read> states: array<f32>;
@group(0) @binding(5) var<storage, read> heads: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;

const WG: u32 = 64u;
const TM: u32 = 32u; // tokens t per workgroup
const TS: u32 = 32u; // tokens s per intra-chunk tile (= TM, so tiles align on the diagonal)
const TP: u32 = 64u; // p per workgroup
const NK: u32 = 32u; // n per reduction slice
// Row strides in vec4s of the [k][row/4] tiles: 8 or 16 vec4s of data plus one of padding,
// so the 4 stores of one invocation group in a staging step spread over the banks.
const LD8: u32 = 9u;
const LD16: u32 = 17u;

// Workgroup memory: (288 + 544) * 16 + 3 * 32 * 4 = 13,696 bytes, under WebGPU's 16 KiB.
// Every tile holds vec4s of 4 consecutive rows (t, s or p) at one k (n or s): one vec4 load
// then feeds 4 multiply-adds (workgroup loads are gathers on lavapipe).
var<workgroup> tile_a: array<vec4<f32>, 288>; // C slice [NK][LD8] (t), then G [TS][LD8] (t)
// S' [NK][LD16] (p), then B [NK][LD8] (s) and dt·X [TS][LD16] (p) for each s-tile.
var<workgroup> tile_b: array<vec4<f32>, 544>;
var<workgroup> dacs_t: array<f32, TM>;
var<workgroup> dacs_s: array<f32, TS>;
var<workgroup> dt_s: array<f32, TS>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let len = params.len;
    let nh = params.nheads;
    let hp = params.head_dim;
    let ns = params.d_state;
    let q = params.chunk;
    let nchunks = (len + q - 1u) / q;
    // Chunks other than the last hold Q < len tokens, so no chunk has more than min(Q, len).
    let ttiles = (min(q, len) + TM - 1u) / TM;
    let ptiles = (hp + TP - 1u) / TP;
    let group = wg.x + wg.y * nwg.x;
    // `group` is uniform across the workgroup, so both returns keep the barriers uniform.
    if (group >= params.batch * nchunks * nh * ttiles * ptiles) {
        return;
    }
    let pt = group % ptiles;
    let tt = (group / ptiles) % ttiles;
    let bch = group / (ptiles * ttiles); // (b*nchunks + c)*H + h
    let h = bch % nh;
    let c = (bch / nh) % nchunks;
    let b = bch / (nh * nchunks);
    let start = c * q;
    let end = min(start + q, len);
    let t0 = start + tt * TM;
    if (t0 >= end) {
        return; // a t-tile past the end of a partial last chunk
    }
    let t_end = min(t0 + TM, end);
    let g = h / (nh / params.ngroups);
    let p0 = pt * TP;
    let row0 = b * len; // row of token 0 of this sequence
    let dbase = (b * nh + h) * len;
    let stride = params.x_stride;
    let x_col = params.x_offset + h * hp + p0;
    let b_col = params.b_offset + g * ns;
    let c_col = params.c_offset + g * ns;
    let sbase = bch * hp * ns;

    // Invocation lid owns t = t0 + 4*ti + i and p = p0 + 4*lj + j (lo_i) or p0 + 32 + 4*lj + j
    // (hi_i), j = 0..3; in the C·Bᵀ step, t as above and s = s0 + 4*lj + j (g_i).
    let ti = lid / 8u;
    let lj = lid % 8u;
    // For staging [k][row/4] tiles: invocation (kk, rg) = (lid % 32, lid / 32) loads rows
    // 4rg .. 4rg + 3 at k0 + kk, so 32 neighbouring invocations read 32 consecutive k (n is
    // contiguous in C, B and S' rows) of 4 rows; more row groups step rg by 2.
    let kk = lid % 32u;
    let rg = lid / 32u;

    if (lid < TM) {
        var v = 0.0;
        if (t0 + lid < end) {
            v = dacs[dbase + t0 + lid];
        }
        dacs_t[lid] = v;
    }

    // Named vectors rather than indexed arrays so every compiler keeps them in registers.
    var lo0 = vec4<f32>(0.0);
    var lo1 = vec4<f32>(0.0);
    var lo2 = vec4<f32>(0.0);
    var lo3 = vec4<f32>(0.0);
    var hi0 = vec4<f32>(0.0);
    var hi1 = vec4<f32>(0.0);
    var hi2 = vec4<f32>(0.0);
    var hi3 = vec4<f32>(0.0);

    // Inter-chunk: sum_n C_t[n] * S'[p, n], n in slices of 32.
    for (var n0 = 0u; n0 < ns; n0 += NK) {
        // The previous slice's readers are done.
        workgroupBarrier();
        let n_on = n0 + kk < ns;
        // C slice: 8 row groups of t, 4 per invocation.
        for (var r = rg; r < TM / 4u; r += 2u) {
            var v = vec4<f32>(0.0);
            for (var u = 0u; u < 4u; u++) {
                let t = t0 + 4u * r + u;
                if (n_on && t < end) {
                    v[u] = xbc[(row0 + t) * stride + c_col + n0 + kk];
                }
            }
            tile_a[kk * LD8 + r] = v;
        }
        // S' slice: 16 row groups of p, 8 per invocation (S' rows are contiguous in n).
        for (var r = rg; r < TP / 4u; r += 2u) {
            var v = vec4<f32>(0.0);
            for (var u = 0u; u < 4u; u++) {
                let p = p0 + 4u * r + u;
                if (n_on && p < hp) {
                    v[u] = states[sbase + p * ns + n0 + kk];
                }
            }
            tile_b[kk * LD16 + r] = v;
        }
        workgroupBarrier();
        // The slice's live width (uniform): a partial last slice or N < 32 does less work.
        let nk = min(NK, ns - n0);
        for (var n = 0u; n < nk; n++) {
            let cv = tile_a[n * LD8 + ti];
            let sl = tile_b[n * LD16 + lj];
            let sh = tile_b[n * LD16 + 8u + lj];
            lo0 += cv.x * sl;
            lo1 += cv.y * sl;
            lo2 += cv.z * sl;
            lo3 += cv.w * sl;
            hi0 += cv.x * sh;
            hi1 += cv.y * sh;
            hi2 += cv.z * sh;
            hi3 += cv.w * sh;
        }
    }
    // dacs_t was written before the loop's first barrier (N >= 1). Decay to token t.
    let d0 = exp(dacs_t[4u * ti]);
    let d1 = exp(dacs_t[4u * ti + 1u]);
    let d2 = exp(dacs_t[4u * ti + 2u]);
    let d3 = exp(dacs_t[4u * ti + 3u]);
    lo0 *= d0;
    hi0 *= d0;
    lo1 *= d1;
    hi1 *= d1;
    lo2 *= d2;
    hi2 *= d2;
    lo3 *= d3;
    hi3 *= d3;

    // Intra-chunk, one 32-token tile of s at a time, up to and including the diagonal tile.
    for (var s0 = start; s0 <= t0; s0 += TS) {
        // G = C·Bᵀ: g_i[j] = C_t · B_s, t = t0 + 4ti + i, s = s0 + 4lj + j.
        var g0 = vec4<f32>(0.0);
        var g1 = vec4<f32>(0.0);
        var g2 = vec4<f32>(0.0);
        var g3 = vec4<f32>(0.0);
        for (var n0 = 0u; n0 < ns; n0 += NK) {
            workgroupBarrier();
            let n_on = n0 + kk < ns;
            for (var r = rg; r < TM / 4u; r += 2u) {
                var cv = vec4<f32>(0.0);
                var bv = vec4<f32>(0.0);
                for (var u = 0u; u < 4u; u++) {
                    let t = t0 + 4u * r + u;
                    if (n_on && t < end) {
                        cv[u] = xbc[(row0 + t) * stride + c_col + n0 + kk];
                    }
                    let s = s0 + 4u * r + u;
                    if (n_on && s < end) {
                        bv[u] = xbc[(row0 + s) * stride + b_col + n0 + kk];
                    }
                }
                tile_a[kk * LD8 + r] = cv;
                tile_b[kk * LD8 + r] = bv;
            }
            if (n0 == 0u && lid < TS) {
                var da = 0.0;
                var d = 0.0;
                if (s0 + lid < end) {
                    da = dacs[dbase + s0 + lid];
                    d = dt[dbase + s0 + lid];
                }
                dacs_s[lid] = da;
                dt_s[lid] = d;
            }
            workgroupBarrier();
            let nk = min(NK, ns - n0);
            for (var n = 0u; n < nk; n++) {
                let cv = tile_a[n * LD8 + ti];
                let bv = tile_b[n * LD8 + lj];
                g0 += cv.x * bv;
                g1 += cv.y * bv;
                g2 += cv.z * bv;
                g3 += cv.w * bv;
            }
        }
        // Everyone is done reading the C and B slices before G and dt·X replace them.
        workgroupBarrier();
        // Mask and decay, then store G transposed: tile_a[s][t/4] holds G[4ti .. 4ti + 3, s].
        g0 = decay_row(g0, s0, t0, 4u * ti, 4u * lj);
        g1 = decay_row(g1, s0, t0, 4u * ti + 1u, 4u * lj);
        g2 = decay_row(g2, s0, t0, 4u * ti + 2u, 4u * lj);
        g3 = decay_row(g3, s0, t0, 4u * ti + 3u, 4u * lj);
        tile_a[(4u * lj) * LD8 + ti] = vec4<f32>(g0.x, g1.x, g2.x, g3.x);
        tile_a[(4u * lj + 1u) * LD8 + ti] = vec4<f32>(g0.y, g1.y, g2.y, g3.y);
        tile_a[(4u * lj + 2u) * LD8 + ti] = vec4<f32>(g0.z, g1.z, g2.z, g3.z);
        tile_a[(4u * lj + 3u) * LD8 + ti] = vec4<f32>(g0.w, g1.w, g2.w, g3.w);
        // dt·X tile [s][p/4]: 32 x 16 vec4s, 8 per invocation; 16 neighbouring invocations read
        // the 64 consecutive floats of one row.
        for (var k = 0u; k < (TS * TP / 4u) / WG; k++) {
            let e = lid + k * WG;
            let sl = e / 16u;
            let pg = e % 16u;
            var v = vec4<f32>(0.0);
            if (s0 + sl < end) {
                let row = (row0 + s0 + sl) * stride + x_col + 4u * pg;
                for (var u = 0u; u < 4u; u++) {
                    if (p0 + 4u * pg + u < hp) {
                        v[u] = xbc[row + u];
                    }
                }
                v *= dt_s[sl];
            }
            tile_b[sl * LD16 + pg] = v;
        }
        workgroupBarrier();
        // Only s below the tile's last live t contribute (uniform bound; G is zero past it
        // anyway): short chunks and the tail of a partial chunk do less work.
        let live = min(TS, t_end - s0);
        for (var sl = 0u; sl < live; sl++) {
            let gv = tile_a[sl * LD8 + ti];
            let xl = tile_b[sl * LD16 + lj];
            let xh = tile_b[sl * LD16 + 8u + lj];
            lo0 += gv.x * xl;
            lo1 += gv.y * xl;
            lo2 += gv.z * xl;
            lo3 += gv.w * xl;
            hi0 += gv.x * xh;
            hi1 += gv.y * xh;
            hi2 += gv.z * xh;
            hi3 += gv.w * xh;
        }
    }

    // Skip connection and store: tokens t < end, p < P.
    let d_skip = heads[nh + h];
    let y_col = h * hp + p0;
    let p_live = hp - p0;
    let t = t0 + 4u * ti;
    let lo = 4u * lj;
    let hi = 32u + 4u * lj;
    if (t < end) {
        store_row(row0 + t, x_col, y_col, lo, p_live, d_skip, lo0);
        store_row(row0 + t, x_col, y_col, hi, p_live, d_skip, hi0);
    }
    if (t + 1u < end) {
        store_row(row0 + t + 1u, x_col, y_col, lo, p_live, d_skip, lo1);
        store_row(row0 + t + 1u, x_col, y_col, hi, p_live, d_skip, hi1);
    }
    if (t + 2u < end) {
        store_row(row0 + t + 2u, x_col, y_col, lo, p_live, d_skip, lo2);
        store_row(row0 + t + 2u, x_col, y_col, hi, p_live, d_skip, hi2);
    }
    if (t + 3u < end) {
        store_row(row0 + t + 3u, x_col, y_col, lo, p_live, d_skip, lo3);
        store_row(row0 + t + 3u, x_col, y_col, hi, p_live, d_skip, hi3);
    }
}

// G[t, s0 + sl + j] masked to s <= t and multiplied by exp(min(dacs_t - dacs_s, 0)); tl and
// sl are offsets within the tiles (t = t0 + tl). The mask also zeroes s past the chunk for
// every live t; rows of dead t are never stored.
fn decay_row(gv: vec4<f32>, s0: u32, t0: u32, tl: u32, sl: u32) -> vec4<f32> {
    var out = vec4<f32>(0.0);
    let dt_l = dacs_t[tl];
    for (var j = 0u; j < 4u; j++) {
        if (s0 + sl + j <= t0 + tl) {
            out[j] = gv[j] * exp(min(dt_l - dacs_s[sl + j], 0.0));
        }
    }
    return out;
}

// y[row, y_col + pl + j] = acc[j] + D * x[row, x_col + pl + j] for pl + j < p_live (x_col and
// y_col point at p0 of head h; p_live = P - p0).
fn store_row(row: u32, x_col: u32, y_col: u32, pl: u32, p_live: u32, d_skip: f32,
             acc: vec4<f32>) {
    for (var j = 0u; j < 4u; j++) {
        if (pl + j < p_live) {
            let xv = xbc[row * params.x_stride + x_col + pl + j];
            y[row * params.y_stride + y_col + pl + j] = acc[j] + d_skip * xv;
        }
    }
}
