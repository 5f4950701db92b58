//! `linear_tex`: the Linear of [`crate::kernels::matmul`] and [`crate::kernels::gemv`]
//! (`y = x · wᵀ + bias`) for a weight page stored in a 2-D texture
//! ([`crate::tensor::PageStorage::Texture`]), for prefill and decode alike.
//!
//! Variants from one source by two Rust-side headers. The weight header, by [`WeightDtype`],
//! declares the texture (rgba32float with 4 f32 per texel, or rgba32uint with 8 f16 per texel,
//! widened by integer ops or `unpack2x16float`) and `w_block`, which returns 8 columns of a row
//! as two vec4s. The lane header declares the entry point and whether x is shared across
//! subgroup lanes (one load for 8 lanes' vec4s) or loaded by every lane (no optional feature). Needs `k % 8 == 0` and x offsets and strides that
//! are multiples of 4 (x is read as vec4s); [`LinearTex::supports`] says whether a product
//! qualifies, and the loader keeps other weights in storage buffers.
//! With [`FLAG_CONV`] the decode step's causal conv (`conv1d_step`'s math) runs on the conv
//! channels' outputs as they are written, so a Mamba block's in_proj and conv are one dispatch.
//! See `shaders/linear_tex.wgsl`; CPU twins: `crate::reference::matmul` and
//! `crate::reference::conv1d`.

use std::sync::Arc;

use crate::context::{BindingKind, GpuContext, KernelPipeline};
use crate::error::{Error, Result};
use crate::kernels::{CopyRect, Dispatch, ShaderInfo, MAX_GROUPS_PER_DIM};
use crate::tensor::WeightDtype;

/// Outputs (rows of w) one wide workgroup computes: 64 invocations of 4 rows each.
pub const OUTPUTS_PER_GROUP: u32 = 256;
/// Outputs one narrow workgroup computes: 8 invocations of 4 rows each.
pub const OUTPUTS_PER_NARROW_GROUP: u32 = 32;
/// Rows of x one workgroup takes (`MB` in the shader).
pub const ROWS_PER_GROUP: u32 = 16;
/// Most taps the fused conv step takes (as `conv1d_step`).
pub const MAX_CONV_KERNEL: u32 = 8;

/// Mirrors `struct Params` in `shaders/linear_tex.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct LinearTexParams {
    /// Rows of x (tokens).
    pub m: u32,
    /// Rows of w in this page (output features).
    pub n: u32,
    /// Reduction length (input features), a multiple of 8.
    pub k: u32,
    /// Element offset of x's first row, a multiple of 4.
    pub x_offset: u32,
    /// Elements between rows of x, a multiple of 4.
    pub x_stride: u32,
    /// Element offset of y[0, 0] of this dispatch (the page's first output column).
    pub y_offset: u32,
    /// Elements between rows of y.
    pub y_stride: u32,
    /// Element offset into bias.
    pub bias_offset: u32,
    /// Bit 0: add bias. Bit 1: accumulate into y instead of overwriting. Bit 2: conv step
    /// ([`FLAG_CONV`]). Bit 3: conv bias ([`FLAG_CONV_BIAS`]).
    pub flags: u32,
    /// Rows of w per line (row) of the texture.
    pub rows_per_line: u32,
    /// The page's first output column within the whole product (its row offset in w); the
    /// conv step's channels are counted in the whole product's columns.
    pub col_base: u32,
    /// Conv step (flags bit 2): the first output column that is a conv channel.
    pub conv_start: u32,
    /// Conv step: channels (output columns `conv_start ..`).
    pub conv_channels: u32,
    /// Conv step: taps K, 1 to 8 (the state holds K - 1 inputs per channel).
    pub conv_kernel: u32,
    /// Conv step: elements between rows of the conv output.
    pub conv_out_stride: u32,
    /// RMSNorm in front ([`FLAG_NORM`]): epsilon inside the square root.
    pub norm_eps: f32,
}

/// Flags bit 0: add bias.
pub const FLAG_BIAS: u32 = 1;
/// Flags bit 1: accumulate into y.
pub const FLAG_ACCUMULATE: u32 = 2;
/// Flags bit 2: run the conv step on the conv channels' outputs (decode only: every row of x
/// is one token of its own sequence).
pub const FLAG_CONV: u32 = 4;
/// Flags bit 3: the conv step adds its bias.
pub const FLAG_CONV_BIAS: u32 = 8;
/// Flags bit 4: RMSNorm x in front of the product (one row of x only: `m` = 1).
pub const FLAG_NORM: u32 = 16;

