// mamba_wgpu.gemv_q8_0: the Linear of mamba_wgpu.gemv, y = x · wᵀ + bias, for a few rows of x,
// with w stored as ggml's Q8_0 blocks and dequantised as it is read (never widened in memory).
//
// Bindings: 0 params (uniform); 1 x f32 (read); 2 w u32 (read): Q8_0 blocks repacked to whole
//           words, below; 3 bias f32 (read; any buffer when flags bit 0 is clear); 4 y f32
//           (read_write).
// Weights:  w is [n, k] with k a multiple of 32 (params.k; checked on the Rust side). Row c is
//           k / 32 blocks, block b of row c at word (c · k / 32 + b) · 9:
//             word 0       the block's scale d as an f16 in the low 16 bits (high bits 0)
//             words 1 .. 8 its 32 signed 8-bit quants q, four per word, quant j in byte j % 4
//                          (little-endian) of word 1 + j / 4
//           so w(c, 32b + j) = d · q_j. GGUF's own block is 34 bytes (f16 d, then 32 i8), which
//           a u32 array cannot address; the repack (src/kernels/gemv_q8_0.rs) costs 2 bytes per
//           block (36 instead of 34).
// Params:   m, n, k; x_offset, x_stride; y_offset, y_stride; bias_offset; flags (bit 0: add
//           bias, bit 1: accumulate into y); 3 words of padding (48 bytes). Same as matmul.
// Geometry: workgroup_size 64; one workgroup per NR = 8 consecutive outputs (rows of w), so
//           ceil(n / 8) workgroups folded into (x, y) past 65,535; group = wg.x + wg.y · nwg.x.
// Math:     for row < m, col < n:
//             y[y_offset + row·y_stride + col] = (flags & 2 ? y[same] : 0)
//                 + Σ_{i<k} x[x_offset + row·x_stride + i] · w(col, i)
//                 + (flags & 1 ? bias[bias_offset + col] : 0)
//           summed in f32: invocation lid takes the quant words ≡ lid (mod 64) of a row (4
//           columns each: d · (q · x) over 4 products), then one invocation per output adds the
//           64 partials in order from workgroup memory.
// As in gemv, rows of x are taken 4 at a time (a pass), one per vec4 lane, so each pass reads
// the workgroup's 8 rows of w once and uses each dequantised word for 4 rows of x; a pass of a
// single row takes a 1-row loop.
// Barriers: one per pass plus one between passes, all in uniform control flow.
// Workgroup memory: 512 vec4<f32> (8 KiB).

