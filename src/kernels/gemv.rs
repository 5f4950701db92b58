//! `gemv`: the matmul of `matmul` for a few rows (one decode step of a small batch): the same
//! params and buffers, a reduction-per-output layout instead of tiles. Any m works; w is
//! streamed once per 4 rows of x, so for many rows `matmul` (once per 64) is the better choice.
//!
//! Like `matmul`, two variants from one source by [`WeightDtype`]: the weight header of
//! `matmul` plus a gemv header that says how one u32 word of w meets x (one f32 value, or two
//! f16 values widened to f32, so each weight load feeds two columns).
//! See `shaders/gemv.wgsl`; CPU twin in `crate::reference`.

use std::sync::Arc;

use crate::context::{BindingKind, GpuContext, KernelPipeline};
use crate::error::{Error, Result};
use crate::kernels::matmul::{weights_f16_wgsl, weights_f32_wgsl};
pub use crate::kernels::matmul::{MatmulBuffers, MatmulParams};
use crate::kernels::{fold_workgroups, Dispatch, ShaderInfo};
use crate::tensor::WeightDtype;

/// Outputs (rows of w) one workgroup computes (`NR` in the shader).
pub const OUTPUTS_PER_GROUP: u32 = 8;

const BINDINGS: &[BindingKind] = &[
    BindingKind::Uniform,
    BindingKind::Storage,
    BindingKind::Storage,
    BindingKind::Storage,
    BindingKind::StorageRw,
];

/// How the reduction meets x for f32 weights: a word is one column.
macro_rules! gemv_f32_wgsl {
    () => {
        "// x values that word i of a row of w multiplies: column i.
fn x_word(base: u32, i: u32, k: u32) -> f32 { return x[base + i]; }
fn w_dot(wv: f32, xv: f32) -> f32 { return wv * xv; }
// 4 rows of x, one per lane.
alias XRows = vec4<f32>;
fn x_rows(a: f32, b: f32, c: f32, d: f32) -> vec4<f32> { return vec4<f32>(a, b, c, d); }
fn w_mac(wv: f32, xr: vec4<f32>) -> vec4<f32> { return wv * xr; }
"
    };
}

/// How the reduction meets x for packed f16 weights: a word is columns 2i and 2i + 1.
macro_rules! gemv_f16_wgsl {
    () => {
        "// x values that word i of a row of w multiplies: columns 2i and 2i + 1, the second read
// as 0 past k (where w holds its +0.0 pad; the clamped index keeps the load inside the row).
fn x_word(base: u32, i: u32, k: u32) -> vec2<f32> {
    let c = 2u * i;
    let odd = x[base + min(c + 1u, k - 1u)];
    return vec2<f32>(x[base + c], select(0.0, odd, c + 1u < k));
}
fn w_dot(wv: vec2<f32>, xv: vec2<f32>) -> f32 { return dot(wv, xv); }
// 4 rows of x: column 0 their even columns, column 1 their odd ones, so xr · wv is 4 sums.
alias XRows = mat2x4<f32>;
fn x_rows(a: vec2<f32>, b: vec2<f32>, c: vec2<f32>, d: vec2<f32>) -> mat2x4<f32> {
    return mat2x4<f32>(vec4<f32>(a.x, b.x, c.x, d.x), vec4<f32>(a.y, b.y, c.y, d.y));
}
fn w_mac(wv: vec2<f32>, xr: mat2x4<f32>) -> vec4<f32> { return xr * wv; }
"
    };
}

/// Static facts about the f32-weight shader.
pub const INFO: ShaderInfo = ShaderInfo {
    label: "mamba_wgpu.gemv",
    source: concat!(
        "// mamba_wgpu.gemv: shaders/gemv.wgsl with f32 weights.\n",
        weights_f32_wgsl!(),
        gemv_f32_wgsl!(),
        include_str!("../../shaders/gemv.wgsl")
    ),
    bindings: BINDINGS,
    params_size: std::mem::size_of::<MatmulParams>(),
};

/// Static facts about the f16-weight shader (same source, packed f16 weight headers).
pub const INFO_F16: ShaderInfo = ShaderInfo {
    label: "mamba_wgpu.gemv_f16",
    source: concat!(
        "// mamba_wgpu.gemv_f16: shaders/gemv.wgsl with f16 weights packed two per u32.\n",
        weights_f16_wgsl!(),
        gemv_f16_wgsl!(),
        include_str!("../../shaders/gemv.wgsl")
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
pub struct Gemv {
    pipeline: Arc<KernelPipeline>,
    dtype: WeightDtype,
}

impl Gemv {
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

    /// One workgroup of 64 invocations per [`OUTPUTS_PER_GROUP`] outputs (rows of w),
    /// folded into (x, y) past 65,535; every row of x is handled inside the group.
    pub fn workgroups(params: &MatmulParams) -> [u32; 3] {
        if params.m == 0 {
            return [0, 1, 1];
        }
        fold_workgroups(params.n.div_ceil(OUTPUTS_PER_GROUP))
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
