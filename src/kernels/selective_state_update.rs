//! `selective_state_update`: Mamba-1 one-token selective state update for decoding:
//! `h = exp(Δ·A)·h + Δ·B·x; y = C·h + D·x; y *= silu(z)` (same params and buffers as
//! `selective_scan` with `len` = 1). See `shaders/selective_state_update.wgsl`; CPU twin:
//! [`crate::reference::selective_scan`] with `len` = 1.
//!
//! One invocation per (sequence, channel), 64 per workgroup, looping over the states. A `len`
//! above 1 is walked token by token (correct, but use `selective_scan` for prompts).
//! `d_state` may be at most [`MAX_D_STATE`]; see [`check_params`].

use std::sync::Arc;

use crate::context::{BindingKind, GpuContext, KernelPipeline};
use crate::error::{Error, Result};
pub use crate::kernels::selective_scan::{
    check_params, SelectiveScanBuffers, SelectiveScanParams, MAX_D_STATE,
};
use crate::kernels::{fold_workgroups, Dispatch, ShaderInfo};

// Binding 5 (the packed constants) is a storage buffer, or an rgba32float texture in the
// texture variants.
const fn bindings(ssm: BindingKind) -> [BindingKind; 8] {
    use BindingKind::{Storage, StorageRw, Uniform};
    [
        Uniform, Storage, Storage, Storage, Storage, ssm, StorageRw, StorageRw,
    ]
}

const BINDINGS: &[BindingKind] = &bindings(BindingKind::Storage);
const BINDINGS_SSM_TEXTURE: &[BindingKind] = &bindings(BindingKind::TextureFloat);

/// Texels per line of the constants' texture ([`ssm_texture`]): a power of two, so the shader
/// finds texel i with a shift and a mask rather than a division per lane.
pub const SSM_TEXTURE_WIDTH: u32 = 4096;

// The lane headers: the entry point, and whether B, C and dt_proj's input are shared.
macro_rules! plain_lanes {
    () => {
        "// Lanes: every lane loading what it reads.
fn spread(v: f32) -> V8 { return V8(vec4<f32>(v), vec4<f32>(v)); }
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    update(wg, nwg, lid, 0u, false);
}
"
    };
}

macro_rules! subgroup_lanes {
    () => {
        "// Lanes: B, C and dt_proj's input shared across subgroups of 8 or more lanes.
fn spread(v: f32) -> V8 {
    return V8(vec4<f32>(subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u),
                        subgroupBroadcast(v, 2u), subgroupBroadcast(v, 3u)),
              vec4<f32>(subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u),
                        subgroupBroadcast(v, 6u), subgroupBroadcast(v, 7u)));
}
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32,
        @builtin(subgroup_invocation_id) lane: u32, @builtin(subgroup_size) width: u32) {
    update(wg, nwg, lid, lane & 7u, width >= 8u);
}
"
    };
}

// The constants headers: binding 5 and ssm4(i), vec4 i of the packed constants.
macro_rules! ssm_buffer {
    () => {
        "// Constants: a storage buffer.
@group(0) @binding(5) var<storage, read> ssm: array<vec4<f32>>;
fn ssm4(i: u32) -> vec4<f32> { return ssm[i]; }
"
    };
}

macro_rules! ssm_texture {
    () => {
        "// Constants: an rgba32float texture 4096 texels wide, vec4 i at texel (i % 4096, i / 4096).
// Each lane reads its own channel's row (A_log, dt_proj's weight): a per-lane storage load is
// a loop over the lanes on lavapipe, a texel fetch is not (mamba-130m decode: ~245 -> ~190 us
// per layer hot, the constants' loads replaced by fetches).
@group(0) @binding(5) var ssm_tex: texture_storage_2d<rgba32float, read>;
fn ssm4(i: u32) -> vec4<f32> { return textureLoad(ssm_tex, vec2<u32>(i & 4095u, i >> 12u)); }
"
    };
}

macro_rules! variant {
    ($label:literal, $lanes:ident, $ssm:ident, $bindings:expr) => {
        ShaderInfo {
            label: concat!("mamba_wgpu.", $label),
            source: concat!(
                "// mamba_wgpu.",
                $label,
                ": shaders/selective_state_update.wgsl after its lane and constants headers.\n",
                $lanes!(),
                $ssm!(),
                include_str!("../../shaders/selective_state_update.wgsl")
            ),
            bindings: $bindings,
            params_size: std::mem::size_of::<SelectiveScanParams>(),
        }
    };
}

/// Static facts about the shader in which every lane loads B, C and dt_proj's input itself
/// (no optional feature).
pub const INFO: ShaderInfo = variant!("selective_state_update", plain_lanes, ssm_buffer, BINDINGS);

/// Static facts about the shader sharing B, C and dt_proj's input across subgroup lanes
/// (needs wgpu's `SUBGROUP` feature).
pub const INFO_SUBGROUP: ShaderInfo = variant!(
    "selective_state_update_subgroup",
    subgroup_lanes,
    ssm_buffer,
    BINDINGS
);

/// [`INFO`] and [`INFO_SUBGROUP`] reading the packed constants from a texture
/// ([`ssm_texture`]), for CPU adapters.
pub const INFO_SSM_TEXTURE: [ShaderInfo; 2] = [
    variant!(
        "selective_state_update_ssm_texture",
        plain_lanes,
        ssm_texture,
        BINDINGS_SSM_TEXTURE
    ),
    variant!(
        "selective_state_update_subgroup_ssm_texture",
        subgroup_lanes,
        ssm_texture,
        BINDINGS_SSM_TEXTURE
    ),
];

