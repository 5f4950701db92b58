//! What every Mamba family shares: the token embedding, the pre-norm residual stack, the final
//! norm and lm_head, sampling, and the [`Session`] (recurrent states, the prefill and decode
//! plans recorded over them). A family contributes its mixer through [`Mixer`].
//!
//! One block, for `rows = batch · len` tokens:
//! ```text
//! hidden += mix              (the previous block's mixer output; block 0 starts from the embedding)
//! normed  = rmsnorm(hidden) · norm.weight
//! mix     = mixer(normed)    (family specific; reads and updates this layer's states)
//! ```
//! then `logits = rmsnorm(hidden + mix) · norm_f · lm_headᵀ` and the sampler picks the next
//! token on the GPU.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::context::GpuContext;
use crate::error::{Error, Result};
use crate::kernels::conv1d::{Conv1dBuffers, Conv1dParams};
use crate::kernels::embedding::{Embedding, EmbeddingBuffers, EmbeddingParams};
use crate::kernels::gemv::Gemv;
use crate::kernels::gemv_q4_0::{self, GemvQ4};
use crate::kernels::gemv_q8_0::{self, GemvQ8};
use crate::kernels::linear_tex::{
    ConvStepBindings, LinearTex, LinearTexBindings, LinearTexParams, FLAG_ACCUMULATE, FLAG_BIAS,
    FLAG_CONV, FLAG_CONV_BIAS, FLAG_NORM,
};
use crate::kernels::matmul::{Matmul, MatmulBuffers, MatmulParams};
use crate::kernels::rmsnorm::{RmsNorm, RmsNormBuffers, RmsNormParams};
use crate::kernels::sample::{Sample, SampleBuffers, SampleParams};
use crate::model::plan::Plan;
use crate::model::weights::WeightSource;
use crate::model::Sampling;
use crate::profile::{self, Profile, ProfileMode};
use crate::tensor::{GpuTensor, PageStorage, PagedMatrix, WeightDtype, WeightStorage};

/// The rows a linear layer reads for a token count `len`: `(m, x_offset, x_stride)`, where an
/// `x_stride` of 0 keeps the layer's own.
pub(crate) type RowsFn = Arc<dyn Fn(u32) -> (u32, u32, u32) + Send + Sync>;

/// Products of at most this many rows run as GEMVs rather than tiled matmuls.
const GEMV_MAX_ROWS: u32 = 16;

/// What a mixer records into, for one layer.
pub(crate) struct Rec<'a> {
    /// The decode plan (one token per sequence, GEMV) or the prefill plan.
    pub decode: bool,
    /// Tokens per sequence the plan's buffers hold.
    pub cap: u32,
    /// Sequences.
    pub batch: u32,
    /// `[rows, d_model]` the mixer's input.
    pub normed: &'a wgpu::Buffer,
    /// `[rows, d_model]` the mixer's output.
    pub mix: &'a wgpu::Buffer,
    /// The mixer's activation buffers, as sized by [`Mixer::act_lens`].
    pub acts: &'a [wgpu::Buffer],
    /// This layer's state buffers, as sized by [`Mixer::state_lens`].
    pub states: &'a [wgpu::Buffer],
    /// Decoding one sequence over texture weights, the block's RMSNorm runs inside in_proj:
    /// `normed` is then the residual itself and in_proj must apply this norm to it.
    pub norm: Option<NormFuse<'a>>,
    /// out_proj adds into `mix` (the residual) instead of writing it (with `norm`: no norm
    /// dispatch is left to add it).
    pub accumulate_mix: bool,
    /// The plan's x textures (x-texture products on CPU adapters).
    pub x_textures: &'a XTextures,
}

/// The x textures of one plan's x-texture products ([`LinearTex::for_dtype_x_texture`]): one
/// per (k, rows) shape, shared by every product of that shape, since each product's copy into
/// it runs just before its own dispatch and a plan's dispatches run in order.
#[derive(Default)]
pub(crate) struct XTextures(Mutex<Vec<((u32, u32), wgpu::Texture)>>);

impl XTextures {
    /// The texture for products of reduction length `k` and up to `rows` rows of x.
    fn get(&self, ctx: &GpuContext, k: u32, rows: u32) -> Result<wgpu::Texture> {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, t)) = v.iter().find(|(key, _)| *key == (k, rows)) {
            return Ok(t.clone());
        }
        let t = LinearTex::x_texture(ctx, k, rows)?;
        v.push(((k, rows), t.clone()));
        Ok(t)
    }
}

/// One model family's mixer: its weights, buffers and dispatches.
pub(crate) trait Mixer: Send + Sync {
    /// Blocks.
    fn n_layer(&self) -> usize;
    /// Element counts of each state buffer of one layer for `batch` sequences.
    fn state_lens(&self, batch: usize) -> Vec<usize>;
    /// Element counts of the activation buffers for `batch` sequences of `cap` tokens.
    fn act_lens(&self, batch: usize, cap: usize) -> Vec<usize>;
    /// The widest activation per token, in elements (the prefill chunk is cut to fit it).
    fn widest_row(&self) -> usize;
    /// Bytes of the mixer's weight matrices that one decode step streams.
    fn weight_bytes(&self) -> u64;
    /// Records layer `i`'s mixer.
    fn record(&self, lm: &Lm, plan: &mut Plan, i: usize, r: &Rec<'_>) -> Result<()>;
    /// Layer `i`'s in_proj, the product that can take the block's norm (see [`Rec::norm`]).
    fn in_proj(&self, i: usize) -> &PagedMatrix;
}

pub(crate) struct CommonKernels {
    rmsnorm: RmsNorm,
    embedding: Embedding,
    matmul: Matmul,
    gemv: Gemv,
    /// The same products over f16 weights.
    matmul_f16: Matmul,
    gemv_f16: Gemv,
    /// The products over texture-stored weights (prefill and decode alike).
    linear_tex: LinearTex,
    linear_tex_f16: LinearTex,
    /// The same for products of one row of x (decoding one sequence, a prompt's last-token
    /// lm_head): the one-row path alone.
    linear_tex_row: LinearTex,
    linear_tex_f16_row: LinearTex,
    /// The same reading x from a texture, for multi-row products on CPU adapters (whose
    /// storage loads cost far more than texel fetches); not built elsewhere.
    linear_tex_xt: Option<LinearTex>,
    linear_tex_f16_xt: Option<LinearTex>,
    /// The dequantising product over Q8_0 weights (buffers only).
    gemv_q8_0: GemvQ8,
    /// The same over Q4_0 weights.
    gemv_q4_0: GemvQ4,
    sample: Sample,
}

/// A loaded language model: the shared parts plus a family's mixer.
pub(crate) struct Lm {
    pub ctx: Arc<GpuContext>,
    /// Embedding rows (the vocabulary, padded where the checkpoint pads it).
    pub vocab: usize,
    pub d_model: usize,
    pub eps: f32,
    embedding: PagedMatrix,
    lm_head: Option<PagedMatrix>,
    block_norms: Vec<GpuTensor>,
    norm_f: GpuTensor,
    /// Bound where a kernel's optional input (a bias) is absent.
    pub dummy: wgpu::Buffer,
    /// A second placeholder for read-write bindings that are not used (a buffer may not be
    /// bound read-only and read-write in one dispatch).
    pub dummy_rw: wgpu::Buffer,
    k: CommonKernels,
    pub mixer: Box<dyn Mixer>,
}

/// Shape facts the shared part needs from a family's config.
pub(crate) struct LmDims {
    pub d_model: usize,
    pub n_layer: usize,
    pub vocab_size: usize,
    pub padded_vocab: usize,
    pub tie_embeddings: bool,
    pub eps: f32,
    /// Storage of lm_head (a tied one gets its own copy when this is not f32); the mixers
    /// apply it to their projections.
    pub dtype: WeightDtype,
    /// Where lm_head lives (a tied one gets its own texture copy when that is a texture).
    pub storage: WeightStorage,
}

/// Uploads a `[rows, cols]` weight matrix from `src` stored as `dtype` (converted from the
/// checkpoint's f32/f16/bf16 on the CPU) in `storage`, paged to the device's limits. The
/// rows of x the matrix will multiply start at multiples of `x_align` elements: the texture
/// kernel reads x as vec4s, so a matrix whose x rows are not vec4-aligned stays in buffers.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matrix(
    ctx: &GpuContext,
    src: &dyn WeightSource,
    name: &str,
    rows: usize,
    cols: usize,
    dtype: WeightDtype,
    storage: WeightStorage,
    x_align: usize,
) -> Result<PagedMatrix> {
    // A source's own Q8_0 or Q4_0 blocks go up as they are, whatever dtype was asked for:
    // widening them would only cost memory and bandwidth for the same values. (Not for the
    // embedding table, which `matrix_f32` reads: its gather reads f32 rows.)
    if let Some(words) = src.q8_0_words(name, rows, cols) {
        return PagedMatrix::from_q8_0_words(ctx, name, &words?, rows, cols);
    }
    if let Some(words) = src.q4_0_words(name, rows, cols) {
        return PagedMatrix::from_q4_0_words(ctx, name, &words?, rows, cols);
    }
    matrix_f32(ctx, src, name, rows, cols, dtype, storage, x_align)
}

