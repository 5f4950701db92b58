// mamba_wgpu.linear_tex: the Linear of mamba_wgpu.matmul / mamba_wgpu.gemv (y = x · wᵀ + bias,
// PyTorch layout) for weights stored in a 2-D texture, for prefill and decode alike.
//
// Bindings: 0 params (uniform); 1 x f32 as vec4s (read); 2 w: one page of a texture-stored
//           weight (declared by the weight header); 3 bias f32 (read; any buffer when flags
//           bit 0 is clear); 4 y f32 (read_write).
// Weights:  binding 2 and its accessors come from the Rust-side header prepended to this file
//           (src/kernels/linear_tex.rs). Row r of the page starts at texel
//           ((r % rows_per_line) · tpr, r / rows_per_line), tpr = w_texels_per_row(k) texels
//           per row (a row never straddles two lines of the texture), and w_block(origin, i)
//           returns columns 8i .. 8i + 7 of that row as two vec4s: f32 (mamba_wgpu.linear_tex,
//           rgba32float, 4 values per texel, two texels per block) or f16 (mamba_wgpu.
//           linear_tex_f16, rgba32uint, 8 values per texel: word j holds column 8i + j in its
//           low half and 8i + 4 + j in its high half, widened to f32 by integer operations).
// Params:   m, n, k; x_offset, x_stride; y_offset, y_stride; bias_offset; flags (bit 0: add
//           bias, bit 1: accumulate into y); rows_per_line; 2 words of padding (48 bytes).
//           Preconditions the Rust side checks: k a multiple of 8; x_offset and x_stride
//           multiples of 4 (x is read as vec4s).
// Geometry: workgroup_size 64. Invocation (wg.x · 64 + lid) computes NW = 4 consecutive
//           outputs (rows n0 .. n0 + 3 of w) for MB = 4 consecutive rows of x
//           (m0 = (wg.y + wg.z · nwg.y) · 4): ceil(n / 256) × ceil(m / 4) workgroups, the
//           second count folded into (y, z) past 65,535.
// Math:     for row < m, col < n:
//             y[y_offset + row·y_stride + col] = (flags & 2 ? y[same] : 0)
//                 + Σ_{i<k} x[x_offset + row·x_stride + i] · w(col, i)
//                 + (flags & 1 ? bias[bias_offset + col] : 0)
//           summed in f32, 8 columns at a time in increasing k: (Σ + bias) + y_old.
// Why this shape: on CPU adapters (llvmpipe) the invocations of a workgroup run in SIMD lanes,
// texel fetches are cheap gathers and a load from a lane-uniform address (x here) is one load,
// while storage-buffer gathers and barriers are expensive. So there is no workgroup memory and
// no barrier: each invocation streams its 4 rows of w from the texture once per 4 rows of x and
// keeps 16 sums in registers, 128 multiply-adds per 8 texel and 8 x loads (f32). Measured on
// lavapipe: about 8 to 9 GFLOP/s per CPU-second for a 128-token in_proj of mamba-130m. A pass
// with a single row of x (decode at batch 1) takes a 1-row loop that loads no duplicate x.

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
    rows_per_line: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
// @group(0) @binding(2) w: declared by the weight header.
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const WG: u32 = 64u;
// Outputs (rows of w) and rows of x per invocation.
const NW: u32 = 4u;
const MB: u32 = 4u;

// Texel coordinate of the first texel of row r of the page.
fn row_origin(r: u32, tpr: u32) -> vec2<u32> {
    let rpl = params.rows_per_line;
    return vec2<u32>((r % rpl) * tpr, r / rpl);
}

// Columns 8i .. 8i + 7 of the row at `o` times the x values xl (8i .. 8i + 3) and
// xh (8i + 4 .. 8i + 7).
fn w_dot8(o: vec2<u32>, i: u32, xl: vec4<f32>, xh: vec4<f32>) -> f32 {
    let b = w_block(o, i);
    return dot(b.lo, xl) + dot(b.hi, xh);
}

