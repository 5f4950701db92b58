//! `sample`: token sampling on the GPU, one workgroup per sequence: greedy argmax (lowest index
//! on ties) or seeded sampling with temperature, top-k and top-p. It writes the chosen token id,
//! so only that id is read back (or none: a model points `out` at its next-step id buffer), and
//! advances each sequence's step counter, the position in its random stream.
//!
//! The choice is deterministic: the random number is an integer hash of (seed, sequence, step),
//! the weights come from integer arithmetic and every sum has one fixed order, so the same
//! logits, settings and step give the same token on every device and in the CPU twin
//! [`crate::reference::sample`]. See `shaders/sample.wgsl` for the math.

use std::sync::Arc;

use crate::context::{BindingKind, GpuContext, KernelPipeline};
use crate::error::{Error, Result};
use crate::kernels::{fold_workgroups, Dispatch, ShaderInfo};

/// Mirrors `struct Params` in `shaders/sample.wgsl`. Build it with [`SamplingConfig::params`],
/// which also fills `logit_scale`, then move the logits or out slices with
/// [`SampleParams::with_logits`] and [`SampleParams::with_out`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SampleParams {
    /// Sequences (one workgroup each).
    pub batch: u32,
    /// Logits per sequence; at most 2^24 (the kernel counts in f32). 0 writes id 0.
    pub vocab: u32,
    /// Element offset of sequence 0's logits.
    pub logits_offset: u32,
    /// Elements between sequences' logits (0: every sequence reads the same row).
    pub logits_stride: u32,
    /// Softmax temperature. Anything but a positive finite value (0, negative, NaN, infinite)
    /// means greedy.
    pub temperature: f32,
    /// `log2(e) / temperature`, the factor the kernel really uses (`p ∝ 2^((l - max)·scale)`).
    /// Computed on the CPU because a WGSL division may differ between devices in the last bit.
    pub logit_scale: f32,
    /// Keep the `top_k` most likely tokens and every token tied with the last; 0 (or at least
    /// `vocab`) keeps all.
    pub top_k: u32,
    /// Keep the smallest set of most likely tokens whose probability (renormalised over the
    /// top-k set) reaches `top_p`, with the token that crosses it and its ties; values outside
    /// (0, 1) keep all.
    pub top_p: f32,
    /// Low 32 bits of the RNG seed.
    pub seed_lo: u32,
    /// High 32 bits of the RNG seed.
    pub seed_hi: u32,
    /// Element offset in `out` of sequence 0's id.
    pub out_offset: u32,
    /// Elements between sequences' ids in `out`.
    pub out_stride: u32,
}

impl SampleParams {
    /// The same params reading sequence `b`'s logits at `offset + b·stride` (elements).
    pub fn with_logits(mut self, offset: u32, stride: u32) -> Self {
        self.logits_offset = offset;
        self.logits_stride = stride;
        self
    }

    /// The same params writing sequence `b`'s id at `out[offset + b·stride]`.
    pub fn with_out(mut self, offset: u32, stride: u32) -> Self {
        self.out_offset = offset;
        self.out_stride = stride;
        self
    }
}

/// How to choose tokens, checked by [`SamplingConfig::validate`]. The default is greedy.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingConfig {
    /// Softmax temperature: 0 is greedy (argmax, lowest index on ties), larger is more random.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (and those tied with the last); 0 means all.
    pub top_k: u32,
    /// Nucleus sampling: keep the smallest set of most likely tokens whose probability reaches
    /// `top_p`, in (0, 1]; 1 keeps all.
    pub top_p: f32,
    /// Seeds every sequence's random stream; the same seed repeats the same tokens.
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

impl SamplingConfig {
    /// Whether these settings pick the argmax: temperature 0 (or, for settings that fail
    /// [`SamplingConfig::validate`], any temperature that is not positive and finite, or so
    /// small that its logit scale overflows).
    pub fn is_greedy(&self) -> bool {
        let scale = std::f32::consts::LOG2_E / self.temperature;
        !(self.temperature > 0.0 && self.temperature.is_finite() && scale.is_finite())
    }

