//! Mamba-1: the selective-scan mixer, loaded from a checkpoint (either spelling) or built from
//! seeded random weights of a config's dimensions.
//!
//! The mixer, for `rows = batch · len` tokens (transformers' `MambaMixer`):
//! ```text
//! xz  = normed · in_projᵀ (+ bias)            [rows, 2·d_inner]: x | z
//! xc  = silu(causal_conv1d(x) + conv bias)    conv state: the last d_conv-1 inputs
//! dbc = xc · x_projᵀ                          [rows, dt_rank + 2·d_state]: dt_low | B | C
//!                                             (rows padded to a multiple of 64 elements)
//! dt  = dbc[:, :dt_rank] · dt_projᵀ           (its bias is added inside the scan)
//! y   = selective_scan(dt, B, C, xc, z)       softplus, exp(ΔA), ΔB·x, C·h + D·x, ·silu(z)
//! mix = y · out_projᵀ (+ bias)
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::context::GpuContext;
use crate::error::{Error, Result};
use crate::kernels::conv1d::{Conv1d, Conv1dBuffers, Conv1dParams};
use crate::kernels::conv1d_step::Conv1dStep;
use crate::kernels::selective_scan::{
    pack_ssm, SelectiveScan, SelectiveScanBuffers, SelectiveScanParams, MAX_D_STATE,
};
use crate::kernels::selective_state_update::{ssm_texture, SelectiveStateUpdate};
use crate::model::checkpoint::Checkpoint;
use crate::model::config::{read_json, Mamba1Config};
use crate::model::lm::{
    matrix, matrix_from_values, mixer_io_shapes, shell_shapes, vector, ConvFuse, Fuse, Lm, LmDims,
    Mixer, Rec, Session, SessionOptions,
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
    x_proj: PagedMatrix,
    dt_proj: PagedMatrix,
    /// A_log `[d_inner, d_state]`, then D `[d_inner]`, then dt_bias `[d_inner]`, then
    /// dt_proj's weight for the decode step (`selective_scan::pack_ssm`).
    ssm: GpuTensor,
    /// The same in a texture, for the state update's texture variant (CPU adapters whose
    /// texture limit takes it; see `selective_state_update::ssm_texture`).
    ssm_tex: Option<wgpu::TextureView>,
    out_proj: PagedMatrix,
    out_proj_bias: Option<GpuTensor>,
}

struct Mamba1Mixer {
    cfg: Mamba1Config,
    layers: Vec<Layer>,
    conv1d: Conv1d,
    conv1d_step: Conv1dStep,
    scan: SelectiveScan,
    state_update: SelectiveStateUpdate,
    /// The state update reading `ssm_tex` (CPU adapters).
    state_update_tex: Option<SelectiveStateUpdate>,
}

/// A Mamba-1 model on the GPU. Cheap to clone; sessions share its weights.
#[derive(Clone)]
pub struct Mamba1 {
    lm: Arc<Lm>,
    cfg: Mamba1Config,
}