/// What one dispatch binds.
#[derive(Clone, Copy, Debug)]
pub struct LinearTexBindings<'a> {
    /// f32 input rows.
    pub x: &'a wgpu::Buffer,
    /// The page's texture view.
    pub w: &'a wgpu::TextureView,
    /// f32 bias (bind any buffer when bit 0 of flags is clear).
    pub bias: &'a wgpu::Buffer,
    /// f32 output rows.
    pub y: &'a wgpu::Buffer,
    /// The fused conv step's buffers (any buffers when [`FLAG_CONV`] is clear).
    pub conv: ConvStepBindings<'a>,
    /// The RMSNorm weight, `[k]` f32 (with [`FLAG_NORM`]; otherwise any buffer of at least
    /// 16 bytes).
    pub norm: &'a wgpu::Buffer,
    /// For an x-texture pipeline ([`LinearTex::reads_x_texture`]): the texture its multi-row
    /// path reads x from ([`LinearTex::x_texture`]), filled from `x` by a copy in front of
    /// the dispatch; `None` for the others.
    pub x_texture: Option<&'a wgpu::Texture>,
}

/// The buffers of the conv step fused after the product, as `conv1d_step` binds them.
#[derive(Clone, Copy, Debug)]
pub struct ConvStepBindings<'a> {
    /// `[channels, K]` f32.
    pub weight: &'a wgpu::Buffer,
    /// `[channels]` f32 (read only with [`FLAG_CONV_BIAS`]).
    pub bias: &'a wgpu::Buffer,
    /// `[rows, channels, K - 1]` f32, read and shifted.
    pub state: &'a wgpu::Buffer,
    /// f32 output rows, `conv_out_stride` apart.
    pub out: &'a wgpu::Buffer,
}

impl<'a> ConvStepBindings<'a> {
    /// Placeholders for products without the conv step (untouched): `read` for the read-only
    /// bindings, `rw` for the read-write ones (one buffer may not be both in a dispatch).
    pub fn unused(read: &'a wgpu::Buffer, rw: &'a wgpu::Buffer) -> Self {
        Self {
            weight: read,
            bias: read,
            state: rw,
            out: rw,
        }
    }
}

// The bindings of a variant whose weight texture (binding 2) is `w`: N = 10, or N = 11 for the
// x-texture variants, whose binding 10 holds x's rows in an rgba32float texture.
const fn bindings<const N: usize>(w: BindingKind) -> [BindingKind; N] {
    use BindingKind::{Storage, StorageRw, TextureFloat, Uniform};
    let head = [
        Uniform, Storage, w, Storage, StorageRw, Storage, Storage, StorageRw, StorageRw, Storage,
    ];
    let mut out = [TextureFloat; N];
    let mut i = 0;
    while i < head.len() && i < N {
        out[i] = head[i];
        i += 1;
    }
    out
}

const BINDINGS_F32: &[BindingKind] = &bindings::<10>(BindingKind::TextureFloat);
const BINDINGS_F16: &[BindingKind] = &bindings::<10>(BindingKind::TextureUint);
const BINDINGS_F32_X_TEXTURE: &[BindingKind] = &bindings::<11>(BindingKind::TextureFloat);
const BINDINGS_F16_X_TEXTURE: &[BindingKind] = &bindings::<11>(BindingKind::TextureUint);

// The weight headers: binding 2 and `w_block` for each texture format.
macro_rules! f32_header {
    () => {
        "// Weights: f32 in an rgba32float texture (a read-only storage texture).
@group(0) @binding(2) var w: texture_storage_2d<rgba32float, read>;
// Texels per row of a [n, k] weight: 4 values each.
fn w_texels_per_row(k: u32) -> u32 { return k / 4u; }
// A one-row product takes its four blocks of shared x from fixed lanes (share8), unrolled:
// on lavapipe a shuffle by a variable lane loops over the lanes, and this was 4-7% faster per
// decoded token with f32 weights, but 3-8% slower with f16 ones, which keep the shuffle loop.
const X_FIXED_LANES: bool = true;
// Columns 8i .. 8i + 3 (lo) and 8i + 4 .. 8i + 7 (hi) of a row.
struct WBlock { lo: vec4<f32>, hi: vec4<f32> }
fn w_block(o: vec2<u32>, i: u32) -> WBlock {
    let c = o.x + 2u * i;
    return WBlock(textureLoad(w, vec2<u32>(c, o.y)), textureLoad(w, vec2<u32>(c + 1u, o.y)));
}
"
    };
}

