//! Mamba-1: weights loaded from a checkpoint folder onto the GPU, and sessions that prefill
//! prompts and decode tokens with the conv and SSM states kept on the GPU.
//!
//! One block, for `rows = batch · len` tokens (transformers' `MambaBlock` + `MambaMixer`):
//! ```text
//! hidden += mix (previous block's output; the first block starts from the embedding)
//! normed  = rmsnorm(hidden) · norm.weight
//! xz      = normed · in_projᵀ (+ bias)            [rows, 2·d_inner]: x | z
//! xc      = silu(causal_conv1d(x) + conv bias)    conv state: the last d_conv-1 inputs
//! dbc     = xc · x_projᵀ                          [rows, dt_rank + 2·d_state]: dt_low | B | C
//! dt      = dbc[:, :dt_rank] · dt_projᵀ           (its bias is added inside the scan)
//! y       = selective_scan(dt, B, C, xc, z)       softplus, exp(ΔA), ΔB·x, C·h + D·x, ·silu(z)
//! mix     = y · out_projᵀ (+ bias)
//! ```
//! then `logits = rmsnorm(hidden + mix) · norm_f · lm_headᵀ`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::context::GpuContext;
use crate::error::{Error, Result};
use crate::kernels::conv1d::{Conv1d, Conv1dBuffers, Conv1dParams};
use crate::kernels::conv1d_step::Conv1dStep;
use crate::kernels::embedding::{Embedding, EmbeddingBuffers, EmbeddingParams};
use crate::kernels::gemv::Gemv;
use crate::kernels::matmul::{Matmul, MatmulBuffers, MatmulParams};
use crate::kernels::rmsnorm::{RmsNorm, RmsNormBuffers, RmsNormParams};
use crate::kernels::sample::{Sample, SampleBuffers, SampleParams};
use crate::kernels::selective_scan::{
    SelectiveScan, SelectiveScanBuffers, SelectiveScanParams, MAX_D_STATE,
};
use crate::kernels::selective_state_update::SelectiveStateUpdate;
use crate::model::checkpoint::Checkpoint;
use crate::model::config::{read_json, Mamba1Config};
use crate::model::plan::Plan;
use crate::model::weights::{RandomWeights, WeightSource};
use crate::model::Sampling;
use crate::tensor::{GpuTensor, PagedMatrix};

struct Layer {
    norm: GpuTensor,
    in_proj: PagedMatrix,
    in_proj_bias: Option<GpuTensor>,
    conv_w: GpuTensor,
    conv_b: Option<GpuTensor>,
    x_proj: PagedMatrix,
    dt_proj: PagedMatrix,
    /// A_log `[d_inner, d_state]`, then D `[d_inner]`, then dt_bias `[d_inner]` (the scan's packing).
    ssm: GpuTensor,
    out_proj: PagedMatrix,
    out_proj_bias: Option<GpuTensor>,
}

struct Kernels {
    rmsnorm: RmsNorm,
    embedding: Embedding,
    matmul: Matmul,
    gemv: Gemv,
    conv1d: Conv1d,
    conv1d_step: Conv1dStep,
    scan: SelectiveScan,
    state_update: SelectiveStateUpdate,
    sample: Sample,
}

struct Inner {
    ctx: Arc<GpuContext>,
    cfg: Mamba1Config,
    /// Embedding rows (the vocabulary, padded where the checkpoint pads it).
    vocab: usize,
    embedding: PagedMatrix,
    lm_head: Option<PagedMatrix>,
    layers: Vec<Layer>,
    norm_f: GpuTensor,
    /// Bound where a kernel's optional input (a bias) is absent.
    dummy: wgpu::Buffer,
    kernels: Kernels,
    weight_bytes: u64,
}

/// A Mamba-1 model on the GPU. Cheap to clone; sessions share its weights.
#[derive(Clone)]
pub struct Mamba1 {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Mamba1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mamba1")
            .field("config", &self.inner.cfg)
            .finish()
    }
}

fn opt_bias(
    ck: &dyn WeightSource,
    ctx: &GpuContext,
    name: &str,
    n: usize,
    wanted: bool,
) -> Result<Option<GpuTensor>> {
    if !wanted {
        return Ok(None);
    }
    Ok(Some(GpuTensor::from_slice(
        ctx,
        name,
        &ck.f32(name, &[n])?,
        &[n],
    )?))
}

