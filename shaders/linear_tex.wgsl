// mamba_wgpu.linear_tex: the Linear of mamba_wgpu.matmul / mamba_wgpu.gemv (y = x · wᵀ + bias,
// PyTorch layout) for weights stored in a 2-D texture (bound as a read-only storage texture),
// for prefill and decode alike.
//
// Bindings: 0 params (uniform); 1 x f32 as vec4s (read); 2 w: one page of a texture-stored
//           weight (declared by the weight header); 3 bias f32 (read; any buffer when flags
//           bit 0 is clear); 4 y f32 (read_write); the conv step fused after the product
//           (flags bit 2; any buffers otherwise, untouched), laid out as in
//           mamba_wgpu.conv1d_step: 5 conv weight f32 [channels, K] (read); 6 conv bias f32
//           [channels] (read; untouched unless flags bit 3); 7 conv state f32
//           [rows, channels, K - 1] (read_write); 8 conv out f32 (read_write); 9 the RMSNorm
//           weight f32 [k] as vec4s (flags bit 4; any buffer of 16 bytes or more otherwise);
//           10 (x-texture variants only, declared by the x header) x's rows as texels.
// Headers:  five Rust-side headers come before this file (src/kernels/linear_tex.rs).
//           The weight header declares binding 2 and w_block: row r of the page starts at
//           texel ((r % rows_per_line) · tpr, r / rows_per_line), tpr = w_texels_per_row(k)
//           texels per row (a row never straddles two lines of the texture), and
//           w_block(origin, i) returns columns 8i .. 8i + 7 of that row as two vec4s: f32
//           (rgba32float, 4 values per texel, two texels per block) or f16 (rgba32uint,
//           8 values per texel: word j holds column 8i + j in its low half and 8i + 4 + j in
//           its high half).
//           The lane header declares the entry point `main`, which calls linear() below
//           with the invocation's lane (0..7) and whether x is shared across lanes: with
//           subgroups of 8 or more lanes, lanes 0..7 each load one vec4 of x and every lane
//           takes the others' by subgroupBroadcast/subgroupShuffle (share8, shuffle), so one
//           load instruction brings 8 vec4s; without, every lane loads all of x itself.
//           The size header sets WG, the path header declares entry() (every product, or
//           one-row products only), and the x header declares x_vec4(row, c), vec4 c of
//           row `row` of x as the multi-row path reads it: from binding 1, or from binding
//           10, an rgba32float texture holding x's rows (copied in front of the dispatch).
// Params:   m, n, k; x_offset, x_stride; y_offset, y_stride; bias_offset; flags (bit 0: add
//           bias, bit 1: accumulate into y, bit 2: conv step, bit 3: conv bias, bit 4:
//           RMSNorm of x in front, m = 1 only); rows_per_line; col_base (the page's first
//           output column of the whole product); conv_start, conv_channels, conv_kernel,
//           conv_out_stride; norm_eps (f32) (64 bytes).
//           Preconditions the Rust side checks: k a multiple of 8; x_offset and x_stride
//           multiples of 4 (x is read as vec4s).
// Geometry: WG invocations per workgroup, WG declared by a third (size) header: 64 (wide, for GPUs)
//           or 8 (narrow, one SIMD batch of a CPU adapter). Invocation (wg.x · WG + lid)
//           computes NW = 4 consecutive outputs (rows n0 .. n0 + 3 of w) for MB = 16
//           consecutive rows of x (m0 = (wg.y + wg.z · nwg.y) · 16), or for the one row when
//           m = 1: ceil(n / (4 · WG)) × ceil(m / 16) workgroups, the second count folded into
//           (y, z) past 65,535. The narrow form exists because a CPU adapter runs each
//           workgroup on one thread: a decode GEMV of 768 outputs is 3 wide workgroups for
//           2+ threads (one idles a third of the time) but 24 narrow ones, and x_proj's 80
//           outputs fill a third of one wide workgroup, whose clamped lanes still fetch.
// Math:     for row < m, col < n:
//             y[y_offset + row·y_stride + col] = (flags & 2 ? y[same] : 0)
//                 + Σ_{i<k} x[x_offset + row·x_stride + i] · w(col, i)
//                 + (flags & 1 ? bias[bias_offset + col] : 0)
//           summed in f32, 8 columns at a time in increasing k: (Σ + bias) + y_old.
//           RMSNorm in front (one row): x is replaced by x · g / rms(x) with g the norm
//           weight and rms(x) = sqrt(Σ_i x_i² / k + norm_eps), computed as
//           (Σ_i w(col, i) · x_i · g_i) / rms(x): the decode step's block norm without a
//           dispatch of its own.
//           Conv step (decode: each row of x is one token of sequence `row`): for an output
//           column c = col_base + col with conv_start <= c < conv_start + channels, channel
//           ch = c - conv_start takes the value v just written as its new input:
//             window = state[row, ch, 0..K-1] ++ v;
//             conv_out[row·conv_out_stride + ch] = silu(conv_bias[ch] + Σ_j w[ch, j]·window[j]);
//             state[row, ch, :] = window[1..K]
//           (mamba_wgpu.conv1d_step's math and order). Each (row, column) is written by one
//           invocation, so each state row is read and shifted by one invocation: race-free,
//           and the decode step needs no conv dispatch of its own.
// Why this shape: on CPU adapters (llvmpipe) the invocations of a workgroup run in SIMD lanes,
// and every load instruction, texel fetch or storage read alike, costs about the same
// (measured: a lane-uniform x load as much as a texel fetch), far more than an FMA; barriers
// are expensive too. So there is no workgroup memory and no barrier, and loads are few per
// multiply-add: a block of 4 rows of w (4 to 8 fetches) feeds 16 rows of x, and the 16 rows'
// 32 vec4s of x come in 4 shared loads, 512 multiply-adds in all. Groups of 4 rows of x wholly
// past m are skipped (a workgroup-uniform branch), so small batches pay for what they use.
// The single-row path (decode at batch 1) reads 4 blocks of x per shared load.
// Uniformity: the only early exit depends on the workgroup id; the subgroup operations sit in
// branches on params and on the subgroup size, both uniform.

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
    col_base: u32,
    conv_start: u32,
    conv_channels: u32,
    conv_kernel: u32,
    conv_out_stride: u32,
    norm_eps: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