macro_rules! f16_header {
    () => {
        "// Weights: f16, 8 per rgba32uint texel: word j of texel i of a row holds column 8i + j in
// its low half and 8i + 4 + j in its high half. Widened to f32 by integer operations, so no
// shader-f16 feature is needed.
@group(0) @binding(2) var w: texture_storage_2d<rgba32uint, read>;
// Texels per row of a [n, k] weight: 8 values each.
fn w_texels_per_row(k: u32) -> u32 { return k / 8u; }
// x by the shuffle loop in one-row products (see the f32 header).
const X_FIXED_LANES: bool = false;
// Four f16 bit patterns (in the low 16 bits) as f32, exact for every finite f16 (the loader
// stores no Inf or NaN). Normal halves: exponent and significand shifted into place and the
// bias moved from 15 to 127 (+112 << 23). Subnormal halves and zero: significand · 2^-24, so
// no f32 subnormal is formed that a GPU could flush to zero. The sign bit is moved last.
fn widen4(h: vec4<u32>) -> vec4<f32> {
    let mag = h & vec4<u32>(0x7fffu);
    let normal = bitcast<vec4<f32>>((mag << vec4<u32>(13u)) + vec4<u32>(0x38000000u));
    let subnormal = vec4<f32>(mag) * 0x1p-24f;
    let v = select(subnormal, normal, mag >= vec4<u32>(0x400u));
    return bitcast<vec4<f32>>(bitcast<vec4<u32>>(v) | ((h & vec4<u32>(0x8000u)) << vec4<u32>(16u)));
}
// Columns 8i .. 8i + 3 (lo) and 8i + 4 .. 8i + 7 (hi) of a row.
struct WBlock { lo: vec4<f32>, hi: vec4<f32> }
fn w_block(o: vec2<u32>, i: u32) -> WBlock {
    let t = textureLoad(w, vec2<u32>(o.x + i, o.y));
    return WBlock(widen4(t & vec4<u32>(0xffffu)), widen4(t >> vec4<u32>(16u)));
}
"
    };
}

macro_rules! f16_unpack_header {
    () => {
        "// Weights: f16, 8 per rgba32uint texel (word j of texel i: column 8i + j low, 8i + 4 + j
// high), converted by unpack2x16float.
@group(0) @binding(2) var w: texture_storage_2d<rgba32uint, read>;
// Texels per row of a [n, k] weight: 8 values each.
fn w_texels_per_row(k: u32) -> u32 { return k / 8u; }
// x by the shuffle loop in one-row products (see the f32 header).
const X_FIXED_LANES: bool = false;
// Columns 8i .. 8i + 3 (lo) and 8i + 4 .. 8i + 7 (hi) of a row.
struct WBlock { lo: vec4<f32>, hi: vec4<f32> }
fn w_block(o: vec2<u32>, i: u32) -> WBlock {
    let t = textureLoad(w, vec2<u32>(o.x + i, o.y));
    let a = unpack2x16float(t.x);
    let b = unpack2x16float(t.y);
    let c = unpack2x16float(t.z);
    let d = unpack2x16float(t.w);
    return WBlock(vec4<f32>(a.x, b.x, c.x, d.x), vec4<f32>(a.y, b.y, c.y, d.y));
}
"
    };
}

// The lane headers: the entry point, and how x is shared across lanes.
macro_rules! plain_lanes {
    () => {
        "// Lanes: every invocation loads all of x itself (no subgroup operations).
fn share8(v: vec4<f32>) -> X8 { return X8(v, v, v, v, v, v, v, v); }
fn shuffle(v: vec4<f32>, j: u32) -> vec4<f32> { return v; }
// Every lane has summed all of x itself.
fn sum8(v: f32, share: bool) -> f32 { return v; }
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    entry(wg, nwg, lid, 0u, false);
}
"
    };
}

