//! `matmul`: Tiled matmul for prefill, PyTorch Linear layout: `y[m, y_offset + n] (+)= Σ_k x[x_offset + m·x_stride + k] · w[n, k] + bias[bias_offset + n]` for m < M, n < N (the N rows of `w` bound; a paged weight is one dispatch per page with its column offset).
//!
//! Two variants from one source, chosen by the weight's [`WeightDtype`]: a small Rust-side header
//! prepended to `shaders/matmul.wgsl` declares the weight binding and its accessor `w_at`
//! (f32 values, or f16 packed two per u32 and widened to f32 in the shader, no shader feature
//! needed). Sums, bias, x and y are f32 in both.
//! See `shaders/matmul.wgsl`; CPU twin in `crate::reference`.

use std::sync::Arc;

use crate::context::{BindingKind, GpuContext, KernelPipeline};
use crate::error::{Error, Result};
use crate::kernels::{fold_workgroups, Dispatch, ShaderInfo};
use crate::tensor::WeightDtype;

/// Rows and columns of the output tile one workgroup computes (`TILE` in the shader).
pub const TILE: u32 = 64;

/// Mirrors `struct Params` in `shaders/matmul.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct MatmulParams {
    /// Rows of x (tokens).
    pub m: u32,
    /// Rows of w in this dispatch (output features).
    pub n: u32,
    /// Reduction length (input features).
    pub k: u32,
    /// Element offset of x's first row.
    pub x_offset: u32,
    /// Elements between rows of x.
    pub x_stride: u32,
    /// Element offset of y[0, 0] of this dispatch (a page's first output column).
    pub y_offset: u32,
    /// Elements between rows of y.
    pub y_stride: u32,
    /// Element offset into bias.
    pub bias_offset: u32,
    /// Bit 0: add bias. Bit 1: accumulate into y instead of overwriting.
    pub flags: u32,
    /// Padding to 48 bytes.
    pub _pad0: u32,
    /// Padding.
    pub _pad1: u32,
    /// Padding.
    pub _pad2: u32,
}

/// The buffers one dispatch reads and writes.
#[derive(Clone, Copy, Debug)]
pub struct MatmulBuffers<'a> {
    /// f32 input rows.
    pub x: &'a wgpu::Buffer,
    /// `[n, k]` weight (PyTorch `[out, in]`) in the kernel's [`WeightDtype`] layout: one page
    /// of a [`crate::tensor::PagedMatrix`].
    pub w: &'a wgpu::Buffer,
    /// f32 bias (bind any buffer when bit 0 of flags is clear).
    pub bias: &'a wgpu::Buffer,
    /// f32 output rows.
    pub y: &'a wgpu::Buffer,
}

const BINDINGS: &[BindingKind] = &[
    BindingKind::Uniform,
    BindingKind::Storage,
    BindingKind::Storage,
    BindingKind::Storage,
    BindingKind::StorageRw,
];

/// The weight binding and accessor for [`WeightDtype::F32`] storage, shared with `gemv`: a
/// string-literal macro so `concat!` can build the variants' sources at compile time.
macro_rules! weights_f32_wgsl {
    () => {
        "// Weight storage, f32 (tensor::WeightDtype::F32): w[row·k + i], one value per word.
@group(0) @binding(2) var<storage, read> w: array<f32>;
alias WWord = f32;
// u32 words per row of a [n, k] weight.
fn w_row_words(k: u32) -> u32 { return k; }
// Element (row, i) of a [n, k] weight.
fn w_at(row: u32, i: u32, k: u32) -> f32 { return w[row * k + i]; }
// The values of word idx.
fn w_word(idx: u32) -> f32 { return w[idx]; }
"
    };
}