/// [`matrix`] for a caller that has already read the matrix's values from `src` (and needs
/// them for something else too), so they are not read and converted a second time. A
/// source's own blocks still go up as they are.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matrix_from_values(
    ctx: &GpuContext,
    src: &dyn WeightSource,
    name: &str,
    values: &[f32],
    rows: usize,
    cols: usize,
    dtype: WeightDtype,
    storage: WeightStorage,
    x_align: usize,
) -> Result<PagedMatrix> {
    if let Some(words) = src.q8_0_words(name, rows, cols) {
        return PagedMatrix::from_q8_0_words(ctx, name, &words?, rows, cols);
    }
    if let Some(words) = src.q4_0_words(name, rows, cols) {
        return PagedMatrix::from_q4_0_words(ctx, name, &words?, rows, cols);
    }
    upload_matrix(ctx, src, name, values, rows, cols, dtype, storage, x_align)
}

/// [`matrix`] from the source's values as f32, whatever the source stores. Q8_0 or Q4_0 asked
/// of a matrix whose rows are not whole 32-value blocks gives f16, as llama.cpp's converter
/// does.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matrix_f32(
    ctx: &GpuContext,
    src: &dyn WeightSource,
    name: &str,
    rows: usize,
    cols: usize,
    dtype: WeightDtype,
    storage: WeightStorage,
    x_align: usize,
) -> Result<PagedMatrix> {
    let data = src.f32(name, &[rows, cols])?;
    upload_matrix(ctx, src, name, &data, rows, cols, dtype, storage, x_align)
}

/// Uploads `data` (`[rows, cols]` f32 values of `name` in `src`) as [`matrix_f32`] does.
#[allow(clippy::too_many_arguments)]
fn upload_matrix(
    ctx: &GpuContext,
    src: &dyn WeightSource,
    name: &str,
    data: &[f32],
    rows: usize,
    cols: usize,
    dtype: WeightDtype,
    storage: WeightStorage,
    x_align: usize,
) -> Result<PagedMatrix> {
    let dtype = if dtype.is_blocks() && !cols.is_multiple_of(32) {
        WeightDtype::F16
    } else {
        dtype
    };
    let storage = if LinearTex::supports(cols, x_align) {
        storage
    } else {
        WeightStorage::Buffer
    };
    PagedMatrix::from_slice_stored(ctx, name, data, rows, cols, dtype, storage).map_err(|e| match e
    {
        // Name the file as well when a value does not fit f16.
        Error::InvalidInput(msg) => Error::tensor(src.file_of(name), name, msg),
        e => e,
    })
}

/// Uploads a small tensor from `src`.
pub(crate) fn vector(
    ctx: &GpuContext,
    src: &dyn WeightSource,
    name: &str,
    shape: &[usize],
) -> Result<GpuTensor> {
    let n = shape.iter().product();
    GpuTensor::from_slice(ctx, name, &src.f32(name, shape)?, &[n])
}

impl Lm {
    /// Loads the embedding, block norms, final norm and lm_head around `mixer`.
    pub fn load(
        ctx: Arc<GpuContext>,
        src: &dyn WeightSource,
        dims: &LmDims,
        mixer: Box<dyn Mixer>,
    ) -> Result<Self> {
        let d = dims.d_model;
        let emb_name = ["backbone.embeddings.weight", "backbone.embedding.weight"]
            .into_iter()
            .find(|n| src.contains(n))
            .ok_or_else(|| {
                Error::tensor(
                    src.file_of("backbone.embeddings.weight"),
                    "backbone.embeddings.weight",
                    "missing tensor (nor backbone.embedding.weight)",
                )
            })?;
        let vocab = src.shape(emb_name)?.first().copied().unwrap_or(0);
        if vocab != dims.vocab_size && vocab != dims.padded_vocab {
            return Err(Error::tensor(
                src.file_of(emb_name),
                emb_name,
                format!(
                    "{vocab} rows but config.json says vocab_size {} (padded: {})",
                    dims.vocab_size, dims.padded_vocab
                ),
            ));
        }
        // The embedding gather reads f32 rows, so the table stays f32; a tied lm_head in
        // another dtype is a second copy of it (the head is streamed whole every step, the
        // table only gathered).
        let embedding = matrix_f32(
            &ctx,
            src,
            emb_name,
            vocab,
            d,
            WeightDtype::F32,
            WeightStorage::Buffer,
            d,
        )?;
        let head = |name| matrix(&ctx, src, name, vocab, d, dims.dtype, dims.storage, d);
        let head_is_table = dims.dtype == WeightDtype::F32
            && !(LinearTex::supports(d, d) && dims.storage.uses_texture(&ctx, d, dims.dtype));
        let lm_head = if !dims.tie_embeddings {
            Some(head("lm_head.weight")?)
        } else if !head_is_table {
            Some(head(emb_name)?)
        } else {
            None
        };
        let block_norms = (0..dims.n_layer)
            .map(|i| vector(&ctx, src, &format!("backbone.layers.{i}.norm.weight"), &[d]))
            .collect::<Result<Vec<_>>>()?;
        let norm_f = vector(&ctx, src, "backbone.norm_f.weight", &[d])?;
        let cpu = ctx.is_cpu_adapter();
        let k = CommonKernels {
            rmsnorm: RmsNorm::new(&ctx)?,
            embedding: Embedding::new(&ctx)?,
            matmul: Matmul::new(&ctx)?,
            gemv: Gemv::new(&ctx)?,
            matmul_f16: Matmul::for_dtype(&ctx, WeightDtype::F16)?,
            gemv_f16: Gemv::for_dtype(&ctx, WeightDtype::F16)?,
            linear_tex: LinearTex::for_dtype(&ctx, WeightDtype::F32)?,
            linear_tex_f16: LinearTex::for_dtype(&ctx, WeightDtype::F16)?,
            linear_tex_row: LinearTex::for_dtype_one_row(&ctx, WeightDtype::F32)?,
            linear_tex_f16_row: LinearTex::for_dtype_one_row(&ctx, WeightDtype::F16)?,
            linear_tex_xt: cpu
                .then(|| LinearTex::for_dtype_x_texture(&ctx, WeightDtype::F32))
                .transpose()?,
            linear_tex_f16_xt: cpu
                .then(|| LinearTex::for_dtype_x_texture(&ctx, WeightDtype::F16))
                .transpose()?,
            gemv_q8_0: GemvQ8::new(&ctx)?,
            gemv_q4_0: GemvQ4::new(&ctx)?,
            sample: Sample::new(&ctx)?,
        };
        let dummy = ctx.storage_buffer("dummy", 4)?;
        let dummy_rw = ctx.storage_buffer("dummy_rw", 4)?;
        ctx.wait()?;
        Ok(Self {
            ctx,
            vocab,
            d_model: d,
            eps: dims.eps,
            embedding,
            lm_head,
            block_norms,
            norm_f,
            dummy,
            dummy_rw,
            k,
            mixer,
        })
    }