macro_rules! subgroup_lanes {
    () => {
        "// Lanes: x shared across subgroups of 8 or more lanes (lanes 0..7 load, all read them by
// broadcast or shuffle); narrower subgroups load it all themselves.
fn share8(v: vec4<f32>) -> X8 {
    return X8(subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u),
              subgroupBroadcast(v, 2u), subgroupBroadcast(v, 3u),
              subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u),
              subgroupBroadcast(v, 6u), subgroupBroadcast(v, 7u));
}
fn shuffle(v: vec4<f32>, j: u32) -> vec4<f32> { return subgroupShuffle(v, j); }
// The sum over the 8 lanes that shared x (lanes l ^ 1, l ^ 2, l ^ 4 of each group of 8).
fn sum8(v: f32, share: bool) -> f32 {
    if (!share) {
        return v;
    }
    var s = v + subgroupShuffleXor(v, 1u);
    s += subgroupShuffleXor(s, 2u);
    return s + subgroupShuffleXor(s, 4u);
}
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32,
        @builtin(subgroup_invocation_id) lane: u32, @builtin(subgroup_size) width: u32) {
    entry(wg, nwg, lid, lane & 7u, width >= 8u);
}
"
    };
}

// The size headers: invocations per workgroup.
macro_rules! wide {
    () => {
        "// Size: 64 invocations per workgroup (GPUs).\nconst WG: u32 = 64u;\n"
    };
}

macro_rules! narrow {
    () => {
        "// Size: 8 invocations per workgroup, one SIMD batch of a CPU adapter.\nconst WG: u32 = 8u;\n"
    };
}

// The path headers: every product (the one-row path for m = 1 and the multi-row path), or
// one-row products only.
macro_rules! all_rows {
    () => {
        "// Path: any number of rows of x.
fn entry(wg: vec3<u32>, nwg: vec3<u32>, lid: u32, lane: u32, share: bool) {
    linear(wg, nwg, lid, lane, share);
}
"
    };
}

macro_rules! one_row_only {
    () => {
        "// Path: one row of x (m = 1) only.
fn entry(wg: vec3<u32>, nwg: vec3<u32>, lid: u32, lane: u32, share: bool) {
    linear_one_row(wg, nwg, lid, lane, share);
}
"
    };
}

// The x headers: where the multi-row path reads x (the one-row path reads binding 1 always).
macro_rules! x_buffer {
    () => {
        "// x: the multi-row path reads binding 1.
fn x_vec4(row: u32, c: u32) -> vec4<f32> { return x[x_at(row, c)]; }
"
    };
}

macro_rules! x_texture {
    () => {
        "// x: the multi-row path reads binding 10, x's rows copied into an rgba32float texture in
// front of the dispatch (texel (c, r) = vec4 c of row r of x, x_offset and x_stride applied by
// the copy): a texel fetch costs lavapipe far less than a storage load, which it runs as a loop
// over the lanes (in_proj at 128 tokens: 48 -> 61 GFLOP/s).
@group(0) @binding(10) var x_tex: texture_storage_2d<rgba32float, read>;
fn x_vec4(row: u32, c: u32) -> vec4<f32> {
    return textureLoad(x_tex, vec2<u32>(c, min(row, params.m - 1u)));
}
"
    };
}

macro_rules! variant {
    ($label:expr, $weights:ident, $lanes:ident, $size:ident, $path:ident, $x:ident,
     $bindings:expr) => {
        ShaderInfo {
            label: concat!("mamba_wgpu.", $label),
            source: concat!(
                "// mamba_wgpu.",
                $label,
                ": shaders/linear_tex.wgsl after its weight, lane, size, path and x headers.\n",
                $weights!(),
                $lanes!(),
                $size!(),
                $path!(),
                $x!(),
                include_str!("../../shaders/linear_tex.wgsl")
            ),
            bindings: $bindings,
            params_size: std::mem::size_of::<LinearTexParams>(),
        }
    };
}

// The six weight × lane variants of one size, path and x source, in the order of
// [`info`]'s index: f32, f16, f16 by unpack2x16float, then the same three sharing x across
// subgroup lanes. Labels: "linear_tex", the weight and lane part, then `$suffix`.
macro_rules! six {
    ($suffix:literal, $size:ident, $path:ident, $x:ident, $b32:expr, $b16:expr) => {
        [
            variant!(
                concat!("linear_tex", $suffix),
                f32_header,
                plain_lanes,
                $size,
                $path,
                $x,
                $b32
            ),
            variant!(
                concat!("linear_tex_f16", $suffix),
                f16_header,
                plain_lanes,
                $size,
                $path,
                $x,
                $b16
            ),
            variant!(
                concat!("linear_tex_f16_unpack", $suffix),
                f16_unpack_header,
                plain_lanes,
                $size,
                $path,
                $x,
                $b16
            ),
            variant!(
                concat!("linear_tex_subgroup", $suffix),
                f32_header,
                subgroup_lanes,
                $size,
                $path,
                $x,
                $b32
            ),
            variant!(
                concat!("linear_tex_f16_subgroup", $suffix),
                f16_header,
                subgroup_lanes,
                $size,
                $path,
                $x,
                $b16
            ),
            variant!(
                concat!("linear_tex_f16_unpack_subgroup", $suffix),
                f16_unpack_header,
                subgroup_lanes,
                $size,
                $path,
                $x,
                $b16
            ),
        ]
    };
}