/// The weight binding and accessor for [`WeightDtype::F16`] storage, shared with `gemv`.
/// The halves are widened by bit manipulation rather than with `unpack2x16float`: naga (and so
/// wgpu) admits that builtin only with the `SHADER_FLOAT16_IN_FLOAT32` capability, which the
/// shader validation test does not grant; `f16x2` is the one line to change for it.
macro_rules! weights_f16_wgsl {
    () => {
        "// Weight storage, f16 (tensor::WeightDtype::F16): row r is words r·ceil(k/2) ..; word j
// holds column 2j in its low half and column 2j + 1 in its high half (+0.0 past k when k is
// odd). Read as u32 and widened to f32 here, so no shader-f16 feature is needed.
@group(0) @binding(2) var<storage, read> w: array<u32>;
alias WWord = vec2<f32>;
// The two halves of a word as f32 (low half in .x), exact for every finite f16 (the loader
// stores no Inf or NaN). Normal halves: exponent and significand shifted into place and the
// bias moved from 15 to 127 (+112 << 23). Subnormal halves and zero: significand · 2^-24, so
// no f32 subnormal is formed that a GPU could flush to zero. The sign bit is moved last.
fn f16x2(word: u32) -> vec2<f32> {
    let h = vec2<u32>(word & 0xffffu, word >> 16u);
    let mag = h & vec2<u32>(0x7fffu);
    let normal = bitcast<vec2<f32>>((mag << vec2<u32>(13u)) + vec2<u32>(0x38000000u));
    let subnormal = vec2<f32>(mag) * 0x1p-24f;
    let v = select(subnormal, normal, mag >= vec2<u32>(0x400u));
    return bitcast<vec2<f32>>(bitcast<vec2<u32>>(v) | ((h & vec2<u32>(0x8000u)) << vec2<u32>(16u)));
}
// u32 words per row of a [n, k] weight.
fn w_row_words(k: u32) -> u32 { return (k + 1u) / 2u; }
// Element (row, i) of a [n, k] weight.
fn w_at(row: u32, i: u32, k: u32) -> f32 {
    let v = f16x2(w[row * ((k + 1u) / 2u) + (i >> 1u)]);
    return select(v.x, v.y, (i & 1u) != 0u);
}
// The values of word idx: columns 2j and 2j + 1 of its row.
fn w_word(idx: u32) -> vec2<f32> { return f16x2(w[idx]); }
"
    };
}

pub(crate) use {weights_f16_wgsl, weights_f32_wgsl};

/// Static facts about the f32-weight shader.
pub const INFO: ShaderInfo = ShaderInfo {
    label: "mamba_wgpu.matmul",
    source: concat!(
        "// mamba_wgpu.matmul: shaders/matmul.wgsl with f32 weights.\n",
        weights_f32_wgsl!(),
        include_str!("../../shaders/matmul.wgsl")
    ),
    bindings: BINDINGS,
    params_size: std::mem::size_of::<MatmulParams>(),
};

/// Static facts about the f16-weight shader (same source, packed f16 weight header).
pub const INFO_F16: ShaderInfo = ShaderInfo {
    label: "mamba_wgpu.matmul_f16",
    source: concat!(
        "// mamba_wgpu.matmul_f16: shaders/matmul.wgsl with f16 weights packed two per u32.\n",
        weights_f16_wgsl!(),
        include_str!("../../shaders/matmul.wgsl")
    ),
    bindings: BINDINGS,
    params_size: std::mem::size_of::<MatmulParams>(),
};

/// The variant that reads weights stored as `dtype`; none for Q8_0 and Q4_0, which
/// [`crate::kernels::gemv_q8_0`] and [`crate::kernels::gemv_q4_0`] read.
pub fn info(dtype: WeightDtype) -> Option<ShaderInfo> {
    match dtype {
        WeightDtype::F32 => Some(INFO),
        WeightDtype::F16 => Some(INFO_F16),
        WeightDtype::Q8_0 | WeightDtype::Q4_0 => None,
    }
}

/// The compiled kernel for one weight dtype.
#[derive(Clone, Debug)]
pub struct Matmul {
    pipeline: Arc<KernelPipeline>,
    dtype: WeightDtype,
}

impl Matmul {
    /// Builds (or fetches from the cache) the f32-weight pipeline.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Self::for_dtype(ctx, WeightDtype::F32)
    }

    /// Builds (or fetches from the cache) the pipeline for weights stored as `dtype`.
    pub fn for_dtype(ctx: &GpuContext, dtype: WeightDtype) -> Result<Self> {
        let info = info(dtype).ok_or_else(|| {
            Error::InvalidInput(format!("no {} variant of this kernel", dtype.name()))
        })?;
        Ok(Self {
            pipeline: ctx.pipeline(info.label, info.source, info.bindings)?,
            dtype,
        })
    }

    /// The weight storage this pipeline reads.
    pub fn dtype(&self) -> WeightDtype {
        self.dtype
    }

    /// One workgroup per 64×64 output tile, `ceil(n / 64) · ceil(m / 64)` in all, N tiles
    /// fastest (neighbouring groups share the x rows they stage), folded into (x, y) past
    /// 65,535. The shader recovers the tile from `wg.x + wg.y · num_workgroups.x`.
    pub fn workgroups(params: &MatmulParams) -> [u32; 3] {
        let tiles = params
            .n
            .div_ceil(TILE)
            .saturating_mul(params.m.div_ceil(TILE));
        fold_workgroups(tiles)
    }

    /// Creates the dispatch (params uniform and bind group).
    pub fn bind(&self, ctx: &GpuContext, params: &MatmulParams, b: MatmulBuffers<'_>) -> Dispatch {
        Dispatch::new(
            ctx,
            &self.pipeline,
            params,
            &[b.x, b.w, b.bias, b.y],
            Self::workgroups(params),
        )
    }
}
