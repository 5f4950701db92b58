// mamba_wgpu.gemv: the Linear of mamba_wgpu.matmul for a few rows of x (one decode step of a
// small batch), y = x · wᵀ + bias, with a reduction per output instead of tiles.
//
// Bindings: 0 params (uniform); 1 x f32 (read); 2 w [n, k] row-major (read; one page of a
//           possibly paged weight); 3 bias f32 (read; any buffer when flags bit 0 is clear);
//           4 y f32 (read_write).
// Weights:  binding 2 and its accessors come from the Rust-side headers prepended to this file
//           (src/kernels/matmul.rs, src/kernels/gemv.rs). The reduction walks the u32 words of
//           a row of w: w_row_words(k) words, w_word(idx) -> WWord the values of one word,
//           x_word(base, i, k) -> WWord the x values they multiply, w_dot for one row of x and
//           x_rows / w_mac for 4 rows (XRows). f32 (mamba_wgpu.gemv): a word is one value,
//           WWord = f32, XRows = vec4<f32>. f16 (mamba_wgpu.gemv_f16): a word is two values
//           (columns 2i, 2i + 1, widened by f16x2), WWord = vec2<f32>, XRows =
//           mat2x4<f32> (even and odd columns of 4 rows), so each load of w feeds 2 columns.
// Params:   m, n, k; x_offset, x_stride; y_offset, y_stride; bias_offset; flags (bit 0: add
//           bias, bit 1: accumulate into y); 3 words of padding (48 bytes). Same as matmul.
// Geometry: workgroup_size 64; one workgroup per NR = 8 consecutive outputs (rows of w), so
//           ceil(n / 8) workgroups folded into (x, y) past 65,535; group = wg.x + wg.y · nwg.x.
// Math:     for row < m, col < n:
//             y[y_offset + row·y_stride + col] = (flags & 2 ? y[same] : 0)
//                 + Σ_{i<k} x[x_offset + row·x_stride + i] · w(col, i)
//                 + (flags & 1 ? bias[bias_offset + col] : 0)
//           summed in f32: invocation lid sums the words ≡ lid (mod 64) of the row (f32: the
//           k ≡ lid; f16: the pairs of k), then one invocation per output adds the 64 partials
//           in order from workgroup memory.
// The rows of x are taken 4 at a time (a pass), one per vec4 lane, so each pass streams the
// workgroup's 8 rows of w once (coalesced: neighbouring invocations read neighbouring k) and
// uses every w value for 4 rows of x. A pass with a single row (m = 1, the common decode step,
// or the last row when m ≡ 1 mod 4) takes a 1-row loop that loads no duplicate x values.
// Barriers: one per pass, plus one between passes. They dominate a group's fixed cost on
// lavapipe (a few µs each), hence 8 outputs per group and a serial final sum rather than a
// log-depth tree; on GPUs the 64-step sum over workgroup memory is small beside streaming
// 8 rows of w.
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
// @group(0) @binding(2) w: declared by the weight header.
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const WG: u32 = 64u;
// Outputs (rows of w) per workgroup; rows of x per pass are the 4 lanes of a vec4.
const NR: u32 = 8u;

// partial[r · WG + lid]: invocation lid's partial sums for w row n0 + r, x rows m0 + 0..3.
var<workgroup> partial: array<vec4<f32>, 512>; // NR * WG

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let n0 = (wg.x + wg.y * nwg.x) * NR;
    // Depends only on the workgroup id (the fold may round the count up), so returning here
    // keeps the barriers below in uniform control flow.
    if (n0 >= params.n) {
        return;
    }
    let k_len = params.k;
    let kw = w_row_words(k_len);
    // Rows of w past n (in the last group when n is not a multiple of 8) are clamped to the
    // last row: valid loads, and their sums are never written.
    let last = params.n - 1u;
    let w0 = n0 * kw;
    let w1 = min(n0 + 1u, last) * kw;
    let w2 = min(n0 + 2u, last) * kw;
    let w3 = min(n0 + 3u, last) * kw;
    let w4 = min(n0 + 4u, last) * kw;
    let w5 = min(n0 + 5u, last) * kw;
    let w6 = min(n0 + 6u, last) * kw;
    let w7 = min(n0 + 7u, last) * kw;

    // The pass loop's bound is uniform, so its barriers are too.
    for (var m0 = 0u; m0 < params.m; m0 += 4u) {
        // acc_r[q]: the sum for w row n0 + r and x row m0 + q. Named vectors rather than an
        // indexed array so every compiler keeps them in registers.
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
            for (var i = lid; i < kw; i += WG) {
                let xv = x_word(xb, i, k_len);
                acc0.x += w_dot(w_word(w0 + i), xv);
                acc1.x += w_dot(w_word(w1 + i), xv);
                acc2.x += w_dot(w_word(w2 + i), xv);
                acc3.x += w_dot(w_word(w3 + i), xv);
                acc4.x += w_dot(w_word(w4 + i), xv);
                acc5.x += w_dot(w_word(w5 + i), xv);
                acc6.x += w_dot(w_word(w6 + i), xv);
                acc7.x += w_dot(w_word(w7 + i), xv);
            }
        } else {
            // Rows of x past m are clamped likewise (valid loads, sums never written).
            let xlast = params.m - 1u;
            let x0 = params.x_offset + m0 * params.x_stride;
            let x1 = params.x_offset + min(m0 + 1u, xlast) * params.x_stride;
            let x2 = params.x_offset + min(m0 + 2u, xlast) * params.x_stride;
            let x3 = params.x_offset + min(m0 + 3u, xlast) * params.x_stride;
            for (var i = lid; i < kw; i += WG) {
                let xr = x_rows(x_word(x0, i, k_len), x_word(x1, i, k_len),
                                x_word(x2, i, k_len), x_word(x3, i, k_len));
                acc0 += w_mac(w_word(w0 + i), xr);
                acc1 += w_mac(w_word(w1 + i), xr);
                acc2 += w_mac(w_word(w2 + i), xr);
                acc3 += w_mac(w_word(w3 + i), xr);
                acc4 += w_mac(w_word(w4 + i), xr);
                acc5 += w_mac(w_word(w5 + i), xr);
                acc6 += w_mac(w_word(w6 + i), xr);
                acc7 += w_mac(w_word(w7 + i), xr);
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
        // Invocation 8q + r < 32 adds the 64 partials of output (m0 + q, n0 + r) in order and
        // writes it (a single row of x uses invocations 0..7 only).
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