/// The wide (64-invocation workgroup) all-rows variants, in [`info`]'s order.
const WIDE: [ShaderInfo; 6] = six!("", wide, all_rows, x_buffer, BINDINGS_F32, BINDINGS_F16);

/// Six variants then six more, as one array.
const fn join(a: [ShaderInfo; 6], b: [ShaderInfo; 6]) -> [ShaderInfo; 12] {
    [
        a[0], a[1], a[2], a[3], a[4], a[5], b[0], b[1], b[2], b[3], b[4], b[5],
    ]
}

/// Static facts about the f32-weight shader.
pub const INFO: ShaderInfo = WIDE[0];

/// Static facts about the f16-weight shader (same source, packed f16 texture header).
pub const INFO_F16: ShaderInfo = WIDE[1];

/// Static facts about the f16-weight shader for devices whose shaders have
/// `unpack2x16float` (WebGPU core; wgpu's `DownlevelFlags::SHADER_F16_IN_F32`, present on
/// Vulkan, Metal and DX12): the same texture layout, each word's halves converted by the
/// builtin (the hardware's half-to-float conversion: F16C on x86 CPUs, native on GPUs) instead
/// of the integer widening. Every f16, subnormals included, is exactly an f32, so both variants
/// multiply the same values.
pub const INFO_F16_UNPACK: ShaderInfo = WIDE[2];

/// [`INFO`] sharing x across subgroup lanes (needs wgpu's `SUBGROUP` feature): one load
/// instruction brings 8 vec4s of x, which on lavapipe doubles a prefill matmul's rate.
pub const INFO_SUBGROUP: ShaderInfo = WIDE[3];

/// [`INFO_F16`] sharing x across subgroup lanes.
pub const INFO_F16_SUBGROUP: ShaderInfo = WIDE[4];

/// [`INFO_F16_UNPACK`] sharing x across subgroup lanes.
pub const INFO_F16_UNPACK_SUBGROUP: ShaderInfo = WIDE[5];

/// The narrow (8-invocation workgroup) twins of the six variants above, in the same order:
/// what CPU adapters run (see [`LinearTex::for_dtype`]).
pub const INFO_NARROW: [ShaderInfo; 6] = six!(
    "_narrow",
    narrow,
    all_rows,
    x_buffer,
    BINDINGS_F32,
    BINDINGS_F16
);

/// The one-row twins (pipelines for products of one row of x, m = 1: decode) of the six wide
/// variants, then of the six narrow ones, in the order of [`INFO_NARROW`]. The same one-row
/// path as the all-rows variants take for m = 1, without the multi-row path beside it, which
/// costs lavapipe its setup in every SIMD batch even when no batch runs it.
pub const INFO_ONE_ROW: [ShaderInfo; 12] = join(
    six!(
        "_one_row",
        wide,
        one_row_only,
        x_buffer,
        BINDINGS_F32,
        BINDINGS_F16
    ),
    six!(
        "_narrow_one_row",
        narrow,
        one_row_only,
        x_buffer,
        BINDINGS_F32,
        BINDINGS_F16
    ),
);

/// The x-texture twins (any number of rows of x; the multi-row path reads x from a texture
/// that a copy in front of each dispatch fills, see [`LinearTex::bind`]) of the six wide
/// variants, then of the six narrow ones, in the order of [`INFO_NARROW`]. For CPU adapters,
/// whose storage loads cost far more than texel fetches.
pub const INFO_X_TEXTURE: [ShaderInfo; 12] = join(
    six!(
        "_x_texture",
        wide,
        all_rows,
        x_texture,
        BINDINGS_F32_X_TEXTURE,
        BINDINGS_F16_X_TEXTURE
    ),
    six!(
        "_narrow_x_texture",
        narrow,
        all_rows,
        x_texture,
        BINDINGS_F32_X_TEXTURE,
        BINDINGS_F16_X_TEXTURE
    ),
);