/// The packed constants (`selective_scan::pack_ssm`'s layout, zero-padded to whole texels) in
/// an rgba32float texture for the texture variants: vec4 i at texel
/// (i % [`SSM_TEXTURE_WIDTH`], i / [`SSM_TEXTURE_WIDTH`]). `None` where the device's texture
/// limit is below that width or the lines would not fit it (the buffer variants serve then).
pub fn ssm_texture(
    ctx: &GpuContext,
    label: &str,
    packed: &[f32],
) -> Result<Option<wgpu::TextureView>> {
    let texels = packed.len().div_ceil(4).max(1);
    let limit = ctx.texture_dimension_limit();
    let lines = texels.div_ceil(SSM_TEXTURE_WIDTH as usize);
    if limit < SSM_TEXTURE_WIDTH || lines > limit as usize {
        return Ok(None);
    }
    let width = texels.min(SSM_TEXTURE_WIDTH as usize) as u32;
    let mut data = packed.to_vec();
    data.resize(width as usize * lines * 4, 0.0);
    let texture = ctx.storage_texture(label, wgpu::TextureFormat::Rgba32Float, width, lines as u32);
    ctx.queue().write_texture(
        texture.as_image_copy(),
        bytemuck::cast_slice(&data),
        wgpu::TexelCopyBufferLayout {
            offset: 0,
            bytes_per_row: Some(width * 16),
            rows_per_image: Some(lines as u32),
        },
        texture.size(),
    );
    Ok(Some(texture.create_view(&Default::default())))
}

/// The compiled kernel.
#[derive(Clone, Debug)]
pub struct SelectiveStateUpdate {
    pipeline: Arc<KernelPipeline>,
    ssm_texture: bool,
}

impl SelectiveStateUpdate {
    /// Builds (or fetches from the cache) the fastest variant the device has.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Self::variant(ctx, ctx.features().subgroup)
    }

    /// The variant sharing loads across subgroup lanes when `subgroup` (which needs the
    /// `SUBGROUP` feature), the plain one otherwise; tests run both.
    pub fn variant(ctx: &GpuContext, subgroup: bool) -> Result<Self> {
        if subgroup && !ctx.features().subgroup {
            return Err(Error::MissingFeature("SUBGROUP"));
        }
        let info = if subgroup { INFO_SUBGROUP } else { INFO };
        Ok(Self {
            pipeline: ctx.pipeline(info.label, info.source, info.bindings)?,
            ssm_texture: false,
        })
    }

    /// [`Self::new`] reading the packed constants from a texture ([`ssm_texture`]).
    pub fn new_ssm_texture(ctx: &GpuContext) -> Result<Self> {
        Self::variant_ssm_texture(ctx, ctx.features().subgroup)
    }

    /// [`Self::variant`] reading the packed constants from a texture.
    pub fn variant_ssm_texture(ctx: &GpuContext, subgroup: bool) -> Result<Self> {
        if subgroup && !ctx.features().subgroup {
            return Err(Error::MissingFeature("SUBGROUP"));
        }
        let info = INFO_SSM_TEXTURE[subgroup as usize];
        Ok(Self {
            pipeline: ctx.pipeline(info.label, info.source, info.bindings)?,
            ssm_texture: true,
        })
    }

    /// Whether this pipeline reads the constants from a texture.
    pub fn reads_ssm_texture(&self) -> bool {
        self.ssm_texture
    }

    /// Invocations per workgroup (the shader's `WG`).
    pub const WORKGROUP_SIZE: u32 = 64;

    /// `ceil(d_inner / 64)` workgroups per sequence, `batch` of those, folded past 65,535;
    /// none when `len` is 0.
    pub fn workgroups(params: &SelectiveScanParams) -> [u32; 3] {
        if params.len == 0 {
            return [0, 1, 1];
        }
        fold_workgroups(params.batch * params.d_inner.div_ceil(Self::WORKGROUP_SIZE))
    }

    /// Creates the dispatch (params uniform and bind group). `params.d_state` must pass
    /// [`check_params`]. The texture variants read the constants from `ssm_texture` (made by
    /// [`ssm_texture`] from what `b.ssm` holds) instead of `b.ssm`.
    ///
    /// # Panics
    /// If this pipeline reads the constants from a texture and `ssm_texture` is `None`.
    pub fn bind(
        &self,
        ctx: &GpuContext,
        params: &SelectiveScanParams,
        b: SelectiveScanBuffers<'_>,
        ssm_texture: Option<&wgpu::TextureView>,
    ) -> Dispatch {
        let ssm = if self.ssm_texture {
            wgpu::BindingResource::TextureView(
                ssm_texture.expect("the ssm-texture state update needs the constants' texture"),
            )
        } else {
            b.ssm.as_entire_binding()
        };
        Dispatch::with_resources(
            ctx,
            &self.pipeline,
            params,
            &[
                b.dt.as_entire_binding(),
                b.bc.as_entire_binding(),
                b.x.as_entire_binding(),
                b.z.as_entire_binding(),
                ssm,
                b.state.as_entire_binding(),
                b.y.as_entire_binding(),
            ],
            Self::workgroups(params),
        )
    }
}