    /// Bytes of every weight matrix (the tied embedding counted once, as lm_head).
    pub fn weight_bytes(&self) -> u64 {
        self.lm_head.as_ref().unwrap_or(&self.embedding).bytes() + self.mixer.weight_bytes()
    }

    /// Adds `y[row, page cols] = x[row, ..] · pageᵀ (+ bias)` for every page of `w`: for
    /// buffer pages a tiled matmul in the prefill plan and a GEMV in the decode plan, for
    /// texture pages the texture kernel in both, each the variant for `w`'s dtype.
    #[allow(clippy::too_many_arguments)]
    pub fn linear(
        &self,
        plan: &mut Plan,
        r: &Rec<'_>,
        x: &wgpu::Buffer,
        x_stride: u32,
        w: &PagedMatrix,
        bias: Option<&GpuTensor>,
        y: &wgpu::Buffer,
        y_stride: u32,
        rows: RowsFn,
    ) -> Result<()> {
        self.linear_fused(
            plan,
            r,
            x,
            x_stride,
            w,
            bias,
            y,
            y_stride,
            rows,
            Fuse::default(),
        )
    }

    /// [`Lm::linear`] with what `fuse` asks: the one-token conv step after the product and
    /// the block's RMSNorm in front of it (decode plans only, `w` in textures
    /// ([`PagedMatrix::is_texture`]): the texture kernel has them, the buffer GEMVs do not;
    /// the norm for one sequence only), and accumulating into `y`.
    #[allow(clippy::too_many_arguments)]
    pub fn linear_fused(
        &self,
        plan: &mut Plan,
        r: &Rec<'_>,
        x: &wgpu::Buffer,
        x_stride: u32,
        w: &PagedMatrix,
        bias: Option<&GpuTensor>,
        y: &wgpu::Buffer,
        y_stride: u32,
        rows: RowsFn,
        fuse: Fuse<'_>,
    ) -> Result<()> {
        let conv = fuse.conv;
        if (conv.is_some() || fuse.norm.is_some()) && !(r.decode && w.is_texture()) {
            return Err(Error::InvalidInput(
                "the conv step and the norm fuse only into a decode product over texture pages"
                    .into(),
            ));
        }
        let ctx = &*self.ctx;
        // Q8_0 and Q4_0 have one kernel each, the dequantising GEMV, for decode and prefill
        // alike (it streams w once per 4 rows of x).
        let (matmul, gemv, tex, tex_row, tex_xt) = match w.dtype {
            WeightDtype::F32 => (
                &self.k.matmul,
                &self.k.gemv,
                &self.k.linear_tex,
                &self.k.linear_tex_row,
                self.k.linear_tex_xt.as_ref(),
            ),
            WeightDtype::F16 | WeightDtype::Q8_0 | WeightDtype::Q4_0 => (
                &self.k.matmul_f16,
                &self.k.gemv_f16,
                &self.k.linear_tex_f16,
                &self.k.linear_tex_f16_row,
                self.k.linear_tex_f16_xt.as_ref(),
            ),
        };
        // A product whose x has one row at every length (m is constant or grows with len, so
        // the first length's and the capacity's cover them all) takes the one-row texture
        // pipeline. Others on a CPU adapter (where the x-texture pipelines exist) read x from
        // a texture where the copy into it can take x's rows: a stride that is the same at
        // every length (so the capacity's and one token's cover them all) and passes
        // LinearTex::supports_x_texture.
        let (one, at_cap) = (rows(1), rows(r.cap));
        let stride = |xs: u32| if xs == 0 { x_stride } else { xs };
        let (tex, x_texture) = match tex_xt {
            _ if one.0 == 1 && at_cap.0 == 1 => (tex_row, None),
            Some(xt)
                if stride(one.2) == stride(at_cap.2)
                    && LinearTex::supports_x_texture(
                        ctx,
                        w.cols as u32,
                        stride(at_cap.2),
                        at_cap.0,
                    ) =>
            {
                (xt, Some(r.x_textures.get(ctx, w.cols as u32, at_cap.0)?))
            }
            _ => (tex, None),
        };
        // A GEMV streams each weight once for a few rows; the tiled matmul pays for tiles of 64
        // rows, so a product of few rows (decode, or the prefill's last-token lm_head) uses the
        // GEMV. The row count is the plan's largest (its capacity).
        let few_rows = r.decode || rows(r.cap).0 <= GEMV_MAX_ROWS;
        let bias_buf = bias.map(|t| &t.buffer).unwrap_or(&self.dummy);
        for page in &w.pages {
            let (n_rows, col0, k) = (page.rows as u32, page.row_start as u32, w.cols as u32);
            // Bits 0 and 1 mean the same in every Linear kernel's params.
            let flags = if bias.is_some() { FLAG_BIAS } else { 0 }
                | if fuse.accumulate { FLAG_ACCUMULATE } else { 0 };
            let rows = rows.clone();
            let params = move |len: u32| {
                let (m, x_offset, xs) = rows(len);
                MatmulParams {
                    m,
                    n: n_rows,
                    k,
                    x_offset,
                    x_stride: if xs == 0 { x_stride } else { xs },
                    y_offset: col0,
                    y_stride,
                    bias_offset: col0,
                    flags,
                    ..Default::default()
                }
            };
            match &page.storage {
                PageStorage::Buffer(wb) => {
                    let bufs = MatmulBuffers {
                        x,
                        w: wb,
                        bias: bias_buf,
                        y,
                    };
                    if w.dtype == WeightDtype::Q8_0 {
                        gemv_q8_0::check_params(&params(r.cap))?;
                        let q8 = &self.k.gemv_q8_0;
                        plan.push(r.cap, params, GemvQ8::workgroups, |p| q8.bind(ctx, p, bufs));
                    } else if w.dtype == WeightDtype::Q4_0 {
                        gemv_q4_0::check_params(&params(r.cap))?;
                        let q4 = &self.k.gemv_q4_0;
                        plan.push(r.cap, params, GemvQ4::workgroups, |p| q4.bind(ctx, p, bufs));
                    } else if few_rows {
                        plan.push(r.cap, params, Gemv::workgroups, |p| gemv.bind(ctx, p, bufs));
                    } else {
                        plan.push(r.cap, params, Matmul::workgroups, |p| {
                            matmul.bind(ctx, p, bufs)
                        });
                    }
                }
                PageStorage::Texture {
                    view,
                    rows_per_line,
                    ..
                } => {
                    let rows_per_line = *rows_per_line as u32;
                    let conv_p = conv.map(|c| c.params);
                    let norm_eps = fuse.norm.map(|n| n.eps);
                    let tex_params = move |len: u32| {
                        let p = params(len);
                        let mut t = LinearTexParams {
                            m: p.m,
                            n: p.n,
                            k: p.k,
                            x_offset: p.x_offset,
                            x_stride: p.x_stride,
                            y_offset: p.y_offset,
                            y_stride: p.y_stride,
                            bias_offset: p.bias_offset,
                            flags: p.flags,
                            rows_per_line,
                            col_base: col0,
                            ..Default::default()
                        };
                        if let Some(eps) = norm_eps {
                            t.flags |= FLAG_NORM;
                            t.norm_eps = eps;
                        }
                        if let Some(c) = conv_p {
                            t.flags |= FLAG_CONV | if c.has_bias { FLAG_CONV_BIAS } else { 0 };
                            t.conv_start = c.start;
                            t.conv_channels = c.channels;
                            t.conv_kernel = c.kernel;
                            t.conv_out_stride = c.out_stride;
                        }
                        t
                    };
                    // Offsets for every length are multiples of the stride, so checking the
                    // capacity's and one token's covers the plan.
                    tex.check_rows(&tex_params(r.cap))?;
                    tex.check_rows(&tex_params(1))?;
                    let b = LinearTexBindings {
                        x,
                        w: view,
                        bias: bias_buf,
                        y,
                        conv: conv
                            .map(|c| c.bufs)
                            .unwrap_or(ConvStepBindings::unused(&self.dummy, &self.dummy_rw)),
                        norm: fuse.norm.map(|n| n.weight).unwrap_or(&self.dummy),
                        x_texture: x_texture.as_ref(),
                    };
                    plan.push(r.cap, tex_params, tex.workgroups_fn(), |p| {
                        tex.bind(ctx, p, b)
                    });
                }
            }
        }
        Ok(())
    }

