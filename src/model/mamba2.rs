//! Mamba-2: the SSD mixer (state space duality: the scan computed chunk by chunk as matmuls),
//! loaded from a checkpoint (either spelling) or built from seeded random weights.
//!
//! The mixer, for `rows = batch · len` tokens (transformers' `Mamba2Mixer`):
//! ```text
//! zxbcdt = normed · in_projᵀ (+ bias)        [rows, d_inner + conv_dim + H]: z | xBC | dt
//! xbc    = silu(causal_conv1d(xBC) + bias)   conv_dim = d_inner + 2·G·N channels
//! dt     = clamp(softplus(dt + dt_bias), time_step_limit)        (prefill and decode alike)
//! y      = SSD(x, dt, A = -exp(A_log), B, C) + D·x   (chunk cumsum, chunk states, state
//!          passing, chunk scan; or the one-token state update when decoding)
//! yn     = rmsnorm_per_group(y · silu(z)) · norm.weight
//! mix    = yn · out_projᵀ (+ bias)
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::context::GpuContext;
use crate::error::Result;
use crate::kernels::conv1d::{Conv1d, Conv1dBuffers, Conv1dParams};
use crate::kernels::conv1d_step::Conv1dStep;
use crate::kernels::rmsnorm_gated::{self, RmsnormGated, RmsnormGatedBuffers, RmsnormGatedParams};
use crate::kernels::ssd_chunk_cumsum::{
    SsdChunkCumsum, SsdChunkCumsumBuffers, SsdChunkCumsumParams,
};
use crate::kernels::ssd_chunk_scan::{SsdChunkScan, SsdChunkScanBuffers, SsdChunkScanParams};
use crate::kernels::ssd_chunk_state::{SsdChunkState, SsdChunkStateBuffers, SsdChunkStateParams};
use crate::kernels::ssd_scan_seq::{self, SsdScanSeq, SsdScanSeqParams};
use crate::kernels::ssd_state_passing::{
    SsdStatePassing, SsdStatePassingBuffers, SsdStatePassingParams,
};
use crate::kernels::ssd_state_update::{
    self, SsdStateUpdate, SsdStateUpdateBuffers, SsdStateUpdateParams,
};
use crate::model::checkpoint::Checkpoint;
use crate::model::config::{read_json, Mamba2Config};
use crate::model::lm::{
    matrix, mixer_io_shapes, shell_shapes, vector, ConvFuse, Fuse, Lm, LmDims, Mixer, NormFuse,
    Rec, Session, SessionOptions,
};
use crate::model::plan::Plan;
use crate::model::weights::{RandomWeights, WeightSource};
use crate::model::LoadOptions;
use crate::tensor::{GpuTensor, PagedMatrix};

struct Layer {
    in_proj: PagedMatrix,
    in_proj_bias: Option<GpuTensor>,
    conv_w: GpuTensor,
    conv_b: Option<GpuTensor>,
    /// A_log `[H]`, then D `[H]`, then dt_bias `[H]` (the SSD kernels' packing).
    heads: GpuTensor,
    norm: GpuTensor,
    out_proj: PagedMatrix,
    out_proj_bias: Option<GpuTensor>,
}

struct Kernels {
    conv1d: Conv1d,
    conv1d_step: Conv1dStep,
    cumsum: SsdChunkCumsum,
    chunk_state: SsdChunkState,
    state_passing: SsdStatePassing,
    chunk_scan: SsdChunkScan,
    state_update: SsdStateUpdate,
    /// The sequential walk: prefill on CPU adapters (see `record`).
    scan_seq: SsdScanSeq,
    scan_step: SsdScanSeq,
    norm: RmsnormGated,
}

struct Mamba2Mixer {
    cfg: Mamba2Config,
    layers: Vec<Layer>,
    k: Kernels,
}

/// A Mamba-2 model on the GPU. Cheap to clone; sessions share its weights.
#[derive(Clone)]
pub struct Mamba2 {
    lm: Arc<Lm>,
    cfg: Mamba2Config,
}