// @group(0) @binding(2) w: declared by the weight header.
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> conv_w: array<f32>;
@group(0) @binding(6) var<storage, read> conv_b: array<f32>;
@group(0) @binding(7) var<storage, read_write> conv_state: array<f32>;
@group(0) @binding(8) var<storage, read_write> conv_out: array<f32>;
@group(0) @binding(9) var<storage, read> norm_w: array<vec4<f32>>;

// Outputs (rows of w) per invocation, and rows of x per workgroup when m > 1.
const NW: u32 = 4u;
const MB: u32 = 16u;

// Block i of 4 rows of x: lo (columns 8i .. 8i + 3) and hi (8i + 4 .. 8i + 7) of each.
struct X8 {
    l0: vec4<f32>, h0: vec4<f32>,
    l1: vec4<f32>, h1: vec4<f32>,
    l2: vec4<f32>, h2: vec4<f32>,
    l3: vec4<f32>, h3: vec4<f32>,
}

// Block i of 4 rows of w.
struct W4 { b0: WBlock, b1: WBlock, b2: WBlock, b3: WBlock }

// Sums for 4 rows of w (r0 .. r3) by 4 rows of x (the vector's lanes).
struct Acc4 { r0: vec4<f32>, r1: vec4<f32>, r2: vec4<f32>, r3: vec4<f32> }

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

// Block i of the 4 rows at o0 .. o3 times x (xl, xh): one sum per row; zero past the last
// block.
fn block4(o0: vec2<u32>, o1: vec2<u32>, o2: vec2<u32>, o3: vec2<u32>, i: u32, blocks: u32,
        xl: vec4<f32>, xh: vec4<f32>) -> vec4<f32> {
    if (i >= blocks) {
        return vec4<f32>(0.0);
    }
    return vec4<f32>(w_dot8(o0, i, xl, xh), w_dot8(o1, i, xl, xh), w_dot8(o2, i, xl, xh),
                     w_dot8(o3, i, xl, xh));
}

fn dot8(b: WBlock, l: vec4<f32>, h: vec4<f32>) -> f32 {
    return dot(b.lo, l) + dot(b.hi, h);
}

// acc += w (4 rows) · x (4 rows), one block.
fn mac(acc: ptr<function, Acc4>, w: W4, v: X8) {
    (*acc).r0 += vec4<f32>(dot8(w.b0, v.l0, v.h0), dot8(w.b0, v.l1, v.h1),
                           dot8(w.b0, v.l2, v.h2), dot8(w.b0, v.l3, v.h3));
    (*acc).r1 += vec4<f32>(dot8(w.b1, v.l0, v.h0), dot8(w.b1, v.l1, v.h1),
                           dot8(w.b1, v.l2, v.h2), dot8(w.b1, v.l3, v.h3));
    (*acc).r2 += vec4<f32>(dot8(w.b2, v.l0, v.h0), dot8(w.b2, v.l1, v.h1),
                           dot8(w.b2, v.l2, v.h2), dot8(w.b2, v.l3, v.h3));
    (*acc).r3 += vec4<f32>(dot8(w.b3, v.l0, v.h0), dot8(w.b3, v.l1, v.h1),
                           dot8(w.b3, v.l2, v.h2), dot8(w.b3, v.l3, v.h3));
}

