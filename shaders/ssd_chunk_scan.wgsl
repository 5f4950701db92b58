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
//           p): batch*nchunks*H*T*ceil(P/64) workgroups folded into (x, y), T = ceil(min(Q, len)/32), linear
//           index ((((b*nchunks + c)*H + h)*T + t-tile)*ceil(P/64) + p-tile); t-tiles past a
//           partial last chunk return at once. Invocation lid owns the 4x8 outputs
//           t = 4*(lid/8) + i, p = lid%8 + 8j (p-neighbours in neighbouring invocations: coalesced
//           x reads and y stores). Any Q, P and N work (every dimension is tiled); P = 64, the
//           head_dim of the Mamba-2 checkpoints, is one p-tile, so C·Bᵀ is computed once.
// Math:     y_t[p] = exp(dacs_t) * sum_n C_t[n] * S'_c[p, n]                       (inter-chunk)
//                  + sum_{s in c, s <= t} G[t, s] * dt_s * x_s[p]                   (intra-chunk)
//                  + D[h] * x_t[p],
//           G[t, s] = (C_t · B_s) * exp(min(dacs_t - dacs_s, 0)).
//           Inter: a [32 x N]·[N x 64] product, C and S' staged in 32-wide slices of n.
//           Intra: for each 32-token tile of s up to the diagonal (tiles past t are skipped
//           whole; the diagonal tile is masked per element), first G = C·Bᵀ (a [32 x N]·[N x 32]
//           product, n in 32-wide slices) kept in registers, then masked and decayed into
//           workgroup memory, then y += G·(dt·X) with dt folded into the X tile as it is loaded.
//           f32 accumulation throughout. Rows of [row][n] tiles are padded to 33 floats so the
//           32 rows read at one n hit distinct banks.

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
const LD: u32 = 33u; // padded row length of [row][n] tiles