fn opt_vector(
    ctx: &GpuContext,
    src: &dyn WeightSource,
    name: &str,
    n: usize,
    wanted: bool,
) -> Result<Option<GpuTensor>> {
    wanted.then(|| vector(ctx, src, name, &[n])).transpose()
}

impl Mamba2 {
    /// Uploads the weights `src` holds for a model described by `cfg`, stored as
    /// `options.dtype` asks.
    pub fn from_source_with(
        ctx: Arc<GpuContext>,
        cfg: Mamba2Config,
        src: &dyn WeightSource,
        options: &LoadOptions,
    ) -> Result<Self> {
        let (dt, st) = (options.dtype, options.storage);
        let (d, e, h, k) = (cfg.d_model, cfg.d_inner, cfg.num_heads, cfg.d_conv);
        let (conv_dim, d_in_proj) = (cfg.conv_dim(), cfg.d_in_proj());
        // The kernels' own preconditions, checked once here rather than per dispatch.
        ssd_state_update::check_params(&SsdStateUpdateParams {
            nheads: h as u32,
            head_dim: cfg.head_dim as u32,
            d_state: cfg.d_state as u32,
            ngroups: cfg.n_groups as u32,
            ..Default::default()
        })?;
        rmsnorm_gated::check_params(&RmsnormGatedParams {
            cols: e as u32,
            group: (e / cfg.n_groups) as u32,
            ..Default::default()
        })?;
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let m = format!("backbone.layers.{i}.mixer.");
            let heads: Vec<f32> = [
                src.f32(&format!("{m}A_log"), &[h])?,
                src.f32(&format!("{m}D"), &[h])?,
                src.f32(&format!("{m}dt_bias"), &[h])?,
            ]
            .concat();
            layers.push(Layer {
                in_proj: matrix(
                    &ctx,
                    src,
                    &format!("{m}in_proj.weight"),
                    d_in_proj,
                    d,
                    dt,
                    st,
                    d,
                )?,
                in_proj_bias: opt_vector(
                    &ctx,
                    src,
                    &format!("{m}in_proj.bias"),
                    d_in_proj,
                    cfg.use_bias,
                )?,
                conv_w: vector(&ctx, src, &format!("{m}conv1d.weight"), &[conv_dim, 1, k])?,
                conv_b: opt_vector(
                    &ctx,
                    src,
                    &format!("{m}conv1d.bias"),
                    conv_dim,
                    cfg.use_conv_bias,
                )?,
                heads: GpuTensor::from_slice(&ctx, "heads", &heads, &[3 * h])?,
                norm: vector(&ctx, src, &format!("{m}norm.weight"), &[e])?,
                out_proj: matrix(&ctx, src, &format!("{m}out_proj.weight"), d, e, dt, st, e)?,
                out_proj_bias: opt_vector(
                    &ctx,
                    src,
                    &format!("{m}out_proj.bias"),
                    d,
                    cfg.use_bias,
                )?,
            });
        }
        let k = Kernels {
            conv1d: Conv1d::new(&ctx)?,
            conv1d_step: Conv1dStep::new(&ctx)?,
            cumsum: SsdChunkCumsum::new(&ctx)?,
            chunk_state: SsdChunkState::new(&ctx)?,
            state_passing: SsdStatePassing::new(&ctx)?,
            chunk_scan: SsdChunkScan::new(&ctx)?,
            state_update: SsdStateUpdate::for_d_state(&ctx, cfg.d_state as u32)?,
            scan_seq: SsdScanSeq::new(&ctx)?,
            scan_step: SsdScanSeq::step(&ctx)?,
            norm: RmsnormGated::new(&ctx)?,
        };
        let dims = Self::lm_dims(&cfg, options);
        let mixer = Mamba2Mixer {
            cfg: cfg.clone(),
            layers,
            k,
        };
        let lm = Lm::load(ctx, src, &dims, Box::new(mixer))?;
        Ok(Self {
            lm: Arc::new(lm),
            cfg,
        })
    }

    /// The names and shapes of every tensor a checkpoint of `cfg` holds (HF spelling).
    pub fn tensor_shapes(cfg: &Mamba2Config) -> HashMap<String, Vec<usize>> {
        let (d, e, h) = (cfg.d_model, cfg.d_inner, cfg.num_heads);
        let mut t = shell_shapes(&Self::lm_dims(cfg, &LoadOptions::default()));
        for i in 0..cfg.n_layer {
            let m = format!("backbone.layers.{i}.mixer.");
            let biases = (cfg.use_bias, cfg.use_conv_bias);
            mixer_io_shapes(
                &mut t,
                &m,
                d,
                cfg.d_in_proj(),
                cfg.conv_dim(),
                cfg.d_conv,
                e,
                biases,
            );
            for name in ["A_log", "D", "dt_bias"] {
                t.insert(format!("{m}{name}"), vec![h]);
            }
            t.insert(format!("{m}norm.weight"), vec![e]);
        }
        t
    }
}