    /// Every token of the batch: `rows(len) = (batch · len, 0, own stride)`.
    pub fn all_rows(batch: u32) -> RowsFn {
        Arc::new(move |len| (batch * len, 0, 0))
    }
}

/// What a product carries besides itself ([`Lm::linear_fused`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Fuse<'a> {
    /// The one-token conv step on the conv channels' outputs.
    pub conv: Option<ConvFuse<'a>>,
    /// The block's RMSNorm of x in front.
    pub norm: Option<NormFuse<'a>>,
    /// Add the product to `y` (the residual) instead of overwriting it.
    pub accumulate: bool,
}

/// The RMSNorm a decode product applies to its x (see `shaders/linear_tex.wgsl`).
#[derive(Clone, Copy, Debug)]
pub struct NormFuse<'a> {
    /// The norm weight, `[d_model]` f32.
    pub weight: &'a wgpu::Buffer,
    /// Epsilon inside the square root.
    pub eps: f32,
}

/// Where the conv step fused into a decode product reads and writes (see
/// [`Lm::linear_fused`] and `shaders/linear_tex.wgsl`).
#[derive(Clone, Copy, Debug)]
pub struct ConvFuse<'a> {
    /// Taps, channels and where they sit among the product's output columns.
    pub params: ConvFuseParams,
    /// Conv weight, bias, state and output.
    pub bufs: ConvStepBindings<'a>,
}

impl<'a> ConvFuse<'a> {
    /// The fused form of the one-token conv dispatch `p` over `b`, whose input rows (`x` at
    /// `x_offset`, `x_stride` apart) are the product's output rows.
    pub fn of(p: &Conv1dParams, b: &Conv1dBuffers<'a>) -> Self {
        Self {
            params: ConvFuseParams {
                start: p.x_offset,
                channels: p.channels,
                kernel: p.kernel,
                out_stride: p.out_stride,
                has_bias: p.has_bias != 0,
            },
            bufs: ConvStepBindings {
                weight: b.weight,
                bias: b.bias,
                state: b.state,
                out: b.out,
            },
        }
    }
}

/// The numbers of a [`ConvFuse`].
#[derive(Clone, Copy, Debug)]
pub struct ConvFuseParams {
    /// The first output column that is a conv channel.
    pub start: u32,
    /// Conv channels.
    pub channels: u32,
    /// Taps K.
    pub kernel: u32,
    /// Elements between rows (sequences) of the conv output.
    pub out_stride: u32,
    /// Whether the conv has a bias.
    pub has_bias: bool,
}

/// How a session is sized.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// Sequences decoded together (each with its own state).
    pub batch: usize,
    /// Tokens per sequence in one prefill chunk; longer prompts run in several chunks that
    /// carry the state, so activation memory stays bounded. Lowered to fit the device.
    pub max_chunk_tokens: usize,
    /// Keep the logits of every prompt position (for scoring and tests), not only the last.
    pub all_logits: bool,
    /// How the next token is chosen.
    pub sampling: Sampling,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            batch: 1,
            max_chunk_tokens: 512,
            all_logits: false,
            sampling: Sampling::default(),
        }
    }
}

/// Activation buffers for one plan.
struct Acts {
    ids: wgpu::Buffer,
    hidden: wgpu::Buffer,
    normed: wgpu::Buffer,
    mix: wgpu::Buffer,
    logits: wgpu::Buffer,
    mixer: Vec<wgpu::Buffer>,
    x_textures: XTextures,
}

/// A batch of sequences being generated: every layer's recurrent states, the prefill and decode
/// plans recorded over them (bind groups and buffers made once), and the sampler's state.
pub struct Session {
    m: Arc<Lm>,
    batch: usize,
    chunk: usize,
    all_logits: bool,
    sampling: Sampling,
    /// Per layer, the mixer's state buffers.
    states: Vec<Vec<wgpu::Buffer>>,
    /// `[batch]` u32: the last sampled tokens, the decode step's input.
    next_ids: wgpu::Buffer,
    steps: wgpu::Buffer,
    readback: wgpu::Buffer,
    prefill_acts: Acts,
    prefill: Plan,
    prefill_sample: Plan,
    decode_acts: Acts,
    decode: Plan,
    decode_sample: Plan,
    position: usize,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("batch", &self.batch)
            .field("chunk", &self.chunk)
            .field("position", &self.position)
            .finish()
    }
}