// Writes output (row, col) = v, adding bias and the old y as the flags ask.
fn store(row: u32, col: u32, v: f32) {
    if (row >= params.m || col >= params.n) {
        return;
    }
    var o = v;
    if ((params.flags & 1u) != 0u) {
        o += bias[params.bias_offset + col];
    }
    let idx = params.y_offset + row * params.y_stride + col;
    if ((params.flags & 2u) != 0u) {
        o += y[idx];
    }
    y[idx] = o;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let n0 = (wg.x * WG + lid) * NW;
    let m0 = (wg.y + wg.z * nwg.y) * MB;
    // No barriers below, so invocations past the end may simply leave.
    if (n0 >= params.n || m0 >= params.m) {
        return;
    }
    let blocks = params.k / 8u;
    let tpr = w_texels_per_row(params.k);
    // Rows of w past n (in the last invocation when n is not a multiple of 4) are clamped to
    // the last row: valid loads, and their sums are never written. Likewise rows of x past m.
    let last = params.n - 1u;
    let o0 = row_origin(n0, tpr);
    let o1 = row_origin(min(n0 + 1u, last), tpr);
    let o2 = row_origin(min(n0 + 2u, last), tpr);
    let o3 = row_origin(min(n0 + 3u, last), tpr);
    let xb0 = (params.x_offset + m0 * params.x_stride) / 4u;

    if (params.m - m0 == 1u) {
        // acc[j]: w row n0 + j.
        var acc = vec4<f32>(0.0);
        for (var i = 0u; i < blocks; i++) {
            let xl = x[xb0 + 2u * i];
            let xh = x[xb0 + 2u * i + 1u];
            acc += vec4<f32>(w_dot8(o0, i, xl, xh), w_dot8(o1, i, xl, xh),
                             w_dot8(o2, i, xl, xh), w_dot8(o3, i, xl, xh));
        }
        for (var j = 0u; j < NW; j++) {
            store(m0, n0 + j, acc[j]);
        }
        return;
    }

    let xlast = params.m - 1u;
    let xb1 = (params.x_offset + min(m0 + 1u, xlast) * params.x_stride) / 4u;
    let xb2 = (params.x_offset + min(m0 + 2u, xlast) * params.x_stride) / 4u;
    let xb3 = (params.x_offset + min(m0 + 3u, xlast) * params.x_stride) / 4u;
    // acc_j[q]: w row n0 + j, x row m0 + q. Named vectors rather than an indexed array so
    // every compiler keeps them in registers. Each block's 4 rows of w are loaded once, then
    // the 4 rows of x are taken one at a time (two vec4s live at once, not eight).
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var i = 0u; i < blocks; i++) {
        let c = 2u * i;
        let b0 = w_block(o0, i);
        let b1 = w_block(o1, i);
        let b2 = w_block(o2, i);
        let b3 = w_block(o3, i);
        var l = x[xb0 + c];
        var h = x[xb0 + c + 1u];
        acc0.x += dot(b0.lo, l) + dot(b0.hi, h);
        acc1.x += dot(b1.lo, l) + dot(b1.hi, h);
        acc2.x += dot(b2.lo, l) + dot(b2.hi, h);
        acc3.x += dot(b3.lo, l) + dot(b3.hi, h);
        l = x[xb1 + c];
        h = x[xb1 + c + 1u];
        acc0.y += dot(b0.lo, l) + dot(b0.hi, h);
        acc1.y += dot(b1.lo, l) + dot(b1.hi, h);
        acc2.y += dot(b2.lo, l) + dot(b2.hi, h);
        acc3.y += dot(b3.lo, l) + dot(b3.hi, h);
        l = x[xb2 + c];
        h = x[xb2 + c + 1u];
        acc0.z += dot(b0.lo, l) + dot(b0.hi, h);
        acc1.z += dot(b1.lo, l) + dot(b1.hi, h);
        acc2.z += dot(b2.lo, l) + dot(b2.hi, h);
        acc3.z += dot(b3.lo, l) + dot(b3.hi, h);
        l = x[xb3 + c];
        h = x[xb3 + c + 1u];
        acc0.w += dot(b0.lo, l) + dot(b0.hi, h);
        acc1.w += dot(b1.lo, l) + dot(b1.hi, h);
        acc2.w += dot(b2.lo, l) + dot(b2.hi, h);
        acc3.w += dot(b3.lo, l) + dot(b3.hi, h);
    }
    for (var q = 0u; q < MB; q++) {
        store(m0 + q, n0, acc0[q]);
        store(m0 + q, n0 + 1u, acc1[q]);
        store(m0 + q, n0 + 2u, acc2[q]);
        store(m0 + q, n0 + 3u, acc3[q]);
    }
}