/// Elements between rows of dbc: its dt_rank + 2·d_state columns rounded up to a multiple of
/// 64, so that rows sit 256 bytes apart and dt_proj's x (dbc's first dt_rank columns) can be
/// copied into a texture on CPU adapters (wgpu's copy row alignment; with mamba-130m's
/// 80-wide rows its prefill dt_proj read x from storage: 7.7 ms per 512-token layer against
/// 6.4 from the texture). The padding is never written or read.
fn dbc_stride(c: &Mamba1Config) -> u32 {
    (c.dt_rank + 2 * c.d_state).next_multiple_of(64) as u32
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

impl Mamba1 {
    /// Uploads the weights `src` holds for a model described by `cfg`, stored as
    /// `options.dtype` asks.
    pub fn from_source_with(
        ctx: Arc<GpuContext>,
        cfg: Mamba1Config,
        src: &dyn WeightSource,
        options: &LoadOptions,
    ) -> Result<Self> {
        let (dt, st) = (options.dtype, options.storage);
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
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let m = format!("backbone.layers.{i}.mixer.");
            // dt_proj's weight `[e, r]` also goes into `ssm` (rows padded to whole vec4s) for
            // the decode step's state update, which applies dt_proj itself (one dispatch fewer
            // per layer). It is r / (3·d + r + 2n) of a layer's weights (2% for mamba-130m),
            // kept in f32 whatever the matrices' dtype.
            let dt_w = src.f32(&format!("{m}dt_proj.weight"), &[e, r])?;
            let ssm = pack_ssm(
                &src.f32(&format!("{m}A_log"), &[e, n])?,
                &src.f32(&format!("{m}D"), &[e])?,
                &src.f32(&format!("{m}dt_proj.bias"), &[e])?,
                Some((&dt_w, r)),
            );
            layers.push(Layer {
                in_proj: matrix(
                    &ctx,
                    src,
                    &format!("{m}in_proj.weight"),
                    2 * e,
                    d,
                    dt,
                    st,
                    d,
                )?,
                in_proj_bias: opt_vector(
                    &ctx,
                    src,
                    &format!("{m}in_proj.bias"),
                    2 * e,
                    cfg.use_bias,
                )?,
                conv_w: vector(&ctx, src, &format!("{m}conv1d.weight"), &[e, 1, k])?,
                conv_b: opt_vector(&ctx, src, &format!("{m}conv1d.bias"), e, cfg.use_conv_bias)?,
                x_proj: matrix(
                    &ctx,
                    src,
                    &format!("{m}x_proj.weight"),
                    r + 2 * n,
                    e,
                    dt,
                    st,
                    e,
                )?,
                dt_proj: matrix_from_values(
                    &ctx,
                    src,
                    &format!("{m}dt_proj.weight"),
                    &dt_w,
                    e,
                    r,
                    dt,
                    st,
                    r + 2 * n,
                )?,
                ssm: GpuTensor::from_slice(&ctx, "ssm", &ssm, &[ssm.len()])?,
                ssm_tex: if ctx.is_cpu_adapter() {
                    ssm_texture(&ctx, "ssm", &ssm)?
                } else {
                    None
                },
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
        let mixer = Mamba1Mixer {
            cfg: cfg.clone(),
            layers,
            conv1d: Conv1d::new(&ctx)?,
            conv1d_step: Conv1dStep::new(&ctx)?,
            scan: SelectiveScan::new(&ctx)?,
            state_update: SelectiveStateUpdate::new(&ctx)?,
            state_update_tex: if ctx.is_cpu_adapter() {
                Some(SelectiveStateUpdate::new_ssm_texture(&ctx)?)
            } else {
                None
            },
        };
        let dims = Self::lm_dims(&cfg, options);
        let lm = Lm::load(ctx, src, &dims, Box::new(mixer))?;
        Ok(Self {
            lm: Arc::new(lm),
            cfg,
        })
    }

    /// The names and shapes of every tensor a checkpoint of `cfg` holds (HF spelling).
    pub fn tensor_shapes(cfg: &Mamba1Config) -> HashMap<String, Vec<usize>> {
        let (d, e, n, r) = (cfg.d_model, cfg.d_inner, cfg.d_state, cfg.dt_rank);
        let mut t = shell_shapes(&Self::lm_dims(cfg, &LoadOptions::default()));
        for i in 0..cfg.n_layer {
            let m = format!("backbone.layers.{i}.mixer.");
            mixer_io_shapes(
                &mut t,
                &m,
                d,
                2 * e,
                e,
                cfg.d_conv,
                e,
                (cfg.use_bias, cfg.use_conv_bias),
            );
            t.insert(format!("{m}x_proj.weight"), vec![r + 2 * n, e]);
            t.insert(format!("{m}dt_proj.weight"), vec![e, r]);
            t.insert(format!("{m}dt_proj.bias"), vec![e]);
            t.insert(format!("{m}A_log"), vec![e, n]);
            t.insert(format!("{m}D"), vec![e]);
        }
        t
    }
}

model_handle!(Mamba1, Mamba1Config, "Mamba1");

/// Indices into the mixer's activation buffers.
const XZ: usize = 0;
const XC: usize = 1;
const DBC: usize = 2;
const DT: usize = 3;
const Y: usize = 4;

impl Mixer for Mamba1Mixer {
    fn n_layer(&self) -> usize {
        self.cfg.n_layer
    }

    /// Conv state `[batch, d_inner, d_conv-1]`, SSM state `[batch, d_inner, d_state]`.
    fn state_lens(&self, batch: usize) -> Vec<usize> {
        let c = &self.cfg;
        vec![
            batch * c.d_inner * (c.d_conv - 1),
            batch * c.d_inner * c.d_state,
        ]
    }

    fn act_lens(&self, batch: usize, cap: usize) -> Vec<usize> {
        let (c, rows) = (&self.cfg, batch * cap);
        vec![
            rows * 2 * c.d_inner,
            rows * c.d_inner,
            rows * dbc_stride(c) as usize,
            rows * c.d_inner,
            rows * c.d_inner,
        ]
    }

    fn widest_row(&self) -> usize {
        (2 * self.cfg.d_inner).max(dbc_stride(&self.cfg) as usize)
    }

    fn weight_bytes(&self) -> u64 {
        self.layers
            .iter()
            // Decode reads dt_proj's f32 copy in `ssm` (see `record`), not the matrix.
            .map(|l| {
                let dt_proj = (self.cfg.dt_rank * self.cfg.d_inner * 4) as u64;
                l.in_proj.bytes() + l.x_proj.bytes() + dt_proj + l.out_proj.bytes()
            })
            .sum()
    }

    fn in_proj(&self, i: usize) -> &PagedMatrix {
        &self.layers[i].in_proj
    }

    fn record(&self, lm: &Lm, plan: &mut Plan, i: usize, r: &Rec<'_>) -> Result<()> {
        let ctx = &*lm.ctx;
        let c = &self.cfg;
        let l = &self.layers[i];
        let (b, cap, dm) = (r.batch, r.cap, c.d_model as u32);
        let (e, n, rank) = (c.d_inner as u32, c.d_state as u32, c.dt_rank as u32);
        let dbc_w = dbc_stride(c);
        let a = r.acts;
        let all = Lm::all_rows(b);

        let (kernel, has_bias) = (c.d_conv as u32, l.conv_b.is_some() as u32);
        let conv_bias = l.conv_b.as_ref().map(|t| &t.buffer).unwrap_or(&lm.dummy);
        // Decoding over texture weights, the conv step runs in in_proj's epilogue (each x
        // channel's output is its conv input): one dispatch fewer per layer.
        let fuse_conv = r.decode && l.in_proj.is_texture();
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
            x: &a[XZ],
            weight: &l.conv_w.buffer,
            bias: conv_bias,
            state: &r.states[0],
            out: &a[XC],
        };
        let conv = fuse_conv.then(|| ConvFuse::of(&conv_params(1), &conv_bufs));
        lm.linear_fused(
            plan,
            r,
            r.normed,
            dm,
            &l.in_proj,
            l.in_proj_bias.as_ref(),
            &a[XZ],
            2 * e,
            all.clone(),
            Fuse {
                conv,
                norm: r.norm,
                accumulate: false,
            },
        )?;
        if fuse_conv {
            // Done in in_proj.
        } else if r.decode {
            plan.push(cap, conv_params, Conv1dStep::workgroups, |p| {
                self.conv1d_step.bind(ctx, p, conv_bufs)
            });
        } else {
            plan.push(cap, conv_params, Conv1d::workgroups, |p| {
                self.conv1d.bind(ctx, p, conv_bufs)
            });
        }
        lm.linear(
            plan,
            r,
            &a[XC],
            e,
            &l.x_proj,
            None,
            &a[DBC],
            dbc_w,
            all.clone(),
        )?;
        // Decode applies dt_proj inside the state update (it reads the weight from `ssm`);
        // prefill runs it as a matmul, whose tiles suit many tokens better.
        let fuse_dt = r.decode;
        if !fuse_dt {
            lm.linear(
                plan,
                r,
                &a[DBC],
                dbc_w,
                &l.dt_proj,
                None,
                &a[DT],
                e,
                all.clone(),
            )?;
        }
        let scan_params = move |len| SelectiveScanParams {
            batch: b,
            len,
            d_inner: e,
            d_state: n,
            dt_offset: 0,
            dt_stride: if fuse_dt { dbc_w } else { e },
            dt_rank: if fuse_dt { rank } else { 0 },
            bc_offset: rank,
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
            dt: if fuse_dt { &a[DBC] } else { &a[DT] },
            bc: &a[DBC],
            x: &a[XC],
            z: &a[XZ],
            ssm: &l.ssm.buffer,
            state: &r.states[1],
            y: &a[Y],
        };
        // The sequential walk decodes, and prefills too on CPU adapters (see
        // `GpuContext::is_cpu_adapter`); GPUs prefill with the parallel scan.
        if r.decode || ctx.is_cpu_adapter() {
            // The constants from their texture where there is one (CPU adapters).
            let (update, tex) = match (&self.state_update_tex, &l.ssm_tex) {
                (Some(k), Some(t)) => (k, Some(t)),
                _ => (&self.state_update, None),
            };
            plan.push(cap, scan_params, SelectiveStateUpdate::workgroups, |p| {
                update.bind(ctx, p, scan_bufs, tex)
            });
        } else {
            plan.push(cap, scan_params, SelectiveScan::workgroups, |p| {
                self.scan.bind(ctx, p, scan_bufs)
            });
        }
        lm.linear_fused(
            plan,
            r,
            &a[Y],
            e,
            &l.out_proj,
            l.out_proj_bias.as_ref(),
            r.mix,
            dm,
            all,
            Fuse {
                accumulate: r.accumulate_mix,
                ..Default::default()
            },
        )?;
        Ok(())
    }
}