impl Session {
    pub(crate) fn new(m: Arc<Lm>, o: &SessionOptions) -> Result<Self> {
        o.sampling.validate()?;
        // A lost device (or an earlier error) is reported here, not at the first call.
        m.ctx.check()?;
        if o.batch == 0 || o.max_chunk_tokens == 0 {
            return Err(Error::InvalidInput(
                "batch and max_chunk_tokens must be at least 1".into(),
            ));
        }
        let ctx = m.ctx.clone();
        let b = o.batch;
        let limit = ctx.storage_binding_limit();
        // The chunk is cut so that batch · chunk rows of the widest activation fit one binding.
        let widest = [
            m.mixer.widest_row(),
            m.d_model,
            if o.all_logits { m.vocab } else { 0 },
        ]
        .into_iter()
        .max()
        .unwrap_or(1) as u64;
        let fit = limit / (widest * 4 * b as u64);
        let chunk = (o.max_chunk_tokens as u64).min(fit).min(1 << 20) as usize;
        if chunk == 0 || (m.vocab * b * 4) as u64 > limit {
            return Err(Error::LimitExceeded {
                what: format!("activations of a batch of {b}"),
                needed: widest.max(m.vocab as u64) * 4 * b as u64,
                limit,
            });
        }
        let states = (0..m.mixer.n_layer())
            .map(|_| {
                m.mixer
                    .state_lens(b)
                    .into_iter()
                    .map(|n| ctx.storage_buffer("state", n))
                    .collect()
            })
            .collect::<Result<Vec<Vec<_>>>>()?;
        let next_ids = ctx.storage_buffer("next_ids", b)?;
        let steps = ctx.storage_buffer("sample_steps", b)?;
        let readback = ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("mamba_wgpu.token_readback"),
            size: (b * 4) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let acts = |cap: usize, logit_rows: usize| -> Result<Acts> {
            let rows = b * cap;
            Ok(Acts {
                ids: ctx.storage_buffer("ids", rows)?,
                hidden: ctx.storage_buffer("hidden", rows * m.d_model)?,
                normed: ctx.storage_buffer("normed", rows * m.d_model)?,
                mix: ctx.storage_buffer("mix", rows * m.d_model)?,
                logits: ctx.storage_buffer("logits", logit_rows * m.vocab)?,
                mixer: m
                    .mixer
                    .act_lens(b, cap)
                    .into_iter()
                    .map(|n| ctx.storage_buffer("mixer", n))
                    .collect::<Result<_>>()?,
                x_textures: XTextures::default(),
            })
        };
        let prefill_acts = acts(chunk, if o.all_logits { b * chunk } else { b })?;
        let decode_acts = acts(1, b)?;
        let mut s = Self {
            m,
            batch: b,
            chunk,
            all_logits: o.all_logits,
            sampling: o.sampling.clone(),
            states,
            next_ids,
            steps,
            readback,
            prefill_acts,
            prefill: Plan::default(),
            prefill_sample: Plan::default(),
            decode_acts,
            decode: Plan::default(),
            decode_sample: Plan::default(),
            position: 0,
        };
        s.prefill = s.build(false)?;
        s.decode = s.build(true)?;
        s.prefill_sample = s.build_sample(false);
        s.decode_sample = s.build_sample(true);
        Ok(s)
    }

    /// Records every dispatch of one forward over `len` tokens per sequence (the prefill plan,
    /// capacity `chunk`) or one token per sequence (the decode plan).
    fn build(&self, decode: bool) -> Result<Plan> {
        let m = &*self.m;
        let ctx = &*m.ctx;
        let (b, dm, eps) = (self.batch as u32, m.d_model as u32, m.eps);
        let a = if decode {
            &self.decode_acts
        } else {
            &self.prefill_acts
        };
        let cap = if decode { 1 } else { self.chunk as u32 };
        let ids = if decode { &self.next_ids } else { &a.ids };
        let mut plan = Plan::default();
        for page in &m.embedding.pages {
            let (row_start, rows) = (page.row_start as u32, page.rows as u32);
            // The loader always puts the table in buffers (the gather reads storage).
            let table = page
                .buffer()
                .ok_or_else(|| Error::Gpu("embedding table outside a storage buffer".into()))?;
            plan.push(
                cap,
                move |len| EmbeddingParams {
                    tokens: b * len,
                    dim: dm,
                    row_start,
                    rows,
                },
                Embedding::workgroups,
                |p| {
                    m.k.embedding.bind(
                        ctx,
                        p,
                        EmbeddingBuffers {
                            ids,
                            table,
                            out: &a.hidden,
                        },
                    )
                },
            );
        }
        let norm = |plan: &mut Plan, weight: &GpuTensor, add: u32| {
            plan.push(
                cap,
                move |len| RmsNormParams {
                    rows: b * len,
                    cols: dm,
                    eps,
                    add,
                },
                RmsNorm::workgroups,
                |p| {
                    let bufs = RmsNormBuffers {
                        residual: &a.hidden,
                        delta: &a.mix,
                        weight: &weight.buffer,
                        out: &a.normed,
                    };
                    m.k.rmsnorm.bind(ctx, p, bufs)
                },
            );
        };
        // Decoding one sequence with every in_proj in textures, each block's norm runs inside
        // its in_proj (on the residual) and out_proj adds into the residual: the norm
        // dispatches (and their residual adds) go, but for the final one.
        let fuse_norm =
            decode && b == 1 && (0..m.mixer.n_layer()).all(|i| m.mixer.in_proj(i).is_texture());
        for i in 0..m.mixer.n_layer() {
            plan.mark();
            if !fuse_norm {
                norm(&mut plan, &m.block_norms[i], (i > 0) as u32);
            }
            let r = Rec {
                decode,
                cap,
                batch: b,
                normed: if fuse_norm { &a.hidden } else { &a.normed },
                mix: if fuse_norm { &a.hidden } else { &a.mix },
                acts: &a.mixer,
                states: &self.states[i],
                norm: fuse_norm.then_some(NormFuse {
                    weight: &m.block_norms[i].buffer,
                    eps,
                }),
                accumulate_mix: fuse_norm,
                x_textures: &a.x_textures,
            };
            m.mixer.record(m, &mut plan, i, &r)?;
        }
        plan.mark();
        norm(&mut plan, &m.norm_f, (!fuse_norm) as u32);
        let head = m.lm_head.as_ref().unwrap_or(&m.embedding);
        let rows: RowsFn = if self.all_logits && !decode {
            Lm::all_rows(b)
        } else {
            // Only the last token of each sequence: row b·len + len-1, a stride of len rows.
            Arc::new(move |len: u32| (b, (len - 1) * dm, len * dm))
        };
        let r = Rec {
            decode,
            cap,
            batch: b,
            normed: &a.normed,
            mix: &a.mix,
            acts: &[],
            states: &[],
            norm: None,
            accumulate_mix: false,
            x_textures: &a.x_textures,
        };
        m.linear(
            &mut plan,
            &r,
            &a.normed,
            dm,
            head,
            None,
            &a.logits,
            m.vocab as u32,
            rows,
        )?;
        Ok(plan)
    }

