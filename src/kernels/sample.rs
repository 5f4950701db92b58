//! `sample`: Sampling on the GPU, one workgroup per sequence: greedy argmax (lowest index on ties) or seeded sampling with temperature, top-k and top-p; writes the chosen token id so only it is read back, and advances each sequence's step counter (the RNG stream position).
//! See `shaders/sample.wgsl`; CPU twin in `crate::reference`.

use std::sync::Arc;

use crate::context::{BindingKind, GpuContext, KernelPipeline};
use crate::error::Result;
use crate::kernels::{fold_workgroups, Dispatch, ShaderInfo};

/// Mirrors `struct Params` in `shaders/sample.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SampleParams {
    /// Sequences.
    pub batch: u32,
    /// Logits per sequence.
    pub vocab: u32,
    /// Element offset of sequence 0's logits.
    pub logits_offset: u32,
    /// Elements between sequences' logits.
    pub logits_stride: u32,
    /// Softmax temperature; 0 means greedy.
    pub temperature: f32,
    /// Keep the k most likely tokens; 0 keeps all.
    pub top_k: u32,
    /// Keep the smallest set whose probability reaches top_p (1 keeps all).
    pub top_p: f32,
    /// RNG seed.
    pub seed: u32,
    /// Element offset in out for sequence 0.
    pub out_offset: u32,
    /// Elements between sequences in out.
    pub out_stride: u32,
    /// Padding.
    pub _pad0: u32,
    /// Padding.
    pub _pad1: u32,
}

/// The buffers one dispatch reads and writes.
#[derive(Clone, Copy, Debug)]
pub struct SampleBuffers<'a> {
    /// f32 logits.
    pub logits: &'a wgpu::Buffer,
    /// `[batch]` u32 per-sequence step counters, incremented each call.
    pub steps: &'a wgpu::Buffer,
    /// u32 chosen token ids.
    pub out: &'a wgpu::Buffer,
}

const BINDINGS: &[BindingKind] = &[
    BindingKind::Uniform,
    BindingKind::Storage,
    BindingKind::StorageRw,
    BindingKind::StorageRw,
];

/// Static facts about the shader.
pub const INFO: ShaderInfo = ShaderInfo {
    label: "mamba_wgpu.sample",
    source: include_str!("../../shaders/sample.wgsl"),
    bindings: BINDINGS,
    params_size: std::mem::size_of::<SampleParams>(),
};

/// The compiled kernel.
#[derive(Clone, Debug)]
pub struct Sample {
    pipeline: Arc<KernelPipeline>,
}

impl Sample {
    /// Builds (or fetches from the cache) the pipeline.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Ok(Self {
            pipeline: ctx.pipeline(INFO.label, INFO.source, INFO.bindings)?,
        })
    }

    /// The dispatch geometry (TODO: placeholder, the kernel's author sets it).
    pub fn workgroups(params: &SampleParams) -> [u32; 3] {
        let _ = params;
        fold_workgroups(1)
    }

    /// Creates the dispatch (params uniform and bind group).
    pub fn bind(&self, ctx: &GpuContext, params: &SampleParams, b: SampleBuffers<'_>) -> Dispatch {
        Dispatch::new(
            ctx,
            &self.pipeline,
            params,
            &[b.logits, b.steps, b.out],
            Self::workgroups(params),
        )
    }
}