// Element (vec4) index of x row `row` (clamped to the last row: valid loads whose sums are
// never written), column block 2·c.
fn x_at(row: u32, c: u32) -> u32 {
    return (params.x_offset + min(row, params.m - 1u) * params.x_stride) / 4u + c;
}

// Block i (vec4 index c = 2i) of x rows r0 .. r0 + 3, read by x_vec4 (the x header: from
// binding 1, or from the x texture). Shared: lane l reads vec4 c + l % 2 of row r0 + l / 2,
// and the lanes exchange them.
fn x_rows4(r0: u32, c: u32, share: bool, lane: u32) -> X8 {
    if (share) {
        return share8(x_vec4(r0 + lane / 2u, c + (lane & 1u)));
    }
    return X8(x_vec4(r0, c), x_vec4(r0, c + 1u),
              x_vec4(r0 + 1u, c), x_vec4(r0 + 1u, c + 1u),
              x_vec4(r0 + 2u, c), x_vec4(r0 + 2u, c + 1u),
              x_vec4(r0 + 3u, c), x_vec4(r0 + 3u, c + 1u));
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
    let ch = params.col_base + col - params.conv_start;
    if ((params.flags & 4u) != 0u && params.col_base + col >= params.conv_start
        && ch < params.conv_channels) {
        conv_step(row, ch, o);
    }
}

// The fused conv step of channel ch of sequence b with new input v (see Math).
fn conv_step(b: u32, ch: u32, v: f32) {
    let k = params.conv_kernel;
    let s = k - 1u;
    let base = (b * params.conv_channels + ch) * s;
    var acc = 0.0;
    if ((params.flags & 8u) != 0u) {
        acc = conv_b[ch];
    }
    for (var j = 0u; j < s; j++) {
        acc += conv_w[ch * k + j] * conv_state[base + j];
    }
    acc += conv_w[ch * k + s] * v;
    conv_out[b * params.conv_out_stride + ch] = acc / (1.0 + exp(-acc));
    for (var j = 0u; j + 1u < s; j++) {
        conv_state[base + j] = conv_state[base + j + 1u];
    }
    if (s > 0u) {
        conv_state[base + s - 1u] = v;
    }
}

fn store4(row: u32, col: u32, a: Acc4) {
    for (var q = 0u; q < 4u; q++) {
        store(row + q, col, a.r0[q]);
        store(row + q, col + 1u, a.r1[q]);
        store(row + q, col + 2u, a.r2[q]);
        store(row + q, col + 3u, a.r3[q]);
    }
}

// An invocation's 4 rows of w (n0 .. n0 + 3, clamped to the last for the texel origins
// o0 .. o3), its workgroup's first row of x (m0), and the 8-column blocks of k.
struct Tile {
    n0: u32,
    m0: u32,
    blocks: u32,
    o0: vec2<u32>,
    o1: vec2<u32>,
    o2: vec2<u32>,
    o3: vec2<u32>,
}