    /// The sampling dispatch: reads the last position's logits, writes `next_ids`.
    fn build_sample(&self, decode: bool) -> Plan {
        let m = &*self.m;
        let a = if decode {
            &self.decode_acts
        } else {
            &self.prefill_acts
        };
        let (b, vocab) = (self.batch as u32, m.vocab as u32);
        let all = self.all_logits && !decode;
        let s = self.sampling.clone();
        let cap = if decode { 1 } else { self.chunk as u32 };
        let mut plan = Plan::default();
        plan.push(
            cap,
            move |len| {
                let mut p: SampleParams = s.params(b, vocab);
                if all {
                    p.logits_offset = (len - 1) * vocab;
                    p.logits_stride = len * vocab;
                }
                p
            },
            Sample::workgroups,
            |p| {
                m.k.sample.bind(
                    &m.ctx,
                    p,
                    SampleBuffers {
                        logits: &a.logits,
                        steps: &self.steps,
                        out: &self.next_ids,
                    },
                )
            },
        );
        plan
    }

    /// Sequences in the batch.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Tokens per sequence in one prefill chunk.
    pub fn chunk_tokens(&self) -> usize {
        self.chunk
    }

    /// Tokens fed per sequence since the last reset.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Logits per token.
    pub fn vocab(&self) -> usize {
        self.m.vocab
    }

    /// Dispatches recorded for one decoded token (all sequences of the batch together).
    pub fn dispatches_per_token(&self) -> usize {
        self.decode.len() + self.decode_sample.len()
    }

    /// Bytes of every layer's recurrent state (conv and SSM) for the whole batch: what a
    /// decode step reads (and writes back) besides the weights.
    pub fn state_bytes(&self) -> u64 {
        self.states.iter().flatten().map(|b| b.size()).sum()
    }

    /// Zeroes every state and the sampler's counters: the next prefill starts new sequences.
    pub fn reset(&mut self) {
        let mut enc = self
            .m
            .ctx
            .device()
            .create_command_encoder(&Default::default());
        for buf in self
            .states
            .iter()
            .flatten()
            .chain([&self.steps, &self.next_ids])
        {
            enc.clear_buffer(buf, 0, None);
        }
        self.m.ctx.queue().submit([enc.finish()]);
        self.position = 0;
    }

    /// Changes how tokens are chosen from now on.
    pub fn set_sampling(&mut self, sampling: Sampling) -> Result<()> {
        sampling.validate()?;
        self.sampling = sampling;
        self.prefill_sample = self.build_sample(false);
        self.decode_sample = self.build_sample(true);
        Ok(())
    }

    fn check_prompts(&self, prompts: &[&[u32]]) -> Result<usize> {
        if prompts.len() != self.batch {
            return Err(Error::InvalidInput(format!(
                "{} prompts for a session of batch {}",
                prompts.len(),
                self.batch
            )));
        }
        let len = prompts[0].len();
        if len == 0 {
            return Err(Error::InvalidInput("empty prompt".into()));
        }
        for (i, p) in prompts.iter().enumerate() {
            if p.len() != len {
                return Err(Error::InvalidInput(format!(
                    "prompt {i} has {} tokens, prompt 0 has {len}: prompts of a batch must be equally long",
                    p.len()
                )));
            }
            if let Some(&t) = p.iter().find(|&&t| t as usize >= self.m.vocab) {
                return Err(Error::InvalidInput(format!(
                    "token id {t} in prompt {i} is out of range (vocabulary {})",
                    self.m.vocab
                )));
            }
        }
        Ok(len)
    }

    /// Runs a plan (and the sampler when `sample`) over `len` tokens per sequence in one
    /// submit; when sampling, the chosen tokens are copied out in the same submit. Waits for
    /// that submission only (not for other work on a shared queue).
    fn submit(&mut self, decode: bool, len: u32, sample: bool) -> Result<Option<Vec<u32>>> {
        let submission = self.enqueue(decode, len, sample);
        let ctx = &self.m.ctx;
        if sample {
            Ok(Some(ctx.map_read_after(
                &self.readback,
                self.batch,
                submission,
            )?))
        } else {
            ctx.check()?;
            Ok(None)
        }
    }