impl Mamba1 {
    /// Loads a checkpoint folder (config.json + safetensors, either spelling) onto `ctx`'s device.
    pub fn load(ctx: Arc<GpuContext>, dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let cfg = Mamba1Config::from_json(&cfg_path, &read_json(&cfg_path)?)?;
        let ck = Checkpoint::open(dir)?;
        Self::from_checkpoint(ctx, cfg, &ck)
    }

    /// Uploads the weights of an opened checkpoint described by `cfg`.
    pub fn from_checkpoint(
        ctx: Arc<GpuContext>,
        cfg: Mamba1Config,
        ck: &dyn WeightSource,
    ) -> Result<Self> {
        let (d, e, n, r, k) = (
            cfg.d_model,
            cfg.d_inner,
            cfg.d_state,
            cfg.dt_rank,
            cfg.d_conv,
        );
        if n > MAX_D_STATE as usize {
            return Err(Error::LimitExceeded {
                what: "d_state of the selective scan".into(),
                needed: n as u64,
                limit: MAX_D_STATE as u64,
            });
        }
        let emb_name = ["backbone.embeddings.weight", "backbone.embedding.weight"]
            .into_iter()
            .find(|n| ck.contains(n))
            .ok_or_else(|| {
                Error::tensor(
                    ck.file_of("backbone.embeddings.weight"),
                    "backbone.embeddings.weight",
                    "missing tensor (nor backbone.embedding.weight)",
                )
            })?;
        let emb_shape = ck.shape(emb_name)?;
        let vocab = emb_shape.first().copied().unwrap_or(0);
        if vocab != cfg.vocab_size && vocab != cfg.padded_vocab() {
            return Err(Error::tensor(
                ck.file_of(emb_name),
                emb_name,
                format!(
                    "{vocab} rows but config.json says vocab_size {} (padded: {})",
                    cfg.vocab_size,
                    cfg.padded_vocab()
                ),
            ));
        }
        let mut bytes = 0u64;
        let mut matrix = |name: &str, rows: usize, cols: usize| -> Result<PagedMatrix> {
            let m = PagedMatrix::from_slice(&ctx, name, &ck.f32(name, &[rows, cols])?, rows, cols)?;
            bytes += m.bytes();
            Ok(m)
        };
        let embedding = matrix(emb_name, vocab, d)?;
        let lm_head = if cfg.tie_embeddings {
            None
        } else {
            Some(matrix("lm_head.weight", vocab, d)?)
        };
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let p = format!("backbone.layers.{i}.");
            let m = format!("{p}mixer.");
            let a_log = ck.f32(&format!("{m}A_log"), &[e, n])?;
            let dd = ck.f32(&format!("{m}D"), &[e])?;
            let dt_bias = ck.f32(&format!("{m}dt_proj.bias"), &[e])?;
            let ssm: Vec<f32> = a_log.into_iter().chain(dd).chain(dt_bias).collect();
            layers.push(Layer {
                norm: GpuTensor::from_slice(
                    &ctx,
                    "norm",
                    &ck.f32(&format!("{p}norm.weight"), &[d])?,
                    &[d],
                )?,
                in_proj: matrix(&format!("{m}in_proj.weight"), 2 * e, d)?,
                in_proj_bias: opt_bias(ck, &ctx, &format!("{m}in_proj.bias"), 2 * e, cfg.use_bias)?,
                conv_w: GpuTensor::from_slice(
                    &ctx,
                    "conv1d",
                    &ck.f32(&format!("{m}conv1d.weight"), &[e, 1, k])?,
                    &[e, k],
                )?,
                conv_b: opt_bias(ck, &ctx, &format!("{m}conv1d.bias"), e, cfg.use_conv_bias)?,
                x_proj: matrix(&format!("{m}x_proj.weight"), r + 2 * n, e)?,
                dt_proj: matrix(&format!("{m}dt_proj.weight"), e, r)?,
                ssm: GpuTensor::from_slice(&ctx, "ssm", &ssm, &[ssm.len()])?,
                out_proj: matrix(&format!("{m}out_proj.weight"), d, e)?,
                out_proj_bias: opt_bias(ck, &ctx, &format!("{m}out_proj.bias"), d, cfg.use_bias)?,
            });
        }
        let norm_f = GpuTensor::from_slice(
            &ctx,
            "norm_f",
            &ck.f32("backbone.norm_f.weight", &[d])?,
            &[d],
        )?;
        let kernels = Kernels {
            rmsnorm: RmsNorm::new(&ctx)?,
            embedding: Embedding::new(&ctx)?,
            matmul: Matmul::new(&ctx)?,
            gemv: Gemv::new(&ctx)?,
            conv1d: Conv1d::new(&ctx)?,
            conv1d_step: Conv1dStep::new(&ctx)?,
            scan: SelectiveScan::new(&ctx)?,
            state_update: SelectiveStateUpdate::new(&ctx)?,
            sample: Sample::new(&ctx)?,
        };
        let dummy = ctx.storage_buffer("dummy", 4)?;
        ctx.wait()?;
        Ok(Self {
            inner: Arc::new(Inner {
                ctx,
                cfg,
                vocab,
                embedding,
                lm_head,
                layers,
                norm_f,
                dummy,
                kernels,
                weight_bytes: bytes,
            }),
        })
    }

    /// The names and shapes of every tensor a checkpoint of `cfg` holds (HF spelling).
    pub fn tensor_shapes(cfg: &Mamba1Config) -> HashMap<String, Vec<usize>> {
        let (d, e, n, r, k) = (
            cfg.d_model,
            cfg.d_inner,
            cfg.d_state,
            cfg.dt_rank,
            cfg.d_conv,
        );
        let mut t = HashMap::new();
        t.insert(
            "backbone.embeddings.weight".to_string(),
            vec![cfg.padded_vocab(), d],
        );
        t.insert("backbone.norm_f.weight".to_string(), vec![d]);
        if !cfg.tie_embeddings {
            t.insert("lm_head.weight".to_string(), vec![cfg.padded_vocab(), d]);
        }
        for i in 0..cfg.n_layer {
            let m = format!("backbone.layers.{i}.mixer.");
            t.insert(format!("backbone.layers.{i}.norm.weight"), vec![d]);
            t.insert(format!("{m}in_proj.weight"), vec![2 * e, d]);
            t.insert(format!("{m}conv1d.weight"), vec![e, 1, k]);
            t.insert(format!("{m}x_proj.weight"), vec![r + 2 * n, e]);
            t.insert(format!("{m}dt_proj.weight"), vec![e, r]);
            t.insert(format!("{m}dt_proj.bias"), vec![e]);
            t.insert(format!("{m}A_log"), vec![e, n]);
            t.insert(format!("{m}D"), vec![e]);
            t.insert(format!("{m}out_proj.weight"), vec![d, e]);
            if cfg.use_conv_bias {
                t.insert(format!("{m}conv1d.bias"), vec![e]);
            }
            if cfg.use_bias {
                t.insert(format!("{m}in_proj.bias"), vec![2 * e]);
                t.insert(format!("{m}out_proj.bias"), vec![d]);
            }
        }
        t
    }

    /// A model of `cfg`'s exact dimensions with seeded random weights, built directly on the
    /// GPU: for benches of real model sizes without a download.
    pub fn random(ctx: Arc<GpuContext>, cfg: Mamba1Config, seed: u64) -> Result<Self> {
        let src = RandomWeights::new(Self::tensor_shapes(&cfg), seed);
        Self::from_checkpoint(ctx, cfg, &src)
    }

    /// The config.
    pub fn config(&self) -> &Mamba1Config {
        &self.inner.cfg
    }

    /// Logits per token: the embedding's rows (the vocabulary, padded where the checkpoint pads it).
    pub fn vocab(&self) -> usize {
        self.inner.vocab
    }

    /// Bytes of the large weight matrices on the GPU.
    pub fn weight_bytes(&self) -> u64 {
        self.inner.weight_bytes
    }

    /// The device context.
    pub fn context(&self) -> &Arc<GpuContext> {
        &self.inner.ctx
    }

    /// Starts a session of `options.batch` sequences with zeroed states.
    pub fn session(&self, options: &SessionOptions) -> Result<Session> {
        Session::new(self.inner.clone(), options)
    }
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

