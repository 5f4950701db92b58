//! `matmul`: Tiled matmul for prefill, PyTorch Linear layout: `y[m, y_offset + n] (+)= Σ_k x[x_offset + m·x_stride + k] · w[n, k] + bias[bias_offset + n]` for m < M, n < N (the N rows of `w` bound; a paged weight is one dispatch per page with its column offset).
//! See `shaders/matmul.wgsl`; CPU twin in `crate::reference`.

use std::sync::Arc;

use crate::context::{BindingKind, GpuContext, KernelPipeline};
use crate::error::Result;
use crate::kernels::{fold_workgroups, Dispatch, ShaderInfo};

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
    /// `[n, k]` f32 weight (PyTorch `[out, in]`).
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

/// Static facts about the shader.
pub const INFO: ShaderInfo = ShaderInfo {
    label: "mamba_wgpu.matmul",
    source: include_str!("../../shaders/matmul.wgsl"),
    bindings: BINDINGS,
    params_size: std::mem::size_of::<MatmulParams>(),
};

/// The compiled kernel.
#[derive(Clone, Debug)]
pub struct Matmul {
    pipeline: Arc<KernelPipeline>,
}

impl Matmul {
    /// Builds (or fetches from the cache) the pipeline.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Ok(Self {
            pipeline: ctx.pipeline(INFO.label, INFO.source, INFO.bindings)?,
        })
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