    /// Records and submits what [`Session::submit`] runs, without waiting for it.
    fn enqueue(&mut self, decode: bool, len: u32, sample: bool) -> wgpu::SubmissionIndex {
        let ctx = self.m.ctx.clone();
        let (plan, sampler) = if decode {
            (&mut self.decode, &mut self.decode_sample)
        } else {
            (&mut self.prefill, &mut self.prefill_sample)
        };
        plan.set_len(&ctx, len);
        if sample {
            sampler.set_len(&ctx, len);
        }
        let mut enc = ctx
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("mamba_wgpu.forward"),
            });
        plan.encode(&mut enc, "mamba_wgpu.forward");
        if sample {
            sampler.encode(&mut enc, "mamba_wgpu.sample");
        }
        if sample {
            enc.copy_buffer_to_buffer(
                &self.next_ids,
                0,
                &self.readback,
                0,
                (self.batch * 4) as u64,
            );
        }
        ctx.submit([enc.finish()])
    }

    /// [`Session::submit`] with every dispatch timed (see [`crate::profile`]): the same
    /// dispatches over the same buffers, so the same results, but recorded one by one with
    /// timestamps (or submitted one by one under [`ProfileMode::WallClock`]).
    fn submit_profiled(
        &mut self,
        decode: bool,
        len: u32,
        sample: bool,
        mode: ProfileMode,
        phase: &str,
    ) -> Result<(Option<Vec<u32>>, Profile)> {
        let ctx = self.m.ctx.clone();
        let mode = mode.resolve(&ctx)?;
        let (plan, sampler) = if decode {
            (&mut self.decode, &mut self.decode_sample)
        } else {
            (&mut self.prefill, &mut self.prefill_sample)
        };
        plan.set_len(&ctx, len);
        if sample {
            sampler.set_len(&ctx, len);
        }
        let mut steps: Vec<_> = plan.steps().collect();
        let n_main = steps.len();
        if sample {
            steps.extend(sampler.steps());
        }
        let sections = profile::sections(
            steps.len(),
            plan.marks(),
            self.m.mixer.n_layer(),
            steps.len() - n_main,
        );
        let (next_ids, readback, bytes) = (&self.next_ids, &self.readback, (self.batch * 4) as u64);
        let (timings, wall_ns) = profile::run_profiled(&ctx, &steps, &sections, mode, |enc| {
            if sample {
                enc.copy_buffer_to_buffer(next_ids, 0, readback, 0, bytes);
            }
        })?;
        let profile = Profile {
            phase: phase.to_string(),
            tokens: self.batch * len as usize,
            mode,
            timings,
            wall_ns,
        };
        let tokens = if sample {
            Some(ctx.map_read(&self.readback, self.batch)?)
        } else {
            None
        };
        Ok((tokens, profile))
    }

    /// Like [`Session::prefill`], with every dispatch timed; the chunks of a long prompt are
    /// appended into one [`Profile`].
    pub fn prefill_profiled(
        &mut self,
        prompts: &[&[u32]],
        mode: ProfileMode,
    ) -> Result<(Vec<u32>, Profile)> {
        let len = self.check_prompts(prompts)?;
        let mut out = None;
        let mut total: Option<Profile> = None;
        let mut t0 = 0;
        while t0 < len {
            let n = self.chunk.min(len - t0);
            self.upload_ids(prompts, t0, n);
            let (tokens, p) =
                self.submit_profiled(false, n as u32, t0 + n == len, mode, "prefill")?;
            out = tokens;
            match &mut total {
                Some(t) => t.append(p),
                None => total = Some(p),
            }
            t0 += n;
        }
        self.position += len;
        match (out, total) {
            (Some(out), Some(p)) => Ok((out, p)),
            _ => Err(Error::Gpu("prefill produced no token".into())),
        }
    }

    /// Like [`Session::decode`], with every dispatch timed.
    pub fn decode_profiled(&mut self, mode: ProfileMode) -> Result<(Vec<u32>, Profile)> {
        if self.position == 0 {
            return Err(Error::InvalidInput("decode before any prefill".into()));
        }
        let (out, p) = self.submit_profiled(true, 1, true, mode, "decode")?;
        self.position += 1;
        Ok((out.unwrap_or_default(), p))
    }

    /// Like [`Session::logits`], with every dispatch timed (no sampling).
    pub fn logits_profiled(
        &mut self,
        prompts: &[&[u32]],
        mode: ProfileMode,
    ) -> Result<(Vec<f32>, Profile)> {
        if !self.all_logits {
            return Err(Error::InvalidInput(
                "this session keeps only the last logits; build it with all_logits".into(),
            ));
        }
        let len = self.check_prompts(prompts)?;
        let v = self.m.vocab;
        // Every position's logits come back to the host: refuse what cannot be allocated
        // rather than abort (2^32 floats is 16 GiB).
        let n = self
            .batch
            .checked_mul(len)
            .and_then(|n| n.checked_mul(v))
            .filter(|&n| n <= 1 << 32)
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "logits of {} sequences x {len} tokens x {v} entries are too many to read back; score shorter prompts",
                    self.batch
                ))
            })?;
        let mut out = vec![0.0f32; n];
        let mut total: Option<Profile> = None;
        let mut t0 = 0;
        while t0 < len {
            let n = self.chunk.min(len - t0);
            self.upload_ids(prompts, t0, n);
            let (_, p) = self.submit_profiled(false, n as u32, false, mode, "logits")?;
            match &mut total {
                Some(t) => t.append(p),
                None => total = Some(p),
            }
            let chunk: Vec<f32> =
                self.m
                    .ctx
                    .read_buffer(&self.prefill_acts.logits, 0, self.batch * n * v)?;
            for bi in 0..self.batch {
                out[(bi * len + t0) * v..(bi * len + t0 + n) * v]
                    .copy_from_slice(&chunk[bi * n * v..(bi + 1) * n * v]);
            }
            t0 += n;
        }
        self.position += len;
        let p = total.ok_or_else(|| Error::Gpu("logits ran no forward".into()))?;
        Ok((out, p))
    }

    fn upload_ids(&self, prompts: &[&[u32]], t0: usize, n: usize) {
        let ids: Vec<u32> = prompts
            .iter()
            .flat_map(|p| p[t0..t0 + n].iter().copied())
            .collect();
        self.m
            .ctx
            .queue()
            .write_buffer(&self.prefill_acts.ids, 0, bytemuck::cast_slice(&ids));
    }

    /// Feeds equally long prompts (one per sequence; they continue the sequences from their
    /// current state) in chunks, and returns the next token of each sequence, chosen on the GPU.
    pub fn prefill(&mut self, prompts: &[&[u32]]) -> Result<Vec<u32>> {
        let len = self.check_prompts(prompts)?;
        let mut out = None;
        let mut t0 = 0;
        while t0 < len {
            let n = self.chunk.min(len - t0);
            self.upload_ids(prompts, t0, n);
            out = self.submit(false, n as u32, t0 + n == len)?;
            t0 += n;
        }
        self.position += len;
        out.ok_or_else(|| Error::Gpu("prefill produced no token".into()))
    }

    /// Decodes one token per sequence: feeds the tokens chosen last (by `prefill` or the
    /// previous `decode`) and returns the next ones. One submit; only the ids come back.
    pub fn decode(&mut self) -> Result<Vec<u32>> {
        if self.position == 0 {
            return Err(Error::InvalidInput("decode before any prefill".into()));
        }
        let out = self.submit(true, 1, true)?.unwrap_or_default();
        self.position += 1;
        Ok(out)
    }

    /// The async form of [`Session::prefill`]: submits every chunk of the prompts at once and
    /// resolves to the next token of each sequence when the GPU has finished, without
    /// blocking the caller's thread (a poll thread owned by the context waits for the
    /// device; see [`GpuContext::map_read_async`]). The session's state has advanced when the
    /// future is first polled; dropping it before it resolves loses only the returned ids
    /// (the next `decode` still feeds them, from the GPU).
    ///
    /// ```no_run
    /// # fn main() -> mamba_wgpu::Result<()> {
    /// # let ctx = std::sync::Arc::new(mamba_wgpu::GpuContext::new()?);
    /// # let model = mamba_wgpu::Model::load(ctx, std::path::Path::new("models/tiny-mamba-en"))?;
    /// let mut session = model.session(&Default::default())?;
    /// // Any executor works; pollster is the smallest.
    /// let first = pollster::block_on(session.prefill_async(&[&[1, 2, 3]]))?;
    /// let second = pollster::block_on(session.decode_async())?;
    /// # let _ = (first, second);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn prefill_async(&mut self, prompts: &[&[u32]]) -> Result<Vec<u32>> {
        let len = self.check_prompts(prompts)?;
        let mut submission = None;
        let mut t0 = 0;
        while t0 < len {
            let n = self.chunk.min(len - t0);
            self.upload_ids(prompts, t0, n);
            submission = Some(self.enqueue(false, n as u32, t0 + n == len));
            t0 += n;
        }
        self.position += len;
        let submission =
            submission.ok_or_else(|| Error::Gpu("prefill produced no token".into()))?;
        let ctx = self.m.ctx.clone();
        ctx.check()?;
        ctx.map_read_async(&self.readback, self.batch, submission)
            .await
    }

    /// The async form of [`Session::decode`]: one submit, resolved when the ids are back,
    /// without blocking the caller's thread (see [`Session::prefill_async`]).
    pub async fn decode_async(&mut self) -> Result<Vec<u32>> {
        if self.position == 0 {
            return Err(Error::InvalidInput("decode before any prefill".into()));
        }
        let submission = self.enqueue(true, 1, true);
        self.position += 1;
        let ctx = self.m.ctx.clone();
        ctx.check()?;
        ctx.map_read_async(&self.readback, self.batch, submission)
            .await
    }

    /// Feeds prompts and returns the logits `[batch, len, vocab]` of every position (the
    /// session must have been made with `all_logits`). No token is sampled.
    pub fn logits(&mut self, prompts: &[&[u32]]) -> Result<Vec<f32>> {
        if !self.all_logits {
            return Err(Error::InvalidInput(
                "this session keeps only the last logits; build it with all_logits".into(),
            ));
        }
        let len = self.check_prompts(prompts)?;
        let v = self.m.vocab;
        let mut out = vec![0.0f32; self.batch * len * v];
        let mut t0 = 0;
        while t0 < len {
            let n = self.chunk.min(len - t0);
            self.upload_ids(prompts, t0, n);
            self.submit(false, n as u32, false)?;
            let chunk: Vec<f32> =
                self.m
                    .ctx
                    .read_buffer(&self.prefill_acts.logits, 0, self.batch * n * v)?;
            for bi in 0..self.batch {
                out[(bi * len + t0) * v..(bi * len + t0 + n) * v]
                    .copy_from_slice(&chunk[bi * n * v..(bi + 1) * n * v]);
            }
            t0 += n;
        }
        self.position += len;
        Ok(out)
    }

    /// Feeds one given token per sequence through the decode path and returns the logits
    /// `[batch, vocab]` (reads them back: for scoring and tests, not for fast generation).
    pub fn decode_logits(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let prompts: Vec<&[u32]> = tokens.chunks(1).collect();
        self.check_prompts(&prompts)?;
        self.m
            .ctx
            .queue()
            .write_buffer(&self.next_ids, 0, bytemuck::cast_slice(tokens));
        self.submit(true, 1, false)?;
        self.position += 1;
        self.m
            .ctx
            .read_buffer(&self.decode_acts.logits, 0, self.batch * self.m.vocab)
    }
}

