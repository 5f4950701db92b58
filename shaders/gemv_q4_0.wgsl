// mamba_wgpu.gemv_q4_0: the Linear of mamba_wgpu.gemv, y = x · wᵀ + bias, for a few rows of x,
// with w stored as ggml's Q4_0 blocks and dequantised as it is read (never widened in memory).
//
// Bindings: 0 params (uniform); 1 x f32 (read); 2 w u32 (read): Q4_0 blocks repacked to whole
//           words, below; 3 bias f32 (read; any buffer when flags bit 0 is clear); 4 y f32
//           (read_write).
// Weights:  w is [n, k] with k a multiple of 32 (params.k; checked on the Rust side). Row c is
//           k / 32 blocks, block b of row c at word (c · k / 32 + b) · 5:
//             word 0       the block's scale d as an f16 in the low 16 bits (high bits 0)
//             words 1 .. 4 its 16 quant bytes qs as GGUF stores them, byte j in byte j % 4
//                          (little-endian) of word 1 + j / 4; each byte holds two 4-bit quants
//           so, for j < 16, w(c, 32b + j) = d · ((qs_j & 0xF) − 8) and
//           w(c, 32b + 16 + j) = d · ((qs_j >> 4) − 8). GGUF's own block is 18 bytes (f16 d,
//           then qs), which a u32 array cannot address; the repack (src/kernels/gemv_q4_0.rs)
//           costs 2 bytes per block (20 instead of 18).
// Params:   m, n, k; x_offset, x_stride; y_offset, y_stride; bias_offset; flags (bit 0: add
//           bias, bit 1: accumulate into y); 3 words of padding (48 bytes). Same as matmul.
// Geometry: workgroup_size 64; one workgroup per NR = 8 consecutive outputs (rows of w), so
//           ceil(n / 8) workgroups folded into (x, y) past 65,535; group = wg.x + wg.y · nwg.x.
// Math:     for row < m, col < n:
//             y[y_offset + row·y_stride + col] = (flags & 2 ? y[same] : 0)
//                 + Σ_{i<k} x[x_offset + row·x_stride + i] · w(col, i)
//                 + (flags & 1 ? bias[bias_offset + col] : 0)
//           summed in f32: a row is k / 8 units, unit u being quant word u % 4 of block u / 4
//           (8 weights: columns 32(u / 4) + 4(u % 4) + 0..3 from the low nibbles and the same
//           + 16 from the high ones); invocation lid takes the units ≡ lid (mod 64) of a row,
//           then one invocation per output adds the 64 partials in order from workgroup memory.
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
// Words per block: the scale, then 4 words of quant bytes.
const BLOCK_WORDS: u32 = 5u;

var<workgroup> partial: array<vec4<f32>, 512>; // NR * WG

// The 8 weights of unit u of the row whose first word is `row`: column 0 the low nibbles of
// quant word u % 4 (columns 4(u % 4) + 0..3 of block u / 4), column 1 its high nibbles (the
// same + 16), each d · (q − 8). d · (q − 8) is exact in f32 (an f16 times an integer of at
// most 4 bits), as in the CPU twin.
fn w_unit(row: u32, u: u32) -> mat2x4<f32> {
    let block = row + (u / 4u) * BLOCK_WORDS;
    let d = unpack2x16float(w[block]).x;
    let q = vec4<u32>(w[block + 1u + u % 4u]) >> vec4<u32>(0u, 8u, 16u, 24u);
    let lo = vec4<f32>(q & vec4<u32>(15u)) - vec4<f32>(8.0);
    let hi = vec4<f32>((q >> vec4<u32>(4u)) & vec4<u32>(15u)) - vec4<f32>(8.0);
    return mat2x4<f32>(d * lo, d * hi);
}

// First column of unit u's low nibbles within a row: 32 · (u / 4) + 4 · (u % 4).
fn unit_col(u: u32) -> u32 {
    return (u / 4u) * 32u + (u % 4u) * 4u;
}

// x[c .. c + 3]: scalar loads, since x_offset and x_stride need not be multiples of 4.
fn x_quad(c: u32) -> vec4<f32> {
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
    // Units per row (k / 8) and u32 words per row (k / 32 blocks of 5).
    let ku = params.k / 8u;
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
            for (var u = lid; u < ku; u += WG) {
                let c = xb + unit_col(u);
                let xl = x_quad(c);
                let xh = x_quad(c + 16u);
                var wu = w_unit(w0, u);
                acc0.x += dot(wu[0], xl) + dot(wu[1], xh);
                wu = w_unit(w1, u);
                acc1.x += dot(wu[0], xl) + dot(wu[1], xh);
                wu = w_unit(w2, u);
                acc2.x += dot(wu[0], xl) + dot(wu[1], xh);
                wu = w_unit(w3, u);
                acc3.x += dot(wu[0], xl) + dot(wu[1], xh);
                wu = w_unit(w4, u);
                acc4.x += dot(wu[0], xl) + dot(wu[1], xh);
                wu = w_unit(w5, u);
                acc5.x += dot(wu[0], xl) + dot(wu[1], xh);
                wu = w_unit(w6, u);
                acc6.x += dot(wu[0], xl) + dot(wu[1], xh);
                wu = w_unit(w7, u);
                acc7.x += dot(wu[0], xl) + dot(wu[1], xh);
            }
        } else {
            // Rows of x past m are clamped likewise (valid loads, sums never written).
            let xlast = params.m - 1u;
            let x0 = params.x_offset + m0 * params.x_stride;
            let x1 = params.x_offset + min(m0 + 1u, xlast) * params.x_stride;
            let x2 = params.x_offset + min(m0 + 2u, xlast) * params.x_stride;
            let x3 = params.x_offset + min(m0 + 3u, xlast) * params.x_stride;
            for (var u = lid; u < ku; u += WG) {
                let c = unit_col(u);
                // Column q of xl (xh) is x row m0 + q at the low (high) nibbles' columns, so
                // lo · xl + hi · xh is the 4 rows' sums.
                let xl = mat4x4<f32>(x_quad(x0 + c), x_quad(x1 + c), x_quad(x2 + c),
                                     x_quad(x3 + c));
                let xh = mat4x4<f32>(x_quad(x0 + c + 16u), x_quad(x1 + c + 16u),
                                     x_quad(x2 + c + 16u), x_quad(x3 + c + 16u));
                var wu = w_unit(w0, u);
                acc0 += wu[0] * xl + wu[1] * xh;
                wu = w_unit(w1, u);
                acc1 += wu[0] * xl + wu[1] * xh;
                wu = w_unit(w2, u);
                acc2 += wu[0] * xl + wu[1] * xh;
                wu = w_unit(w3, u);
                acc3 += wu[0] * xl + wu[1] * xh;
                wu = w_unit(w4, u);
                acc4 += wu[0] * xl + wu[1] * xh;
                wu = w_unit(w5, u);
                acc5 += wu[0] * xl + wu[1] * xh;
                wu = w_unit(w6, u);
                acc6 += wu[0] * xl + wu[1] * xh;
                wu = w_unit(w7, u);
                acc7 += wu[0] * xl + wu[1] * xh;
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