    /// Fails with [`Error::InvalidInput`] for a negative or non-finite temperature, a positive
    /// one so small that `log2(e) / temperature` overflows f32 (below about 4·10^-39, where the
    /// kernel would compute `0 · ∞`), or a `top_p` outside (0, 1] (NaN included). Any `top_k`
    /// is valid: 0 means all tokens.
    pub fn validate(&self) -> Result<()> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(Error::InvalidInput(format!(
                "sampling temperature must be finite and at least 0, got {}",
                self.temperature
            )));
        }
        if self.temperature > 0.0 && !(std::f32::consts::LOG2_E / self.temperature).is_finite() {
            return Err(Error::InvalidInput(format!(
                "sampling temperature {:e} is too small (use 0 for greedy)",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::InvalidInput(format!(
                "sampling top_p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        Ok(())
    }

    /// Params for `batch` sequences of `vocab` logits laid out contiguously (sequence `b` at
    /// `b·vocab`), writing sequence `b`'s id at `out[b]`; see [`SampleParams::with_logits`] and
    /// [`SampleParams::with_out`] for other layouts. Nothing is checked here: call
    /// [`SamplingConfig::validate`] first (a bad temperature gives greedy params, a bad
    /// `top_p` keeps all tokens).
    pub fn params(&self, batch: u32, vocab: u32) -> SampleParams {
        let sampling = !self.is_greedy();
        SampleParams {
            batch,
            vocab,
            logits_offset: 0,
            logits_stride: vocab,
            temperature: if sampling { self.temperature } else { 0.0 },
            logit_scale: if sampling {
                std::f32::consts::LOG2_E / self.temperature
            } else {
                0.0
            },
            top_k: self.top_k,
            top_p: self.top_p,
            seed_lo: self.seed as u32,
            seed_hi: (self.seed >> 32) as u32,
            out_offset: 0,
            out_stride: 1,
        }
    }
}

/// The buffers one dispatch reads and writes.
#[derive(Clone, Copy, Debug)]
pub struct SampleBuffers<'a> {
    /// f32 logits (see [`SampleParams`] for the layout).
    pub logits: &'a wgpu::Buffer,
    /// `[batch]` u32 per-sequence step counters, each incremented by one per dispatch (greedy
    /// included): the position in the sequence's random stream. Zero them for new sequences.
    pub steps: &'a wgpu::Buffer,
    /// u32 chosen token ids (see [`SampleParams`] for the layout).
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

    /// One workgroup of 256 invocations per sequence.
    pub fn workgroups(params: &SampleParams) -> [u32; 3] {
        fold_workgroups(params.batch)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(temperature: f32, top_k: u32, top_p: f32) -> SamplingConfig {
        SamplingConfig {
            temperature,
            top_k,
            top_p,
            seed: 0,
        }
    }

    #[test]
    fn validate_accepts_the_documented_ranges() {
        for ok in [
            cfg(0.0, 0, 1.0),
            cfg(1.0, 0, 1.0),
            cfg(1e-30, 1, 1e-7),
            cfg(1e30, u32::MAX, 0.5),
            cfg(f32::MIN_POSITIVE, 0, 1.0),
        ] {
            ok.validate().unwrap();
            let p = ok.params(2, 10);
            assert!(
                p.logit_scale.is_finite() && p.temperature.is_finite(),
                "{ok:?}"
            );
        }
    }

    #[test]
    fn validate_refuses_everything_else() {
        for (bad, word) in [
            (cfg(-1.0, 0, 1.0), "temperature"),
            (cfg(-0.0 - f32::MIN_POSITIVE, 0, 1.0), "temperature"),
            (cfg(f32::NAN, 0, 1.0), "temperature"),
            (cfg(f32::INFINITY, 0, 1.0), "temperature"),
            (cfg(1e-45, 0, 1.0), "too small"),
            (cfg(1.0, 0, 0.0), "top_p"),
            (cfg(1.0, 0, -0.5), "top_p"),
            (cfg(1.0, 0, 1.0 + f32::EPSILON), "top_p"),
            (cfg(1.0, 0, f32::NAN), "top_p"),
        ] {
            let e = bad.validate().unwrap_err();
            assert!(
                matches!(&e, Error::InvalidInput(m) if m.contains(word)),
                "{bad:?}: {e}"
            );
            // Params of refused settings are still safe to run: greedy, finite.
            let p = bad.params(1, 4);
            assert!(p.logit_scale.is_finite(), "{bad:?}");
        }
    }
}