/// The shell's tensors (embedding, block norms, final norm, untied lm_head) in the HF spelling.
pub(crate) fn shell_shapes(dims: &LmDims) -> HashMap<String, Vec<usize>> {
    let d = dims.d_model;
    let mut t = HashMap::new();
    t.insert(
        "backbone.embeddings.weight".to_string(),
        vec![dims.padded_vocab, d],
    );
    t.insert("backbone.norm_f.weight".to_string(), vec![d]);
    if !dims.tie_embeddings {
        t.insert("lm_head.weight".to_string(), vec![dims.padded_vocab, d]);
    }
    for i in 0..dims.n_layer {
        t.insert(format!("backbone.layers.{i}.norm.weight"), vec![d]);
    }
    t
}

/// The tensors every mixer has around its core, for layer prefix `m`: in_proj `[in_width,
/// d_model]`, the depthwise conv `[channels, 1, d_conv]`, out_proj `[d_model, d_inner]`, and
/// their biases where the config has them.
#[allow(clippy::too_many_arguments)]
pub(crate) fn mixer_io_shapes(
    t: &mut HashMap<String, Vec<usize>>,
    m: &str,
    d_model: usize,
    in_width: usize,
    channels: usize,
    d_conv: usize,
    d_inner: usize,
    (use_bias, use_conv_bias): (bool, bool),
) {
    t.insert(format!("{m}in_proj.weight"), vec![in_width, d_model]);
    t.insert(format!("{m}conv1d.weight"), vec![channels, 1, d_conv]);
    t.insert(format!("{m}out_proj.weight"), vec![d_model, d_inner]);
    if use_conv_bias {
        t.insert(format!("{m}conv1d.bias"), vec![channels]);
    }
    if use_bias {
        t.insert(format!("{m}in_proj.bias"), vec![in_width]);
        t.insert(format!("{m}out_proj.bias"), vec![d_model]);
    }
}

/// The public surface every family's model handle shares (`Mamba1`, `Mamba2`): loading from a
/// folder or a weight source, random weights, and the accessors. The family's module writes
/// `from_source_with` and `tensor_shapes`; this writes the rest once.
macro_rules! model_handle {
    ($name:ident, $cfg:ty, $label:literal) => {
        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct($label).field("config", &self.cfg).finish()
            }
        }

        impl $name {
            /// What the shared shell needs from the config.
            fn lm_dims(cfg: &$cfg, options: &LoadOptions) -> LmDims {
                LmDims {
                    d_model: cfg.d_model,
                    n_layer: cfg.n_layer,
                    vocab_size: cfg.vocab_size,
                    padded_vocab: cfg.padded_vocab(),
                    tie_embeddings: cfg.tie_embeddings,
                    eps: cfg.eps,
                    dtype: options.dtype,
                    storage: options.storage,
                }
            }

            /// Loads a checkpoint folder (config.json + safetensors, either spelling) onto
            /// `ctx`'s device, with f32 weights.
            pub fn load(ctx: Arc<GpuContext>, dir: &Path) -> Result<Self> {
                Self::load_with(ctx, dir, &LoadOptions::default())
            }

            /// Loads a checkpoint folder with options (weight storage).
            pub fn load_with(
                ctx: Arc<GpuContext>,
                dir: &Path,
                options: &LoadOptions,
            ) -> Result<Self> {
                let cfg_path = dir.join("config.json");
                let cfg = <$cfg>::from_json(&cfg_path, &read_json(&cfg_path)?)?;
                let ck = Checkpoint::open(dir)?;
                Self::from_source_with(ctx, cfg, &ck, options)
            }

            /// Uploads the weights `src` holds for a model described by `cfg` (f32 weights).
            pub fn from_source(
                ctx: Arc<GpuContext>,
                cfg: $cfg,
                src: &dyn WeightSource,
            ) -> Result<Self> {
                Self::from_source_with(ctx, cfg, src, &LoadOptions::default())
            }

            /// A model of `cfg`'s exact dimensions with seeded random weights, built directly on
            /// the GPU: for benches of real model sizes without a download.
            pub fn random(ctx: Arc<GpuContext>, cfg: $cfg, seed: u64) -> Result<Self> {
                Self::random_with(ctx, cfg, seed, &LoadOptions::default())
            }

            /// Random weights with options (weight storage).
            pub fn random_with(
                ctx: Arc<GpuContext>,
                cfg: $cfg,
                seed: u64,
                options: &LoadOptions,
            ) -> Result<Self> {
                let src = RandomWeights::new(Self::tensor_shapes(&cfg), seed);
                Self::from_source_with(ctx, cfg, &src, options)
            }

            /// The config.
            pub fn config(&self) -> &$cfg {
                &self.cfg
            }

            /// Logits per token: the embedding's rows (the vocabulary, padded where the
            /// checkpoint pads it).
            pub fn vocab(&self) -> usize {
                self.lm.vocab
            }

            /// Bytes of the weight matrices on the GPU (what one decode step streams).
            pub fn weight_bytes(&self) -> u64 {
                self.lm.weight_bytes()
            }

            /// The device context.
            pub fn context(&self) -> &Arc<GpuContext> {
                &self.lm.ctx
            }

            /// Starts a session of `options.batch` sequences with zeroed states.
            pub fn session(&self, options: &SessionOptions) -> Result<Session> {
                Session::new(self.lm.clone(), options)
            }
        }
    };
}