/// Which rows of x a pipeline takes and where its multi-row path reads them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Any number of rows, x read from its buffer.
    AllRows,
    /// One row of x only (m = 1), read from its buffer.
    OneRow,
    /// Any number of rows, x read from a texture a copy in front of the dispatch fills
    /// ([`LinearTex::bind`]); one-row products still read the buffer.
    XTexture,
}

/// The variant that reads textures holding `dtype`: for f16, the `unpack2x16float` one where
/// `unpack` (the device has it), the integer widening otherwise; sharing x across subgroup
/// lanes where `subgroup` (the device has wgpu's `SUBGROUP` feature); in workgroups of 8
/// invocations where `narrow`, of 64 otherwise; for the rows and x source of `path`; none
/// for Q8_0 and Q4_0, which are never stored in textures.
pub fn info(
    dtype: WeightDtype,
    unpack: bool,
    subgroup: bool,
    narrow: bool,
    path: Path,
) -> Option<ShaderInfo> {
    let i = match (dtype, unpack, subgroup) {
        (WeightDtype::F32, _, false) => 0,
        (WeightDtype::F16, false, false) => 1,
        (WeightDtype::F16, true, false) => 2,
        (WeightDtype::F32, _, true) => 3,
        (WeightDtype::F16, false, true) => 4,
        (WeightDtype::F16, true, true) => 5,
        (WeightDtype::Q8_0 | WeightDtype::Q4_0, _, _) => return None,
    };
    Some(match (path, narrow) {
        (Path::OneRow, _) => INFO_ONE_ROW[i + 6 * narrow as usize],
        (Path::XTexture, _) => INFO_X_TEXTURE[i + 6 * narrow as usize],
        (Path::AllRows, true) => INFO_NARROW[i],
        (Path::AllRows, false) => WIDE[i],
    })
}

/// The compiled kernel for one weight dtype.
#[derive(Clone, Debug)]
pub struct LinearTex {
    pipeline: Arc<KernelPipeline>,
    dtype: WeightDtype,
    narrow: bool,
    path: Path,
}

impl LinearTex {
    /// Builds (or fetches from the cache) the pipeline for textures holding `dtype`, the
    /// fastest variant the device supports: narrow workgroups on CPU adapters
    /// ([`GpuContext::is_cpu_adapter`]), wide ones elsewhere.
    pub fn for_dtype(ctx: &GpuContext, dtype: WeightDtype) -> Result<Self> {
        let f = ctx.features();
        Self::variant(ctx, dtype, f.f16_unpack, f.subgroup, ctx.is_cpu_adapter())
    }

    /// [`Self::for_dtype`] for products of one row of x only (m = 1: decoding one sequence,
    /// a prompt's last-token lm_head): the one-row path alone, which lavapipe launches far
    /// more cheaply than the shader that also holds the multi-row path.
    pub fn for_dtype_one_row(ctx: &GpuContext, dtype: WeightDtype) -> Result<Self> {
        let f = ctx.features();
        Self::build(
            ctx,
            dtype,
            f.f16_unpack,
            f.subgroup,
            ctx.is_cpu_adapter(),
            Path::OneRow,
        )
    }

    /// [`Self::for_dtype`] reading x from a texture ([`Path::XTexture`]): what CPU adapters
    /// run their multi-row products with where [`Self::supports_x_texture`] allows.
    pub fn for_dtype_x_texture(ctx: &GpuContext, dtype: WeightDtype) -> Result<Self> {
        let f = ctx.features();
        Self::build(
            ctx,
            dtype,
            f.f16_unpack,
            f.subgroup,
            ctx.is_cpu_adapter(),
            Path::XTexture,
        )
    }

    /// The pipeline of a chosen variant (`unpack` needs `unpack2x16float` in shaders,
    /// `subgroup` the `SUBGROUP` feature; `narrow` picks workgroups of 8 invocations instead
    /// of 64; tests run every variant the device has).
    pub fn variant(
        ctx: &GpuContext,
        dtype: WeightDtype,
        unpack: bool,
        subgroup: bool,
        narrow: bool,
    ) -> Result<Self> {
        Self::build(ctx, dtype, unpack, subgroup, narrow, Path::AllRows)
    }