struct Params {
    m: u32,
    n: u32,
    k: u32,
    x_offset: u32,
    x_stride: u32,
    y_offset: u32,
    y_stride: u32,
    bias_offset: u32,
    flags: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const WG: u32 = 64u;
// Outputs (rows of w) per workgroup.
const NR: u32 = 8u;
// Words per block: the scale, then 8 words of quants.
const BLOCK_WORDS: u32 = 9u;

var<workgroup> partial: array<vec4<f32>, 512>; // NR * WG

// The 4 weights of quant word i (columns 4i .. 4i + 3) of the row whose first word is `row`:
// d · q. Byte b is shifted to the top of an i32 and back down arithmetically, which
// sign-extends it (plain shifts rather than extractBits or unpack4xI8, which older Metal
// Shading Language versions lack).
fn w_quad(row: u32, i: u32) -> vec4<f32> {
    let block = row + (i / 8u) * BLOCK_WORDS;
    let d = unpack2x16float(w[block]).x;
    let q = vec4<i32>(bitcast<i32>(w[block + 1u + i % 8u]));
    return d * vec4<f32>((q << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}

// x[base + 4i .. 4i + 3]: scalar loads, since x_offset and x_stride need not be multiples of 4.
fn x_quad(base: u32, i: u32) -> vec4<f32> {
    let c = base + 4u * i;
    return vec4<f32>(x[c], x[c + 1u], x[c + 2u], x[c + 3u]);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let n0 = (wg.x + wg.y * nwg.x) * NR;
    // Depends only on the workgroup id, so the barriers below stay in uniform control flow.
    if (n0 >= params.n) {
        return;
    }
    // Quant words per row (k / 4) and u32 words per row (k / 32 blocks of 9).
    let kq = params.k / 4u;
    let row_words = (params.k / 32u) * BLOCK_WORDS;
    // Rows of w past n are clamped to the last row: valid loads, sums never written.
    let last = params.n - 1u;
    let w0 = n0 * row_words;
    let w1 = min(n0 + 1u, last) * row_words;
    let w2 = min(n0 + 2u, last) * row_words;
    let w3 = min(n0 + 3u, last) * row_words;
    let w4 = min(n0 + 4u, last) * row_words;
    let w5 = min(n0 + 5u, last) * row_words;
    let w6 = min(n0 + 6u, last) * row_words;
    let w7 = min(n0 + 7u, last) * row_words;

    for (var m0 = 0u; m0 < params.m; m0 += 4u) {
        var acc0 = vec4<f32>(0.0);
        var acc1 = vec4<f32>(0.0);
        var acc2 = vec4<f32>(0.0);
        var acc3 = vec4<f32>(0.0);
        var acc4 = vec4<f32>(0.0);
        var acc5 = vec4<f32>(0.0);
        var acc6 = vec4<f32>(0.0);
        var acc7 = vec4<f32>(0.0);
        if (params.m - m0 == 1u) {
            let xb = params.x_offset + m0 * params.x_stride;
            for (var i = lid; i < kq; i += WG) {
                let xv = x_quad(xb, i);
                acc0.x += dot(w_quad(w0, i), xv);
                acc1.x += dot(w_quad(w1, i), xv);
                acc2.x += dot(w_quad(w2, i), xv);
                acc3.x += dot(w_quad(w3, i), xv);
                acc4.x += dot(w_quad(w4, i), xv);
                acc5.x += dot(w_quad(w5, i), xv);
                acc6.x += dot(w_quad(w6, i), xv);
                acc7.x += dot(w_quad(w7, i), xv);
            }
        } else {
            // Rows of x past m are clamped likewise (valid loads, sums never written).
            let xlast = params.m - 1u;
            let x0 = params.x_offset + m0 * params.x_stride;
            let x1 = params.x_offset + min(m0 + 1u, xlast) * params.x_stride;
            let x2 = params.x_offset + min(m0 + 2u, xlast) * params.x_stride;
            let x3 = params.x_offset + min(m0 + 3u, xlast) * params.x_stride;
            for (var i = lid; i < kq; i += WG) {
                // Column q of xr is x row m0 + q, so wv · xr is the 4 rows' sums.
                let xr = mat4x4<f32>(x_quad(x0, i), x_quad(x1, i), x_quad(x2, i), x_quad(x3, i));
                acc0 += w_quad(w0, i) * xr;
                acc1 += w_quad(w1, i) * xr;
                acc2 += w_quad(w2, i) * xr;
                acc3 += w_quad(w3, i) * xr;
                acc4 += w_quad(w4, i) * xr;
                acc5 += w_quad(w5, i) * xr;
                acc6 += w_quad(w6, i) * xr;
                acc7 += w_quad(w7, i) * xr;
            }
        }
        // The previous pass's readers must be done with `partial` before it is overwritten.
        if (m0 > 0u) {
            workgroupBarrier();
        }
        partial[lid] = acc0;
        partial[WG + lid] = acc1;
        partial[2u * WG + lid] = acc2;
        partial[3u * WG + lid] = acc3;
        partial[4u * WG + lid] = acc4;
        partial[5u * WG + lid] = acc5;
        partial[6u * WG + lid] = acc6;
        partial[7u * WG + lid] = acc7;
        workgroupBarrier();
        // Invocation 8q + r < 32 adds the 64 partials of output (m0 + q, n0 + r) in order.
        let q = lid / NR;
        let r = lid % NR;
        let col = n0 + r;
        let row = m0 + q;
        if (q < 4u && col < params.n && row < params.m) {
            var v = 0.0;
            for (var h = 0u; h < WG; h++) {
                v += partial[r * WG + h][q];
            }
            if ((params.flags & 1u) != 0u) {
                v += bias[params.bias_offset + col];
            }
            let idx = params.y_offset + row * params.y_stride + col;
            if ((params.flags & 2u) != 0u) {
                v += y[idx];
            }
            y[idx] = v;
        }
    }
}