// Workgroup memory: (1056 + 2112 + 3 * 32) * 4 = 13,056 bytes, under WebGPU's 16 KiB.
var<workgroup> tile_a: array<f32, 1056>; // C slice [TM][LD], then G [TM][LD]
var<workgroup> tile_b: array<f32, 2112>; // S' slice [TP][LD], B slice [TS][LD], or dt·X [TS][TP]
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
    let g = h / (nh / params.ngroups);
    let p0 = pt * TP;
    let row0 = b * len; // row of token 0 of this sequence
    let dbase = (b * nh + h) * len;
    let stride = params.x_stride;
    let x_col = params.x_offset + h * hp + p0;
    let b_col = params.b_offset + g * ns;
    let c_col = params.c_offset + g * ns;

    let ti = lid / 8u;
    let lj = lid % 8u;

    if (lid < TM) {
        var v = 0.0;
        if (t0 + lid < end) {
            v = dacs[dbase + t0 + lid];
        }
        dacs_t[lid] = v;
    }

    // Inter-chunk: acc[i][j] = sum_n C_t[n] * S'[p, n], t = t0 + 4ti + i, p = p0 + lj + 8j.
    var acc: array<array<f32, 8>, 4>;
    let sbase = bch * hp * ns;
    for (var n0 = 0u; n0 < ns; n0 += NK) {
        // The previous slice's readers are done.
        workgroupBarrier();
        // C slice: 32 x 32, 16 per invocation, n fastest (coalesced row reads).
        for (var k = 0u; k < (TM * NK) / WG; k++) {
            let e = lid + k * WG;
            let r = e / NK;
            let n = e % NK;
            var v = 0.0;
            if (t0 + r < end && n0 + n < ns) {
                v = xbc[(row0 + t0 + r) * stride + c_col + n0 + n];
            }
            tile_a[r * LD + n] = v;
        }
        // S' slice: 64 x 32, 32 per invocation, n fastest (S' rows are contiguous in n).
        for (var k = 0u; k < (TP * NK) / WG; k++) {
            let e = lid + k * WG;
            let r = e / NK;
            let n = e % NK;
            var v = 0.0;
            if (p0 + r < hp && n0 + n < ns) {
                v = states[sbase + (p0 + r) * ns + n0 + n];
            }
            tile_b[r * LD + n] = v;
        }
        workgroupBarrier();
        for (var n = 0u; n < NK; n++) {
            var cv: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                cv[i] = tile_a[(ti * 4u + i) * LD + n];
            }
            for (var j = 0u; j < 8u; j++) {
                let sv = tile_b[(lj + 8u * j) * LD + n];
                for (var i = 0u; i < 4u; i++) {
                    acc[i][j] += cv[i] * sv;
                }
            }
        }
    }
    // dacs_t was written before the loop's first barrier (N >= 1).
    for (var i = 0u; i < 4u; i++) {
        let decay = exp(dacs_t[ti * 4u + i]);
        for (var j = 0u; j < 8u; j++) {
            acc[i][j] *= decay;
        }
    }

    // Intra-chunk, one 32-token tile of s at a time, up to and including the diagonal tile.
    for (var s0 = start; s0 <= t0; s0 += TS) {
        // G[i][j] = C_t · B_s, t = t0 + 4ti + i, s = s0 + lj + 8j.
        var gacc: array<array<f32, 4>, 4>;
        for (var n0 = 0u; n0 < ns; n0 += NK) {
            workgroupBarrier();
            for (var k = 0u; k < (TM * NK) / WG; k++) {
                let e = lid + k * WG;
                let r = e / NK;
                let n = e % NK;
                var cv = 0.0;
                var bv = 0.0;
                if (n0 + n < ns) {
                    if (t0 + r < end) {
                        cv = xbc[(row0 + t0 + r) * stride + c_col + n0 + n];
                    }
                    if (s0 + r < end) {
                        bv = xbc[(row0 + s0 + r) * stride + b_col + n0 + n];
                    }
                }
                tile_a[r * LD + n] = cv;
                tile_b[r * LD + n] = bv;
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
            for (var n = 0u; n < NK; n++) {
                var cv: array<f32, 4>;
                for (var i = 0u; i < 4u; i++) {
                    cv[i] = tile_a[(ti * 4u + i) * LD + n];
                }
                for (var j = 0u; j < 4u; j++) {
                    let bv = tile_b[(lj + 8u * j) * LD + n];
                    for (var i = 0u; i < 4u; i++) {
                        gacc[i][j] += cv[i] * bv;
                    }
                }
            }
        }
        // Everyone is done reading the C and B slices before G and dt·X replace them.
        workgroupBarrier();
        for (var i = 0u; i < 4u; i++) {
            let tl = ti * 4u + i;
            for (var j = 0u; j < 4u; j++) {
                let sl = lj + 8u * j;
                var gv = 0.0;
                // s <= t is the causal mask (it also drops s past the chunk whenever t is live;
                // rows of dead t are never stored).
                if (s0 + sl <= t0 + tl) {
                    gv = gacc[i][j] * exp(min(dacs_t[tl] - dacs_s[sl], 0.0));
                }
                tile_a[tl * LD + sl] = gv;
            }
        }
        // dt·X tile: 32 x 64, 32 per invocation, p fastest (coalesced row reads).
        for (var k = 0u; k < (TS * TP) / WG; k++) {
            let e = lid + k * WG;
            let r = e / TP;
            let p = e % TP;
            var v = 0.0;
            if (s0 + r < end && p0 + p < hp) {
                v = dt_s[r] * xbc[(row0 + s0 + r) * stride + x_col + p];
            }
            tile_b[r * TP + p] = v;
        }
        workgroupBarrier();
        for (var sl = 0u; sl < TS; sl++) {
            var gv: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                gv[i] = tile_a[(ti * 4u + i) * LD + sl];
            }
            for (var j = 0u; j < 8u; j++) {
                let xv = tile_b[sl * TP + lj + 8u * j];
                for (var i = 0u; i < 4u; i++) {
                    acc[i][j] += gv[i] * xv;
                }
            }
        }
    }

    // Skip connection and store.
    let d_skip = heads[nh + h];
    for (var i = 0u; i < 4u; i++) {
        let t = t0 + ti * 4u + i;
        if (t < end) {
            let row = row0 + t;
            for (var j = 0u; j < 8u; j++) {
                let p = p0 + lj + 8u * j;
                if (p < hp) {
                    let xv = xbc[row * stride + x_col + lj + 8u * j];
                    y[row * params.y_stride + h * hp + p] = acc[i][j] + d_skip * xv;
                }
            }
        }
    }
}