    /// [`Self::variant`] for the rows and x source of `path`: [`Path::OneRow`] pipelines
    /// take params with m = 1 only ([`Self::check_rows`]); [`Path::XTexture`] ones bind an x
    /// texture ([`Self::bind`]).
    pub fn variant_with_path(
        ctx: &GpuContext,
        dtype: WeightDtype,
        unpack: bool,
        subgroup: bool,
        narrow: bool,
        path: Path,
    ) -> Result<Self> {
        Self::build(ctx, dtype, unpack, subgroup, narrow, path)
    }

    fn build(
        ctx: &GpuContext,
        dtype: WeightDtype,
        unpack: bool,
        subgroup: bool,
        narrow: bool,
        path: Path,
    ) -> Result<Self> {
        if unpack && dtype == WeightDtype::F16 && !ctx.features().f16_unpack {
            return Err(Error::MissingFeature("SHADER_F16_IN_F32"));
        }
        if subgroup && !ctx.features().subgroup {
            return Err(Error::MissingFeature("SUBGROUP"));
        }
        let info = info(dtype, unpack, subgroup, narrow, path).ok_or_else(|| {
            Error::InvalidInput(format!("no {} variant of linear_tex", dtype.name()))
        })?;
        Ok(Self {
            pipeline: ctx.pipeline(info.label, info.source, info.bindings)?,
            dtype,
            narrow,
            path,
        })
    }

    /// Whether this pipeline takes one row of x only.
    pub fn is_one_row(&self) -> bool {
        self.path == Path::OneRow
    }

    /// Whether this pipeline reads x from a texture ([`LinearTexBindings::x_texture`]).
    pub fn reads_x_texture(&self) -> bool {
        self.path == Path::XTexture
    }

    /// [`Self::check`], and for a one-row pipeline that `params` has one row of x.
    pub fn check_rows(&self, params: &LinearTexParams) -> Result<()> {
        Self::check(params)?;
        if self.is_one_row() && params.m != 1 {
            return Err(Error::Shape(format!(
                "the one-row linear_tex takes one row of x, got m = {}",
                params.m
            )));
        }
        Ok(())
    }

    /// The weight storage this pipeline reads.
    pub fn dtype(&self) -> WeightDtype {
        self.dtype
    }

    /// Whether a product with reduction length `k` whose x rows start at multiples of
    /// `x_align` elements can run here: k a multiple of 8 (whole 8-column blocks) and x rows
    /// on vec4 boundaries.
    pub fn supports(k: usize, x_align: usize) -> bool {
        k > 0 && k.is_multiple_of(8) && x_align.is_multiple_of(4)
    }

    /// The grid of this pipeline's workgroup size: [`Self::workgroups`] or
    /// [`Self::workgroups_narrow`].
    pub fn workgroups_fn(&self) -> fn(&LinearTexParams) -> [u32; 3] {
        if self.narrow {
            Self::workgroups_narrow
        } else {
            Self::workgroups
        }
    }

    /// Wide workgroups: `ceil(n / 256)` × `ceil(m / 16)`, the second folded into (y, z) past
    /// 65,535.
    pub fn workgroups(params: &LinearTexParams) -> [u32; 3] {
        Self::grid(params, OUTPUTS_PER_GROUP)
    }

    /// Narrow workgroups: `ceil(n / 32)` × `ceil(m / 16)`, folded like [`Self::workgroups`].
    pub fn workgroups_narrow(params: &LinearTexParams) -> [u32; 3] {
        Self::grid(params, OUTPUTS_PER_NARROW_GROUP)
    }

    fn grid(params: &LinearTexParams, outputs: u32) -> [u32; 3] {
        if params.m == 0 || params.n == 0 {
            return [0, 1, 1];
        }
        let mb = params.m.div_ceil(ROWS_PER_GROUP);
        let z = mb.div_ceil(MAX_GROUPS_PER_DIM);
        [params.n.div_ceil(outputs), mb.div_ceil(z), z]
    }

    /// Checks the shader's preconditions on `params`.
    pub fn check(params: &LinearTexParams) -> Result<()> {
        if !params.k.is_multiple_of(8)
            || !params.x_offset.is_multiple_of(4)
            || !params.x_stride.is_multiple_of(4)
        {
            return Err(Error::Shape(format!(
                "linear_tex needs k % 8 == 0 and x offset/stride % 4 == 0, got k {}, offset {}, stride {}",
                params.k, params.x_offset, params.x_stride
            )));
        }
        if params.rows_per_line == 0 {
            return Err(Error::Shape("linear_tex: rows_per_line is 0".into()));
        }
        if params.flags & FLAG_NORM != 0 && params.m != 1 {
            return Err(Error::Shape(format!(
                "linear_tex: the fused RMSNorm takes one row of x, got {}",
                params.m
            )));
        }
        if params.flags & FLAG_CONV != 0 && !(1..=MAX_CONV_KERNEL).contains(&params.conv_kernel) {
            return Err(Error::Shape(format!(
                "linear_tex: conv step with {} taps (1 to {MAX_CONV_KERNEL})",
                params.conv_kernel
            )));
        }
        Ok(())
    }