model_handle!(Mamba2, Mamba2Config, "Mamba2");

/// Indices into the mixer's activation buffers.
const ZX: usize = 0;
const XBC: usize = 1;
const DT: usize = 2;
const DACS: usize = 3;
const CHUNKS: usize = 4;
const Y: usize = 5;
const YN: usize = 6;

impl Mixer for Mamba2Mixer {
    fn n_layer(&self) -> usize {
        self.cfg.n_layer
    }

    /// Conv state `[batch, conv_dim, d_conv-1]`, SSM state `[batch, H, P, N]`.
    fn state_lens(&self, batch: usize) -> Vec<usize> {
        let c = &self.cfg;
        vec![
            batch * c.conv_dim() * (c.d_conv - 1),
            batch * c.num_heads * c.head_dim * c.d_state,
        ]
    }

    fn act_lens(&self, batch: usize, cap: usize) -> Vec<usize> {
        let (c, rows) = (&self.cfg, batch * cap);
        let nchunks = cap.div_ceil(c.chunk_size);
        vec![
            rows * c.d_in_proj(),
            rows * c.conv_dim(),
            rows * c.num_heads,
            rows * c.num_heads,
            batch * nchunks * c.num_heads * c.head_dim * c.d_state,
            rows * c.d_inner,
            rows * c.d_inner,
        ]
    }

    fn widest_row(&self) -> usize {
        // The chunk states hold H·P·N values per chunk of Q tokens: per token that is H·P·N / Q
        // (rounded up, and a whole chunk's worth when the prompt is shorter than Q).
        let c = &self.cfg;
        c.d_in_proj()
            .max((c.num_heads * c.head_dim * c.d_state).div_ceil(c.chunk_size))
    }

    fn weight_bytes(&self) -> u64 {
        self.layers
            .iter()
            .map(|l| l.in_proj.bytes() + l.out_proj.bytes())
            .sum()
    }

    fn in_proj(&self, i: usize) -> &PagedMatrix {
        &self.layers[i].in_proj
    }

