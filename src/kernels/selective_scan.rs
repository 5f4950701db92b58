//! `selective_scan`: Mamba-1 selective scan over a prompt as a parallel associative scan over
//! time (see the shader header for the math), continuing from and writing the SSM state.
//! See `shaders/selective_scan.wgsl`; CPU twin: [`crate::reference::selective_scan`].
//!
//! One workgroup of 256 invocations (32 token groups × 8 state lanes) per (sequence, channel);
//! it walks the prompt in chunks of [`CHUNK_TOKENS`] = 128 tokens (4 consecutive tokens per
//! invocation, composed sequentially, then a Hillis-Steele scan over the 32 groups in workgroup
//! memory), carrying the state from chunk to chunk. `d_state` may be at most [`MAX_D_STATE`]:
//! check configs with [`check_params`] before building a plan.

use std::sync::Arc;

use crate::context::{BindingKind, GpuContext, KernelPipeline};
use crate::error::{Error, Result};
use crate::kernels::{fold_workgroups, Dispatch, ShaderInfo};

/// The largest `d_state` the scan and state update kernels handle (the workgroup arrays that
/// hold A and the carried state for every state of a channel have this many entries).
pub const MAX_D_STATE: u32 = 256;

/// Tokens per chunk of the scan (the shader's `CHUNK`: 32 groups of 4 tokens).
pub const CHUNK_TOKENS: u32 = 128;

/// Mirrors `struct Params` in `shaders/selective_scan.wgsl` (and
/// `shaders/selective_state_update.wgsl`). All offsets and strides count f32 elements; row
/// `r = b·len + t` of sequence `b`, token `t`; `d` indexes channels, `n` states.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SelectiveScanParams {
    /// Sequences.
    pub batch: u32,
    /// Tokens per sequence (rows b·len + t).
    pub len: u32,
    /// Channels.
    pub d_inner: u32,
    /// States per channel (N).
    pub d_state: u32,
    /// Element offset of dt row 0.
    pub dt_offset: u32,
    /// Elements between dt rows.
    pub dt_stride: u32,
    /// Element offset of B in row 0 of bc (C follows at + d_state).
    pub bc_offset: u32,
    /// Elements between bc rows.
    pub bc_stride: u32,
    /// Element offset of x row 0.
    pub x_offset: u32,
    /// Elements between x rows.
    pub x_stride: u32,
    /// Element offset of z row 0 (the gate).
    pub z_offset: u32,
    /// Elements between z rows.
    pub z_stride: u32,
    /// Elements between y rows.
    pub y_stride: u32,
    /// Bit 0: gate y by silu(z). Bit 1: add D·x.
    pub flags: u32,
    /// 0: `dt` holds dt before bias (column `d` of each row). `k > 0` (selective_state_update
    /// only): `dt` holds dt_proj's input, `k` columns per row (the first `dt_rank` columns
    /// of x_proj's output), and the kernel applies dt_proj itself, its weight read from
    /// `ssm` after dt_bias, transposed (`W[d, j]` at `d_inner·N + 2·d_inner + j·d_inner + d`).
    pub dt_rank: u32,
    /// Padding to 16 bytes.
    pub _pad1: u32,
}

/// The buffers one dispatch reads and writes.
#[derive(Clone, Copy, Debug)]
pub struct SelectiveScanBuffers<'a> {
    /// f32 dt before bias and softplus, rows b·len + t, d_inner columns.
    pub dt: &'a wgpu::Buffer,
    /// f32 rows holding B (d_state) then C (d_state).
    pub bc: &'a wgpu::Buffer,
    /// f32 conv output, d_inner columns.
    pub x: &'a wgpu::Buffer,
    /// f32 gate, d_inner columns.
    pub z: &'a wgpu::Buffer,
    /// per-layer constants packed by [`pack_ssm`]: A_log `[d_inner, d_state]`, then D
    /// `[d_inner]`, then dt_bias `[d_inner]`, then (read only when `dt_rank > 0`) dt_proj's
    /// weight at [`dt_proj_layout`].
    pub ssm: &'a wgpu::Buffer,
    /// `[batch, d_inner, d_state]` f32 SSM state, read as the initial state and overwritten with the final one.
    pub state: &'a wgpu::Buffer,
    /// f32 output rows, d_inner columns.
    pub y: &'a wgpu::Buffer,
}

const BINDINGS: &[BindingKind] = &[
    BindingKind::Uniform,
    BindingKind::Storage,
    BindingKind::Storage,
    BindingKind::Storage,
    BindingKind::Storage,
    BindingKind::Storage,
    BindingKind::StorageRw,
    BindingKind::StorageRw,
];

