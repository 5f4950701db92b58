//! The WGSL kernels, one module per shader. Each module owns its WGSL source, a `#[repr(C)]`
//! params struct mirroring the shader's `struct Params` field for field, the bind group layout
//! (as a list of [`BindingKind`]s, binding 0 always the params uniform), the pipeline (built
//! once per device through [`GpuContext::pipeline`]), a typed `bind` that takes named buffers
//! and returns a [`Dispatch`], and the workgroup geometry. Kernels never create encoders,
//! submit or map: that is the caller's (a model plan's or a test's) business.

use std::sync::Arc;

use crate::context::{BindingKind, GpuContext, KernelPipeline};
use crate::error::Result;

pub mod conv1d;
pub mod conv1d_step;
pub mod embedding;
pub mod fma_probe;
pub mod gemv;
pub mod gemv_q4_0;
pub mod gemv_q8_0;
pub mod linear_tex;
pub mod matmul;
pub mod rmsnorm;
pub mod rmsnorm_gated;
pub mod sample;
pub mod selective_scan;
pub mod selective_state_update;
pub mod ssd_chunk_cumsum;
pub mod ssd_chunk_scan;
pub mod ssd_chunk_state;
pub mod ssd_scan_seq;
pub mod ssd_state_passing;
pub mod ssd_state_update;
pub mod stream_read;
pub mod stream_read_tex;

/// The most workgroups one dispatch dimension may have on every WebGPU device.
pub const MAX_GROUPS_PER_DIM: u32 = 65_535;

/// Splits a 1-D count of workgroups into x and y so that neither passes 65,535. The shader
/// recovers the linear index as `wg.x + wg.y * num_workgroups.x` and skips indices past the
/// real count (the fold may round up).
pub fn fold_workgroups(groups: u32) -> [u32; 3] {
    if groups <= MAX_GROUPS_PER_DIM {
        [groups, 1, 1]
    } else {
        let y = groups.div_ceil(MAX_GROUPS_PER_DIM);
        [groups.div_ceil(y), y, 1]
    }
}

/// Static facts about one shader, for the validation test and the shader dump example.
#[derive(Clone, Copy, Debug)]
pub struct ShaderInfo {
    /// The pipeline label, `mamba_wgpu.<op>`.
    pub label: &'static str,
    /// The WGSL source.
    pub source: &'static str,
    /// Bind group 0, in binding order (binding 0 is the params uniform).
    pub bindings: &'static [BindingKind],
    /// `size_of` the Rust params struct; must equal the WGSL `Params` size.
    pub params_size: usize,
}

/// Every shader the crate builds.
pub fn all_shaders() -> Vec<ShaderInfo> {
    let mut all = vec![
        rmsnorm::INFO,
        embedding::INFO,
        matmul::INFO,
        gemv::INFO,
        matmul::INFO_F16,
        gemv::INFO_F16,
        gemv_q8_0::INFO,
        gemv_q4_0::INFO,
        linear_tex::INFO,
        linear_tex::INFO_F16,
        linear_tex::INFO_F16_UNPACK,
        linear_tex::INFO_SUBGROUP,
        linear_tex::INFO_F16_SUBGROUP,
        linear_tex::INFO_F16_UNPACK_SUBGROUP,
        conv1d::INFO,
        conv1d_step::INFO,
        selective_scan::INFO,
        selective_state_update::INFO,
        selective_state_update::INFO_SUBGROUP,
        sample::INFO,
        rmsnorm_gated::INFO,
        ssd_chunk_cumsum::INFO,
        ssd_chunk_state::INFO,
        ssd_state_passing::INFO,
        ssd_chunk_scan::INFO,
        ssd_state_update::INFO,
        ssd_state_update::INFO_VEC4,
        ssd_scan_seq::INFO,
        ssd_scan_seq::INFO_SUBGROUP,
        ssd_scan_seq::INFO_STEP,
        ssd_scan_seq::INFO_STEP_SUBGROUP,
        stream_read::INFO,
        stream_read_tex::INFO,
        fma_probe::INFO,
    ];
    all.extend(linear_tex::INFO_NARROW);
    all.extend(linear_tex::INFO_ONE_ROW);
    all.extend(linear_tex::INFO_X_TEXTURE);
    all.extend(selective_state_update::INFO_SSM_TEXTURE);
    all.push(rmsnorm::INFO_NARROW);
    all.push(rmsnorm_gated::INFO_NARROW);
    all
}

/// One recorded dispatch: a pipeline, its bind group (created once), the uniform that holds
/// its params, and its workgroup counts. A plan keeps these and records them every forward.
#[derive(Debug)]
pub struct Dispatch {
    pipeline: Arc<KernelPipeline>,
    bind_group: wgpu::BindGroup,
    params: wgpu::Buffer,
    workgroups: [u32; 3],
    pre: Option<PreCopy>,
}

/// The rectangle of a buffer-to-texture copy: `rows` rows of `texels` 16-byte texels, the
/// first at byte `offset` of the buffer and each `bytes_per_row` after the one before.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyRect {
    /// Byte offset of the first row in the buffer.
    pub offset: u64,
    /// Bytes between rows in the buffer (a multiple of 256, wgpu's copy row alignment).
    pub bytes_per_row: u32,
    /// Texels per row.
    pub texels: u32,
    /// Rows.
    pub rows: u32,
}

/// A buffer-to-texture copy a dispatch needs in front of it (linear_tex's x texture). Its
/// rectangle follows the dispatch's params through `rect_of`, so a plan that rewrites the
/// params for another length moves the copy with them.
#[derive(Debug)]
struct PreCopy {
    src: wgpu::Buffer,
    dst: wgpu::Texture,
    rect_of: fn(&[u8]) -> CopyRect,
    rect: CopyRect,
}