/// Activation buffers for `rows` tokens.
struct Acts {
    ids: wgpu::Buffer,
    hidden: wgpu::Buffer,
    normed: wgpu::Buffer,
    xz: wgpu::Buffer,
    xc: wgpu::Buffer,
    dbc: wgpu::Buffer,
    dt: wgpu::Buffer,
    y: wgpu::Buffer,
    mix: wgpu::Buffer,
    logits: wgpu::Buffer,
}

/// A batch of sequences being generated: the conv and SSM states of every layer, the prefill
/// and decode plans recorded over them, and the sampler's state.
pub struct Session {
    m: Arc<Inner>,
    batch: usize,
    chunk: usize,
    all_logits: bool,
    sampling: Sampling,
    conv_state: Vec<wgpu::Buffer>,
    ssm_state: Vec<wgpu::Buffer>,
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
    /// Tokens fed per sequence since the last reset.
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
    fn new(m: Arc<Inner>, o: &SessionOptions) -> Result<Self> {
        o.sampling.validate()?;
        if o.batch == 0 || o.max_chunk_tokens == 0 {
            return Err(Error::InvalidInput(
                "batch and max_chunk_tokens must be at least 1".into(),
            ));
        }
        let ctx = m.ctx.clone();
        let c = &m.cfg;
        let b = o.batch;
        // Largest row of any activation, in f32 elements: the chunk is cut so that
        // batch · chunk rows of it fit one storage binding.
        let widest = [
            2 * c.d_inner,
            c.dt_rank + 2 * c.d_state,
            c.d_model,
            if o.all_logits { m.vocab } else { 0 },
        ]
        .into_iter()
        .max()
        .unwrap_or(1) as u64;
        let fit = ctx.storage_binding_limit() / (widest * 4 * b as u64);
        let chunk = (o.max_chunk_tokens as u64).min(fit).min(1 << 20) as usize;
        if chunk == 0 || (m.vocab * b * 4) as u64 > ctx.storage_binding_limit() {
            return Err(Error::LimitExceeded {
                what: format!("activations of a batch of {b}"),
                needed: widest.max(m.vocab as u64) * 4 * b as u64,
                limit: ctx.storage_binding_limit(),
            });
        }
        let mut conv_state = Vec::new();
        let mut ssm_state = Vec::new();
        for _ in 0..c.n_layer {
            conv_state.push(ctx.storage_buffer("conv_state", b * c.d_inner * (c.d_conv - 1))?);
            ssm_state.push(ctx.storage_buffer("ssm_state", b * c.d_inner * c.d_state)?);
        }
        let next_ids = ctx.storage_buffer("next_ids", b)?;
        let steps = ctx.storage_buffer("sample_steps", b)?;
        let readback = ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("mamba_wgpu.token_readback"),
            size: (b * 4) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let acts = |rows: usize, logit_rows: usize| -> Result<Acts> {
            Ok(Acts {
                ids: ctx.storage_buffer("ids", rows)?,
                hidden: ctx.storage_buffer("hidden", rows * c.d_model)?,
                normed: ctx.storage_buffer("normed", rows * c.d_model)?,
                xz: ctx.storage_buffer("xz", rows * 2 * c.d_inner)?,
                xc: ctx.storage_buffer("xc", rows * c.d_inner)?,
                dbc: ctx.storage_buffer("dbc", rows * (c.dt_rank + 2 * c.d_state))?,
                dt: ctx.storage_buffer("dt", rows * c.d_inner)?,
                y: ctx.storage_buffer("y", rows * c.d_inner)?,
                mix: ctx.storage_buffer("mix", rows * c.d_model)?,
                logits: ctx.storage_buffer("logits", logit_rows * m.vocab)?,
            })
        };
        let prefill_acts = acts(b * chunk, if o.all_logits { b * chunk } else { b })?;
        let decode_acts = acts(b, b)?;
        let mut s = Self {
            m: m.clone(),
            batch: b,
            chunk,
            all_logits: o.all_logits,
            sampling: o.sampling.clone(),
            conv_state,
            ssm_state,
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
        let m = &self.m;
        let ctx = &*m.ctx;
        let k = &m.kernels;
        let c = m.cfg.clone();
        let (b, dm, e, n, r) = (
            self.batch as u32,
            c.d_model as u32,
            c.d_inner as u32,
            c.d_state as u32,
            c.dt_rank as u32,
        );
        let dbc_w = r + 2 * n;
        let a = if decode {
            &self.decode_acts
        } else {
            &self.prefill_acts
        };
        let cap = if decode { 1 } else { self.chunk as u32 };
        let ids = if decode { &self.next_ids } else { &a.ids };
        let mut plan = Plan::default();

        // `linear` adds one matmul (or GEMV for the decode plan) per page of `w`:
        // y[row, y_col0 + page cols] = x[row, x_col0 ..] · pageᵀ (+ bias).
        let linear =
            |plan: &mut Plan,
             x: &wgpu::Buffer,
             x_stride: u32,
             w: &PagedMatrix,
             bias: Option<&GpuTensor>,
             y: &wgpu::Buffer,
             y_stride: u32,
             rows: Box<dyn Fn(u32) -> (u32, u32, u32) + Send + Sync>| {
                let rows: Arc<dyn Fn(u32) -> (u32, u32, u32) + Send + Sync> = Arc::from(rows);
                for page in &w.pages {
                    let (n_rows, col0, kk) =
                        (page.rows as u32, page.row_start as u32, w.cols as u32);
                    let flags = bias.is_some() as u32;
                    let rows = rows.clone();
                    let params = move |len: u32| {
                        // rows(len) = (m, x_offset, x_stride override or 0)
                        let (mm, x_offset, xs) = rows(len);
                        MatmulParams {
                            m: mm,
                            n: n_rows,
                            k: kk,
                            x_offset,
                            x_stride: if xs == 0 { x_stride } else { xs },
                            y_offset: col0,
                            y_stride,
                            bias_offset: col0,
                            flags,
                            ..Default::default()
                        }
                    };
                    let bufs = MatmulBuffers {
                        x,
                        w: &page.buffer,
                        bias: bias.map(|t| &t.buffer).unwrap_or(&m.dummy),
                        y,
                    };
                    if decode {
                        plan.push(cap, params, Gemv::workgroups, |p| k.gemv.bind(ctx, p, bufs));
                    } else {
                        plan.push(cap, params, Matmul::workgroups, |p| {
                            k.matmul.bind(ctx, p, bufs)
                        });
                    }
                }
            };
        let all_rows = move |len: u32| (b * len, 0, 0);

        for page in &m.embedding.pages {
            let (row_start, rows) = (page.row_start as u32, page.rows as u32);
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
                    k.embedding.bind(
                        ctx,
                        p,
                        EmbeddingBuffers {
                            ids,
                            table: &page.buffer,
                            out: &a.hidden,
                        },
                    )
                },
            );
        }
        for (i, l) in m.layers.iter().enumerate() {
            let eps = c.eps;
            let add = (i > 0) as u32;
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
                    k.rmsnorm.bind(
                        ctx,
                        p,
                        RmsNormBuffers {
                            residual: &a.hidden,
                            delta: &a.mix,
                            weight: &l.norm.buffer,
                            out: &a.normed,
                        },
                    )
                },
            );
            linear(
                &mut plan,
                &a.normed,
                dm,
                &l.in_proj,
                l.in_proj_bias.as_ref(),
                &a.xz,
                2 * e,
                Box::new(all_rows),
            );
            let kernel = c.d_conv as u32;
            let has_bias = l.conv_b.is_some() as u32;
            let conv_params = move |len| Conv1dParams {
                batch: b,
                len,
                channels: e,
                kernel,
                x_offset: 0,
                x_stride: 2 * e,
                out_stride: e,
                has_bias,
            };
            let conv_bufs = Conv1dBuffers {
                x: &a.xz,
                weight: &l.conv_w.buffer,
                bias: l.conv_b.as_ref().map(|t| &t.buffer).unwrap_or(&m.dummy),
                state: &self.conv_state[i],
                out: &a.xc,
            };
            if decode {
                plan.push(cap, conv_params, Conv1dStep::workgroups, |p| {
                    k.conv1d_step.bind(ctx, p, conv_bufs)
                });
            } else {
                plan.push(cap, conv_params, Conv1d::workgroups, |p| {
                    k.conv1d.bind(ctx, p, conv_bufs)
                });
            }
            linear(
                &mut plan,
                &a.xc,
                e,
                &l.x_proj,
                None,
                &a.dbc,
                dbc_w,
                Box::new(all_rows),
            );
            linear(
                &mut plan,
                &a.dbc,
                dbc_w,
                &l.dt_proj,
                None,
                &a.dt,
                e,
                Box::new(all_rows),
            );
            let scan_params = move |len| SelectiveScanParams {
                batch: b,
                len,
                d_inner: e,
                d_state: n,
                dt_offset: 0,
                dt_stride: e,
                bc_offset: r,
                bc_stride: dbc_w,
                x_offset: 0,
                x_stride: e,
                z_offset: e,
                z_stride: 2 * e,
                y_stride: e,
                flags: 3,
                ..Default::default()
            };
            let scan_bufs = SelectiveScanBuffers {
                dt: &a.dt,
                bc: &a.dbc,
                x: &a.xc,
                z: &a.xz,
                ssm: &l.ssm.buffer,
                state: &self.ssm_state[i],
                y: &a.y,
            };
            if decode {
                plan.push(cap, scan_params, SelectiveStateUpdate::workgroups, |p| {
                    k.state_update.bind(ctx, p, scan_bufs)
                });
            } else {
                plan.push(cap, scan_params, SelectiveScan::workgroups, |p| {
                    k.scan.bind(ctx, p, scan_bufs)
                });
            }
            linear(
                &mut plan,
                &a.y,
                e,
                &l.out_proj,
                l.out_proj_bias.as_ref(),
                &a.mix,
                dm,
                Box::new(all_rows),
            );
        }
        let eps = c.eps;
        plan.push(
            cap,
            move |len| RmsNormParams {
                rows: b * len,
                cols: dm,
                eps,
                add: 1,
            },
            RmsNorm::workgroups,
            |p| {
                k.rmsnorm.bind(
                    ctx,
                    p,
                    RmsNormBuffers {
                        residual: &a.hidden,
                        delta: &a.mix,
                        weight: &m.norm_f.buffer,
                        out: &a.normed,
                    },
                )
            },
        );
        let head = m.lm_head.as_ref().unwrap_or(&m.embedding);
        let vocab = m.vocab as u32;
        let rows: Box<dyn Fn(u32) -> (u32, u32, u32) + Send + Sync> = if self.all_logits && !decode
        {
            Box::new(all_rows)
        } else {
            // Only the last token of each sequence: row b·len + len-1, stride len rows.
            Box::new(move |len: u32| (b, (len - 1) * dm, len * dm))
        };
        linear(&mut plan, &a.normed, dm, head, None, &a.logits, vocab, rows);
        Ok(plan)
    }

    /// The sampling dispatch reading the last position's logits and writing `next_ids`.
    fn build_sample(&self, decode: bool) -> Plan {
        let m = &self.m;
        let a = if decode {
            &self.decode_acts
        } else {
            &self.prefill_acts
        };
        let (b, vocab) = (self.batch as u32, m.vocab as u32);
        let all = self.all_logits && !decode;
        let s = self.sampling.clone();
        let mut plan = Plan::default();
        let cap = if decode { 1 } else { self.chunk as u32 };
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
                m.kernels.sample.bind(
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

    /// Dispatches recorded for one decoded token (all sequences of the batch together).
    pub fn dispatches_per_token(&self) -> usize {
        self.decode.len() + self.decode_sample.len()
    }

    /// Zeroes every state and the sampler's counters: the next prefill starts new sequences.
    pub fn reset(&mut self) {
        let mut enc = self
            .m
            .ctx
            .device()
            .create_command_encoder(&Default::default());
        for buf in self
            .conv_state
            .iter()
            .chain(&self.ssm_state)
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
                return Err(Error::InvalidInput(format!("prompt {i} has {} tokens, prompt 0 has {len}: prompts of a batch must be equally long", p.len())));
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

    /// Runs `plan` (and the sampler when `sample`) over `len` tokens per sequence in one
    /// submit; when sampling, the chosen tokens are copied out in the same submit.
    fn submit(&mut self, decode: bool, len: u32, sample: bool) -> Result<Option<Vec<u32>>> {
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
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("mamba_wgpu.forward"),
                timestamp_writes: None,
            });
            plan.encode(&mut pass);
            if sample {
                sampler.encode(&mut pass);
            }
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
        ctx.queue().submit([enc.finish()]);
        if sample {
            Ok(Some(ctx.map_read(&self.readback, self.batch)?))
        } else {
            ctx.check()?;
            Ok(None)
        }
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
            let last = t0 + n == len;
            out = self.submit(false, n as u32, last)?;
            t0 += n;
        }
        self.position += len;
        out.ok_or_else(|| Error::Gpu("prefill produced no token".into()))
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
                let src = &chunk[bi * n * v..(bi + 1) * n * v];
                out[(bi * len + t0) * v..(bi * len + t0 + n) * v].copy_from_slice(src);
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
