// mamba_wgpu.matmul: tiled matmul for prefill, PyTorch Linear layout (y = x · wᵀ + bias).
//
// Bindings: 0 params (uniform); 1 x f32 (read); 2 w [n, k] row-major (read; one page of a
//           possibly paged weight); 3 bias f32 (read; any buffer when flags bit 0 is clear);
//           4 y f32 (read_write).
// Weights:  binding 2 and its accessor w_at(row, i, k) -> f32 come from the Rust-side header
//           prepended to this file (src/kernels/matmul.rs): f32 values (mamba_wgpu.matmul), or
//           f16 packed two per u32 and widened to f32 by f16x2 (mamba_wgpu.matmul_f16).
//           Everything else is the same source, so the f16 variant sums the same products of
//           widened weights in the same order.
// Params:   m, n, k; x_offset, x_stride; y_offset, y_stride; bias_offset; flags (bit 0: add
//           bias, bit 1: accumulate into y); 3 words of padding (48 bytes).
// Geometry: workgroup_size 256 = 16×16 invocations, each computing a 4×4 block of a 64×64
//           output tile. One workgroup per tile, ceil(n / 64) · ceil(m / 64) in all, folded
//           into (x, y) past 65,535: tile = wg.x + wg.y · nwg.x, N tile = tile % ceil(n / 64)
//           (fastest, so neighbouring groups stage the same rows of x), M tile = the quotient.
// Math:     for row < m, col < n:
//             y[y_offset + row·y_stride + col] = (flags & 2 ? y[same] : 0)
//                 + Σ_{i<k} x[x_offset + row·x_stride + i] · w_at(col, i, k)
//                 + (flags & 1 ? bias[bias_offset + col] : 0)
//           summed in f32 in increasing k (in tiles of 16 staged through workgroup memory).
// Workgroup memory: two 16×17 vec4<f32> tiles (8,704 bytes), under WebGPU's default 16 KiB.
// No alignment is assumed: every global load is bounds-checked (0 outside) and scalar, since
// k, strides and offsets may be odd; the vec4s live only in workgroup memory and registers,
// where each vec4 load feeds 4 multiply-adds (storage and workgroup loads are gathers on
// lavapipe, so this cuts its loads per multiply-add by 4).

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

// Output tile TILE×TILE, reduction tile TK, THREADS = (TILE / 4)² invocations.
const TILE: u32 = 64u;
const TK: u32 = 16u;
const THREADS: u32 = 256u;
// Tiles hold 4 consecutive rows (x) or columns (w) per vec4, k-major: tile[kk · TSTRIDE + g]
// = rows 4g .. 4g + 3 at k0 + kk. One vec4 load then feeds 4 of an invocation's 16 sums. The
// stride of 17 vec4s (68 words, ≡ 4 mod 32 banks) spreads the 16 stores of one g over 8 banks.
const TSTRIDE: u32 = 17u;

var<workgroup> x_tile: array<vec4<f32>, 272>; // TK * TSTRIDE
var<workgroup> w_tile: array<vec4<f32>, 272>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let tile = wg.x + wg.y * nwg.x;
    let n_tiles = (params.n + TILE - 1u) / TILE;
    let row0 = (tile / n_tiles) * TILE;
    let col0 = (tile % n_tiles) * TILE;
    // Depends only on the workgroup id (the fold may round the count up), so returning here
    // keeps the barriers below in uniform control flow.
    if (row0 >= params.m) {
        return;
    }
    // Invocation (tx, ty) owns the 4×4 block of rows row0 + 4ty .. + 3, columns col0 + 4tx .. + 3.
    let tx = lid % 16u;
    let ty = lid / 16u;
    // For staging, invocation (kk, g) = (lid % 16, lid / 16) loads rows (x) and columns (w)
    // 4g .. 4g + 3 at k0 + kk: 16 neighbouring invocations read 16 consecutive k of one row.
    let kk_ld = lid % TK;
    let g_ld = lid / TK;

    // acc_i[j]: output (row0 + 4ty + i, col0 + 4tx + j). Named vectors rather than an indexed
    // array so every compiler keeps them in registers.
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);

    let k_len = params.k;
    let k_tiles = (k_len + TK - 1u) / TK;
    for (var t = 0u; t < k_tiles; t++) {
        let kg = t * TK + kk_ld;
        // Out-of-range rows, columns and k read as 0, so partial tiles add exact zeros.
        var xv = vec4<f32>(0.0);
        var wv = vec4<f32>(0.0);
        if (kg < k_len) {
            for (var i = 0u; i < 4u; i++) {
                let row = row0 + 4u * g_ld + i;
                if (row < params.m) {
                    xv[i] = x[params.x_offset + row * params.x_stride + kg];
                }
                let col = col0 + 4u * g_ld + i;
                if (col < params.n) {
                    wv[i] = w_at(col, kg, k_len);
                }
            }
        }
        x_tile[kk_ld * TSTRIDE + g_ld] = xv;
        w_tile[kk_ld * TSTRIDE + g_ld] = wv;
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let a = x_tile[kk * TSTRIDE + ty];
            let b = w_tile[kk * TSTRIDE + tx];
            acc0 += a.x * b;
            acc1 += a.y * b;
            acc2 += a.z * b;
            acc3 += a.w * b;
        }
        // The next iteration overwrites the tiles.
        workgroupBarrier();
    }

    let col = col0 + 4u * tx;
    store_row(row0 + 4u * ty, col, acc0);
    store_row(row0 + 4u * ty + 1u, col, acc1);
    store_row(row0 + 4u * ty + 2u, col, acc2);
    store_row(row0 + 4u * ty + 3u, col, acc3);
}

// Writes v[j] to output (row, col + j) for the j in bounds, adding bias and the old y as the
// flags ask: (Σ + bias) + y_old, the twin's order.
fn store_row(row: u32, col: u32, v: vec4<f32>) {
    if (row >= params.m) {
        return;
    }
    let y_row = params.y_offset + row * params.y_stride;
    for (var j = 0u; j < 4u; j++) {
        let c = col + j;
        if (c >= params.n) {
            break;
        }
        var o = v[j];
        if ((params.flags & 1u) != 0u) {
            o += bias[params.bias_offset + c];
        }
        if ((params.flags & 2u) != 0u) {
            o += y[y_row + c];
        }
        y[y_row + c] = o;
    }
}