impl Dispatch {
    /// Builds the params uniform and the bind group: binding 0 is `params`, bindings 1.. are
    /// `buffers` in order, each bound whole.
    pub fn new<P: bytemuck::Pod>(
        ctx: &GpuContext,
        pipeline: &Arc<KernelPipeline>,
        params: &P,
        buffers: &[&wgpu::Buffer],
        workgroups: [u32; 3],
    ) -> Self {
        let resources: Vec<_> = buffers.iter().map(|b| b.as_entire_binding()).collect();
        Self::with_resources(ctx, pipeline, params, &resources, workgroups)
    }

    /// Like [`Dispatch::new`] for kernels that bind textures too: bindings 1.. are
    /// `resources` in order.
    pub fn with_resources<P: bytemuck::Pod>(
        ctx: &GpuContext,
        pipeline: &Arc<KernelPipeline>,
        params: &P,
        resources: &[wgpu::BindingResource<'_>],
        workgroups: [u32; 3],
    ) -> Self {
        let params_buf = ctx.uniform_buffer(&pipeline.label, params);
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: params_buf.as_entire_binding(),
        }];
        for (i, r) in resources.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: r.clone(),
            });
        }
        let bind_group = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&pipeline.label),
            layout: &pipeline.layout,
            entries: &entries,
        });
        Self {
            pipeline: pipeline.clone(),
            bind_group,
            params: params_buf,
            workgroups,
            pre: None,
        }
    }

    /// Adds a copy from `src` into `dst` that runs before the dispatch, over the rectangle
    /// `rect_of` gives for the params' bytes (now `params`, later those of every update).
    pub fn with_pre_copy<P: bytemuck::Pod>(
        mut self,
        src: &wgpu::Buffer,
        dst: &wgpu::Texture,
        rect_of: fn(&[u8]) -> CopyRect,
        params: &P,
    ) -> Self {
        self.pre = Some(PreCopy {
            src: src.clone(),
            dst: dst.clone(),
            rect_of,
            rect: rect_of(bytemuck::bytes_of(params)),
        });
        self
    }

    /// Whether the dispatch needs a copy in front of it (outside any compute pass).
    pub fn has_pre_copy(&self) -> bool {
        self.pre.is_some()
    }

    /// Records the copy the dispatch needs in front of it, if any (an empty one is skipped).
    pub fn encode_pre_copy(&self, enc: &mut wgpu::CommandEncoder) {
        let Some(p) = &self.pre else { return };
        let r = p.rect;
        if r.rows == 0 || r.texels == 0 || self.workgroups.contains(&0) {
            return;
        }
        enc.copy_buffer_to_texture(
            wgpu::TexelCopyBufferInfo {
                buffer: &p.src,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: r.offset,
                    bytes_per_row: Some(r.bytes_per_row),
                    rows_per_image: Some(r.rows),
                },
            },
            p.dst.as_image_copy(),
            wgpu::Extent3d {
                width: r.texels,
                height: r.rows,
                depth_or_array_layers: 1,
            },
        );
    }

    /// Rewrites the params and workgroup counts (for a call with another length or batch);
    /// the write lands before the next submit.
    pub fn update<P: bytemuck::Pod>(&mut self, ctx: &GpuContext, params: &P, workgroups: [u32; 3]) {
        self.update_bytes(ctx, bytemuck::bytes_of(params), workgroups);
    }

    /// Like [`Dispatch::update`] with the params already as bytes.
    pub fn update_bytes(&mut self, ctx: &GpuContext, params: &[u8], workgroups: [u32; 3]) {
        ctx.queue().write_buffer(&self.params, 0, params);
        self.workgroups = workgroups;
        if let Some(p) = &mut self.pre {
            p.rect = (p.rect_of)(params);
        }
    }

    /// The pipeline label.
    pub fn label(&self) -> &str {
        &self.pipeline.label
    }

    /// The workgroup counts.
    pub fn workgroups(&self) -> [u32; 3] {
        self.workgroups
    }

    /// Records the dispatch into a compute pass; an empty dispatch is skipped (zero-sized
    /// dispatches are invalid on some backends).
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        if self.workgroups.contains(&0) {
            return;
        }
        pass.set_pipeline(&self.pipeline.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.workgroups[0], self.workgroups[1], self.workgroups[2]);
    }
}

/// Records `dispatches` into one encoder and one compute pass, submits once and waits.
/// For tests and one-off work; models record through their plans.
pub fn run(ctx: &GpuContext, dispatches: &[&Dispatch]) -> Result<()> {
    let mut enc = ctx
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("mamba_wgpu.run"),
        });
    encode_all(&mut enc, "mamba_wgpu.run", dispatches.iter().copied());
    ctx.queue().submit([enc.finish()]);
    ctx.wait()
}

/// Records `dispatches` in order into compute passes of `enc`: one pass, cut in front of
/// every dispatch that needs a copy first (copies cannot sit inside a pass).
pub fn encode_all<'a>(
    enc: &mut wgpu::CommandEncoder,
    label: &str,
    dispatches: impl IntoIterator<Item = &'a Dispatch>,
) {
    let mut it = dispatches.into_iter().peekable();
    while let Some(first) = it.next() {
        first.encode_pre_copy(enc);
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(label),
            timestamp_writes: None,
        });
        first.encode(&mut pass);
        while let Some(d) = it.next_if(|d| !d.has_pre_copy()) {
            d.encode(&mut pass);
        }
    }
}