    fn record(&self, lm: &Lm, plan: &mut Plan, i: usize, r: &Rec<'_>) -> Result<()> {
        let ctx = &*lm.ctx;
        let c = &self.cfg;
        let l = &self.layers[i];
        let k = &self.k;
        let a = r.acts;
        let (b, cap, dm) = (r.batch, r.cap, c.d_model as u32);
        let (e, h, p, n, g, q) = (
            c.d_inner as u32,
            c.num_heads as u32,
            c.head_dim as u32,
            c.d_state as u32,
            c.n_groups as u32,
            c.chunk_size as u32,
        );
        let (conv_dim, w) = (c.conv_dim() as u32, c.d_in_proj() as u32);
        let (dt_min, dt_max) = (
            c.dt_min,
            if c.dt_max.is_finite() {
                c.dt_max
            } else {
                f32::MAX
            },
        );
        let all = Lm::all_rows(b);
        // Columns of the in_proj output: z at 0, xBC at e, dt at e + conv_dim.
        let dt_col = e + conv_dim;
        // Columns of the conv output: x at 0, B at e, C at e + G·N.
        let (b_col, c_col) = (e, e + g * n);

        let (kernel, has_bias) = (c.d_conv as u32, l.conv_b.is_some() as u32);
        let conv_bias = l.conv_b.as_ref().map(|t| &t.buffer).unwrap_or(&lm.dummy);
        // Decoding over texture weights, the conv step over xBC runs in in_proj's epilogue:
        // one dispatch fewer per layer.
        let fuse_conv = r.decode && l.in_proj.is_texture();
        let conv_params = move |len| Conv1dParams {
            batch: b,
            len,
            channels: conv_dim,
            kernel,
            x_offset: e,
            x_stride: w,
            out_stride: conv_dim,
            has_bias,
        };
        let conv_bufs = Conv1dBuffers {
            x: &a[ZX],
            weight: &l.conv_w.buffer,
            bias: conv_bias,
            state: &r.states[0],
            out: &a[XBC],
        };
        let conv = fuse_conv.then(|| ConvFuse::of(&conv_params(1), &conv_bufs));
        lm.linear_fused(
            plan,
            r,
            r.normed,
            dm,
            &l.in_proj,
            l.in_proj_bias.as_ref(),
            &a[ZX],
            w,
            all.clone(),
            Fuse {
                conv,
                norm: r.norm,
                accumulate: false,
            },
        )?;
        let seq_params = move |len| SsdScanSeqParams {
            batch: b,
            len,
            nheads: h,
            head_dim: p,
            d_state: n,
            ngroups: g,
            x_offset: 0,
            x_stride: conv_dim,
            b_offset: b_col,
            c_offset: c_col,
            dt_offset: dt_col,
            dt_stride: w,
            y_stride: e,
            dt_min,
            dt_max,
            // z, when gated: the in_proj output's first d_inner columns.
            z_offset: 0,
            ..Default::default()
        };
        // CPU adapters (lavapipe) walk the tokens one by one with each channel's state in the
        // invocation, for prefill and decode: one dispatch with no barriers instead of the
        // four chunked ones, whose workgroup-memory tiles and barriers cost far more there
        // (a 512-token mamba2-130m layer: 214 ms chunked, 60 ms walked; decode 1.06 ms with
        // ssd_state_update's reduction, ~0.2 with the kernel's step variant, which decode
        // takes). GPUs keep the chunked matmul form.
        // Decoding with the block norm fused into in_proj (one sequence, texture weights),
        // the step also applies the gate, silu(z), and out_proj the RMSNorm that is then left
        // of the gated norm: one dispatch fewer per layer. That needs the norm over all of
        // d_inner (one group) taken after the gate, Mamba-2's default.
        let walk = ctx.is_cpu_adapter() && ssd_scan_seq::aligned(&seq_params(1));
        let fuse_gate =
            walk && r.norm.is_some() && l.out_proj.is_texture() && g == 1 && !c.norm_before_gate;
        if fuse_conv {
            // Done in in_proj.
        } else if r.decode {
            plan.push(cap, conv_params, Conv1dStep::workgroups, |p| {
                k.conv1d_step.bind(ctx, p, conv_bufs)
            });
        } else {
            plan.push(cap, conv_params, Conv1d::workgroups, |p| {
                k.conv1d.bind(ctx, p, conv_bufs)
            });
        }
        let ssd_bufs = SsdStateUpdateBuffers {
            xbc: &a[XBC],
            dt_raw: &a[ZX],
            heads: &l.heads.buffer,
            state: &r.states[1],
            y: &a[Y],
        };
        if walk {
            let seq_params = move |len| SsdScanSeqParams {
                gate: fuse_gate as u32,
                ..seq_params(len)
            };
            plan.push(cap, seq_params, SsdScanSeq::workgroups, |prm| {
                let kernel = if r.decode { &k.scan_step } else { &k.scan_seq };
                kernel.bind(ctx, prm, ssd_bufs)
            });
        } else if r.decode {
            plan.push(
                cap,
                move |_| SsdStateUpdateParams {
                    batch: b,
                    nheads: h,
                    head_dim: p,
                    d_state: n,
                    ngroups: g,
                    x_offset: 0,
                    x_stride: conv_dim,
                    b_offset: b_col,
                    c_offset: c_col,
                    dt_offset: dt_col,
                    dt_stride: w,
                    y_stride: e,
                    dt_min,
                    dt_max,
                    ..Default::default()
                },
                SsdStateUpdate::workgroups,
                |prm| k.state_update.bind(ctx, prm, ssd_bufs),
            );
        } else {
            plan.push(
                cap,
                move |len| SsdChunkCumsumParams {
                    batch: b,
                    len,
                    nheads: h,
                    chunk: q,
                    dt_offset: dt_col,
                    dt_stride: w,
                    dt_min,
                    dt_max,
                },
                SsdChunkCumsum::workgroups,
                |prm| {
                    let bufs = SsdChunkCumsumBuffers {
                        dt_raw: &a[ZX],
                        heads: &l.heads.buffer,
                        dt: &a[DT],
                        dacs: &a[DACS],
                    };
                    k.cumsum.bind(ctx, prm, bufs)
                },
            );
            plan.push(
                cap,
                move |len| SsdChunkStateParams {
                    batch: b,
                    len,
                    nheads: h,
                    head_dim: p,
                    d_state: n,
                    ngroups: g,
                    chunk: q,
                    x_offset: 0,
                    x_stride: conv_dim,
                    b_offset: b_col,
                    ..Default::default()
                },
                SsdChunkState::workgroups,
                |prm| {
                    let bufs = SsdChunkStateBuffers {
                        xbc: &a[XBC],
                        dt: &a[DT],
                        dacs: &a[DACS],
                        states: &a[CHUNKS],
                    };
                    k.chunk_state.bind(ctx, prm, bufs)
                },
            );
            plan.push(
                cap,
                move |len| SsdStatePassingParams {
                    batch: b,
                    len,
                    nheads: h,
                    head_dim: p,
                    d_state: n,
                    chunk: q,
                    ..Default::default()
                },
                SsdStatePassing::workgroups,
                |prm| {
                    let bufs = SsdStatePassingBuffers {
                        dacs: &a[DACS],
                        states: &a[CHUNKS],
                        state: &r.states[1],
                    };
                    k.state_passing.bind(ctx, prm, bufs)
                },
            );
            plan.push(
                cap,
                move |len| SsdChunkScanParams {
                    batch: b,
                    len,
                    nheads: h,
                    head_dim: p,
                    d_state: n,
                    ngroups: g,
                    chunk: q,
                    x_offset: 0,
                    x_stride: conv_dim,
                    b_offset: b_col,
                    c_offset: c_col,
                    y_stride: e,
                },
                SsdChunkScan::workgroups,
                |prm| {
                    let bufs = SsdChunkScanBuffers {
                        xbc: &a[XBC],
                        dt: &a[DT],
                        dacs: &a[DACS],
                        states: &a[CHUNKS],
                        heads: &l.heads.buffer,
                        y: &a[Y],
                    };
                    k.chunk_scan.bind(ctx, prm, bufs)
                },
            );
        }
        let eps = c.eps;
        if !fuse_gate {
            let (group, nbg) = (e / g, c.norm_before_gate as u32);
            plan.push(
                cap,
                move |len| RmsnormGatedParams {
                    rows: b * len,
                    cols: e,
                    group,
                    eps,
                    z_offset: 0,
                    z_stride: w,
                    norm_before_gate: nbg,
                    ..Default::default()
                },
                RmsnormGated::workgroups,
                |prm| {
                    let bufs = RmsnormGatedBuffers {
                        y: &a[Y],
                        z: &a[ZX],
                        weight: &l.norm.buffer,
                        out: &a[YN],
                    };
                    k.norm.bind(ctx, prm, bufs)
                },
            );
        }
        lm.linear_fused(
            plan,
            r,
            if fuse_gate { &a[Y] } else { &a[YN] },
            e,
            &l.out_proj,
            l.out_proj_bias.as_ref(),
            r.mix,
            dm,
            all,
            Fuse {
                norm: fuse_gate.then_some(NormFuse {
                    weight: &l.norm.buffer,
                    eps,
                }),
                accumulate: r.accumulate_mix,
                ..Default::default()
            },
        )?;
        Ok(())
    }
}