/// Static facts about the shader.
pub const INFO: ShaderInfo = ShaderInfo {
    label: "mamba_wgpu.selective_scan",
    source: include_str!("../../shaders/selective_scan.wgsl"),
    bindings: BINDINGS,
    params_size: std::mem::size_of::<SelectiveScanParams>(),
};

/// Fails when `d_state` is 0 or exceeds [`MAX_D_STATE`] (the shaders do not check it).
/// `dt_rank > 0` is checked by [`SelectiveScan::bind`]'s caller: see [`check_parallel`].
pub fn check_params(params: &SelectiveScanParams) -> Result<()> {
    if params.d_state == 0 {
        return Err(Error::Shape("selective scan with d_state = 0".into()));
    }
    if params.d_state > MAX_D_STATE {
        return Err(Error::LimitExceeded {
            what: "selective scan d_state".into(),
            needed: params.d_state as u64,
            limit: MAX_D_STATE as u64,
        });
    }
    Ok(())
}

/// Where dt_proj's weight sits in a layer's packed constants: `(w0, k4)` with `W[d, j]` at
/// float `w0 + d·k4 + j`, `w0` = `d_inner·(d_state + 2)` and `k4` = `dt_rank`, each rounded up
/// to a multiple of 4, so that selective_state_update reads every channel's row as whole
/// vec4s (the padding columns are zero).
pub fn dt_proj_layout(d_inner: usize, d_state: usize, dt_rank: usize) -> (usize, usize) {
    (
        (d_inner * (d_state + 2)).next_multiple_of(4),
        dt_rank.next_multiple_of(4),
    )
}

/// Packs one layer's per-channel constants as both Mamba-1 scan kernels read them (the `ssm`
/// buffer): `A_log` `[d_inner, d_state]`, `D` `[d_inner]`, `dt_bias` `[d_inner]`, then, when
/// `dt_proj` = `Some((w, rank))` with `w` dt_proj's weight `[d_inner, rank]` (PyTorch layout),
/// its rows zero-padded at [`dt_proj_layout`]; the whole padded to a multiple of 4 floats
/// (selective_state_update reads the buffer as vec4s).
pub fn pack_ssm(
    a_log: &[f32],
    d_skip: &[f32],
    dt_bias: &[f32],
    dt_proj: Option<(&[f32], usize)>,
) -> Vec<f32> {
    let d_inner = d_skip.len();
    let mut ssm = [a_log, d_skip, dt_bias].concat();
    if let Some((w, rank)) = dt_proj {
        let (w0, k4) = dt_proj_layout(d_inner, a_log.len() / d_inner.max(1), rank);
        ssm.resize(w0, 0.0);
        for row in w.chunks(rank.max(1)).take(d_inner) {
            ssm.extend_from_slice(row);
            ssm.resize(ssm.len() + k4 - row.len(), 0.0);
        }
    }
    ssm.resize(ssm.len().next_multiple_of(4), 0.0);
    ssm
}

/// [`check_params`] plus what only the parallel scan refuses: dt_proj applied in the kernel
/// (`dt_rank > 0`), which only selective_state_update does.
pub fn check_parallel(params: &SelectiveScanParams) -> Result<()> {
    check_params(params)?;
    if params.dt_rank != 0 {
        return Err(Error::InvalidInput(
            "selective_scan takes dt after dt_proj (dt_rank must be 0)".into(),
        ));
    }
    Ok(())
}

/// The compiled kernel.
#[derive(Clone, Debug)]
pub struct SelectiveScan {
    pipeline: Arc<KernelPipeline>,
}

impl SelectiveScan {
    /// Builds (or fetches from the cache) the pipeline.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Ok(Self {
            pipeline: ctx.pipeline(INFO.label, INFO.source, INFO.bindings)?,
        })
    }

    /// One workgroup per (sequence, channel): `batch · d_inner`, folded past 65,535; none
    /// when `len` is 0 (the state is then left as it is).
    pub fn workgroups(params: &SelectiveScanParams) -> [u32; 3] {
        if params.len == 0 {
            return [0, 1, 1];
        }
        fold_workgroups(params.batch * params.d_inner)
    }

    /// Creates the dispatch (params uniform and bind group). `params.d_state` must pass
    /// [`check_params`].
    pub fn bind(
        &self,
        ctx: &GpuContext,
        params: &SelectiveScanParams,
        b: SelectiveScanBuffers<'_>,
    ) -> Dispatch {
        Dispatch::new(
            ctx,
            &self.pipeline,
            params,
            &[b.dt, b.bc, b.x, b.z, b.ssm, b.state, b.y],
            Self::workgroups(params),
        )
    }
}