fn tile_of(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> Tile {
    let n0 = (wg.x * WG + lid) * NW;
    let tpr = w_texels_per_row(params.k);
    let last = params.n - 1u;
    return Tile(n0, (wg.y + wg.z * nwg.y) * MB, params.k / 8u,
                row_origin(min(n0, last), tpr), row_origin(min(n0 + 1u, last), tpr),
                row_origin(min(n0 + 2u, last), tpr), row_origin(min(n0 + 3u, last), tpr));
}

// The one-row product (m = 1, decode): 4 outputs per invocation, x shared across lanes, with
// the RMSNorm prologue the flags may ask for.
fn one_row(t: Tile, lane: u32, share: bool) {
    let xb = params.x_offset / 4u;
    let vecs = 2u * t.blocks;
    // acc[j]: w row t.n0 + j. Four blocks at a time: shared, lane l holds vec4 l of them.
    var acc = vec4<f32>(0.0);
    // RMSNorm in front (flags bit 4): ss sums the squares of the x values this lane
    // loaded (shared: its own vec4s; otherwise all of them), and x is scaled by the norm
    // weight as it is loaded; the sums are scaled by 1/rms at the end.
    let norm = (params.flags & 16u) != 0u;
    var ss = 0.0;
    for (var i0 = 0u; i0 < t.blocks; i0 += 4u) {
        var mine = vec4<f32>(0.0);
        if (share) {
            let v = 2u * i0 + lane;
            mine = x[xb + min(v, vecs - 1u)];
            if (norm) {
                if (v < vecs) {
                    ss += dot(mine, mine);
                }
                mine *= norm_w[min(v, vecs - 1u)];
            }
        }
        // Block i0 + j is lanes 2j (columns 0..3) and 2j + 1 (4..7) of the shared x.
        if (share && X_FIXED_LANES) {
            // All four blocks from fixed lanes by share8, unrolled.
            let xs = share8(mine);
            acc += block4(t.o0, t.o1, t.o2, t.o3, i0, t.blocks, xs.l0, xs.h0)
                + block4(t.o0, t.o1, t.o2, t.o3, i0 + 1u, t.blocks, xs.l1, xs.h1)
                + block4(t.o0, t.o1, t.o2, t.o3, i0 + 2u, t.blocks, xs.l2, xs.h2)
                + block4(t.o0, t.o1, t.o2, t.o3, i0 + 3u, t.blocks, xs.l3, xs.h3);
        } else {
            for (var j = 0u; j < 4u; j++) {
                let i = i0 + j;
                if (i < t.blocks) {
                    var xl: vec4<f32>;
                    var xh: vec4<f32>;
                    if (share) {
                        xl = shuffle(mine, 2u * j);
                        xh = shuffle(mine, 2u * j + 1u);
                    } else {
                        xl = x[xb + 2u * i];
                        xh = x[xb + 2u * i + 1u];
                        if (norm) {
                            ss += dot(xl, xl) + dot(xh, xh);
                            xl *= norm_w[2u * i];
                            xh *= norm_w[2u * i + 1u];
                        }
                    }
                    acc += block4(t.o0, t.o1, t.o2, t.o3, i, t.blocks, xl, xh);
                }
            }
        }
    }
    if (norm) {
        acc *= inverseSqrt(sum8(ss, share) / f32(params.k) + params.norm_eps);
    }
    for (var j = 0u; j < NW; j++) {
        store(t.m0, t.n0 + j, acc[j]);
    }
}

// The one-row entry (pipelines for m = 1 only): no multi-row path in the shader, whose
// registers lavapipe sets up for every SIMD batch whether it runs or not (an empty dispatch of
// in_proj's 96 narrow workgroups cost ~250 us with it, ~68 without).
fn linear_one_row(wg: vec3<u32>, nwg: vec3<u32>, lid: u32, lane: u32, share: bool) {
    one_row(tile_of(wg, nwg, lid), lane, share);
}

fn linear(wg: vec3<u32>, nwg: vec3<u32>, lid: u32, lane: u32, share: bool) {
    // One row of x. The grid term is always true when m = 1 (one row group); it is there
    // because lavapipe (Mesa 22.x) specialises a shader on uniform values that decide a branch
    // and, while that removes half the shader, recompiles it at every dispatch: a session
    // whose first product had m = 1 then paid ~6 ms per dispatch. A condition that also reads
    // a builtin is not inlined.
    let single = (params.m == 1u) & (nwg.y * nwg.z == 1u);
    let t = tile_of(wg, nwg, lid);
    // A workgroup-uniform exit only: lanes past n stay for the shared loads (their rows of w
    // are clamped below and their sums never written).
    if (t.m0 >= params.m) {
        return;
    }
    if (single) {
        one_row(t, lane, share);
        return;
    }

    // Groups of 4 rows of x with at least one row below m (1 to 4; workgroup-uniform).
    let groups = min((params.m - t.m0 + 3u) / 4u, MB / 4u);
    var a0 = Acc4(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    var a1 = a0;
    var a2 = a0;
    var a3 = a0;
    for (var i = 0u; i < t.blocks; i++) {
        let c = 2u * i;
        let w = W4(w_block(t.o0, i), w_block(t.o1, i), w_block(t.o2, i), w_block(t.o3, i));
        mac(&a0, w, x_rows4(t.m0, c, share, lane));
        if (groups > 1u) {
            mac(&a1, w, x_rows4(t.m0 + 4u, c, share, lane));
        }
        if (groups > 2u) {
            mac(&a2, w, x_rows4(t.m0 + 8u, c, share, lane));
        }
        if (groups > 3u) {
            mac(&a3, w, x_rows4(t.m0 + 12u, c, share, lane));
        }
    }
    store4(t.m0, t.n0, a0);
    store4(t.m0 + 4u, t.n0, a1);
    store4(t.m0 + 8u, t.n0, a2);
    store4(t.m0 + 12u, t.n0, a3);
}