    /// Whether an x-texture pipeline can take x rows `x_stride` elements apart (the same at
    /// every length) with reduction length `k`, up to `rows` rows: the copy's rows must be
    /// 256 bytes apart (wgpu's copy alignment: `x_stride % 64 == 0`), and the texture of
    /// `k / 4` texels by `rows` must fit the device's 2-D texture limit.
    pub fn supports_x_texture(ctx: &GpuContext, k: u32, x_stride: u32, rows: u32) -> bool {
        let max = ctx.texture_dimension_limit();
        k > 0
            && k.is_multiple_of(8)
            && x_stride >= k
            && x_stride.is_multiple_of(64)
            && (1..=max).contains(&rows)
            && k / 4 <= max
    }

    /// The texture an x-texture pipeline reads x from, for products of reduction length `k`
    /// and up to `rows` rows: `k / 4` rgba32float texels by `rows` (texel (c, r) is vec4 c of
    /// row r), copied into from x in front of each dispatch. One texture serves every product
    /// of that shape in a submission (each copy and its dispatch run in order).
    pub fn x_texture(ctx: &GpuContext, k: u32, rows: u32) -> Result<wgpu::Texture> {
        let max = ctx.texture_dimension_limit();
        if !k.is_multiple_of(8) || k / 4 > max || rows == 0 || rows > max {
            return Err(Error::Shape(format!(
                "linear_tex: an x texture of {} texels by {rows} rows (k {k}) is outside the \
                 device's {max} per side, or k is not a multiple of 8",
                k / 4
            )));
        }
        Ok(ctx.storage_texture(
            "mamba_wgpu.linear_tex.x",
            wgpu::TextureFormat::Rgba32Float,
            k / 4,
            rows,
        ))
    }

    /// Creates the dispatch (params uniform and bind group). An x-texture pipeline's dispatch
    /// carries the copy of x's `m` rows into `b.x_texture` in front of it, whose rectangle
    /// follows the params (so `x_offset` and `x_stride` apply to the copy; the stride must be
    /// a multiple of 64, see [`Self::supports_x_texture`]).
    ///
    /// # Panics
    /// If this pipeline reads x from a texture and `b.x_texture` is `None`.
    pub fn bind(
        &self,
        ctx: &GpuContext,
        params: &LinearTexParams,
        b: LinearTexBindings<'_>,
    ) -> Dispatch {
        let mut resources = vec![
            b.x.as_entire_binding(),
            wgpu::BindingResource::TextureView(b.w),
            b.bias.as_entire_binding(),
            b.y.as_entire_binding(),
            b.conv.weight.as_entire_binding(),
            b.conv.bias.as_entire_binding(),
            b.conv.state.as_entire_binding(),
            b.conv.out.as_entire_binding(),
            b.norm.as_entire_binding(),
        ];
        if !self.reads_x_texture() {
            return Dispatch::with_resources(
                ctx,
                &self.pipeline,
                params,
                &resources,
                self.workgroups_fn()(params),
            );
        }
        let xt = b
            .x_texture
            .expect("an x-texture linear_tex pipeline needs LinearTexBindings::x_texture");
        let view = xt.create_view(&Default::default());
        resources.push(wgpu::BindingResource::TextureView(&view));
        Dispatch::with_resources(
            ctx,
            &self.pipeline,
            params,
            &resources,
            self.workgroups_fn()(params),
        )
        .with_pre_copy(b.x, xt, x_copy_rect, params)
    }
}

/// The copy of x into the x texture for a dispatch's params: `m` rows of `k / 4` texels from
/// element `x_offset`, `x_stride` elements apart.
fn x_copy_rect(params: &[u8]) -> CopyRect {
    let p: LinearTexParams = bytemuck::pod_read_unaligned(params);
    CopyRect {
        offset: 4 * u64::from(p.x_offset),
        bytes_per_row: 4 * p.x_stride,
        texels: p.k / 4,
        rows: p.m,
    }
}
