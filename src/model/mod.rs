//! Models: config parsing, checkpoint loading and the layer stacks, written against the
//! kernels and plans. [`Model`] picks the family from a checkpoint folder's config.

pub mod checkpoint;
pub mod config;
pub mod generate;
pub mod gguf;
#[macro_use]
pub(crate) mod lm;
pub mod mamba1;
pub mod mamba2;
pub(crate) mod plan;
pub mod weights;

use std::path::Path;
use std::sync::Arc;

use crate::context::GpuContext;
use crate::error::{Error, Result};
pub use crate::kernels::sample::SamplingConfig as Sampling;
pub use crate::tensor::{WeightDtype, WeightStorage};
pub use config::{Family, Mamba1Config, Mamba2Config};
pub use generate::{CancelToken, GenerateOptions, Generation, StopReason};
pub use lm::{Session, SessionOptions};
pub use mamba1::Mamba1;
pub use mamba2::Mamba2;

/// How a model's weights are put on the GPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Storage of the big matrices: the mixers' projections and lm_head (f32 by default).
    /// With [`WeightDtype::F16`] they are rounded to f16 on load (from f32, f16 or bf16
    /// checkpoints; a value beyond ±65504 is an error) and widened in the kernels, which sum
    /// in f32; activations, states, norms, conv and SSM parameters stay f32. The embedding
    /// table stays f32 (its gather reads f32), so a tied lm_head gets an f16 copy of it.
    pub dtype: WeightDtype,
    /// Where those matrices live: storage buffers, or 2-D textures on devices that read
    /// textures faster (CPU adapters such as lavapipe). [`WeightStorage::Auto`] (the default)
    /// decides per device; either way the same kernels' math runs and the same tests hold.
    pub storage: WeightStorage,
}

/// A loaded model of any supported family.
#[derive(Clone, Debug)]
pub enum Model {
    /// Mamba-1.
    Mamba1(Mamba1),
    /// Mamba-2.
    Mamba2(Mamba2),
}

impl Model {
    /// Loads a checkpoint folder, choosing the family from its config.json, or a `.gguf`
    /// file (see [`gguf`]), choosing it from `general.architecture` (f32 weights).
    ///
    /// ```
    /// # fn main() -> mamba_wgpu::Result<()> {
    /// use std::{path::Path, sync::Arc};
    /// use mamba_wgpu::{GpuContext, Model, SessionOptions};
    ///
    /// let ctx = Arc::new(GpuContext::new()?);
    /// // A GGUF file carries its own vocabulary, so it needs no tokenizer.json.
    /// let path = Path::new("tests/fixtures/gguf/mamba2-g1_small-Q8_0.gguf");
    /// let model = Model::load(ctx, path)?;
    /// let mut session = model.session(&SessionOptions::default())?;
    /// let next = session.prefill(&[&[1, 2, 3, 4]])?;
    /// assert_eq!(next.len(), 1);
    /// assert_eq!(model.eos_token_id(), Some(2));
    /// # Ok(())
    /// # }
    /// ```
    pub fn load(ctx: Arc<GpuContext>, dir: &Path) -> Result<Self> {
        Self::load_with(ctx, dir, &LoadOptions::default())
    }

    /// [`Model::load`] with options (weight storage).
    pub fn load_with(ctx: Arc<GpuContext>, dir: &Path, options: &LoadOptions) -> Result<Self> {
        if gguf::is_gguf(dir) {
            return gguf::load(ctx, dir, options);
        }
        if !dir.is_dir() {
            return Err(Error::Checkpoint {
                file: dir.to_path_buf(),
                tensor: None,
                msg: "not a checkpoint folder".into(),
            });
        }
        let cfg_path = dir.join("config.json");
        let v = config::read_json(&cfg_path)?;
        match config::family(&cfg_path, &v)? {
            Family::Mamba1 => Ok(Model::Mamba1(Mamba1::load_with(ctx, dir, options)?)),
            Family::Mamba2 => Ok(Model::Mamba2(Mamba2::load_with(ctx, dir, options)?)),
        }
    }

    /// [`Model::load_with`], reporting to `progress` after each tensor is read and uploaded
    /// (tensor name, tensors so far, values so far of the total), for a progress bar.
    pub fn load_with_progress(
        ctx: Arc<GpuContext>,
        path: &Path,
        options: &LoadOptions,
        progress: weights::ProgressFn<'_>,
    ) -> Result<Self> {
        if gguf::is_gguf(path) {
            let g = crate::gguf::Gguf::open(path)?;
            return gguf::from_gguf_with(ctx, &g, options, Some(progress));
        }
        if !path.is_dir() {
            return Err(Error::Checkpoint {
                file: path.to_path_buf(),
                tensor: None,
                msg: "not a checkpoint folder".into(),
            });
        }
        let cfg_path = path.join("config.json");
        let v = config::read_json(&cfg_path)?;
        let family = config::family(&cfg_path, &v)?;
        let ck = checkpoint::Checkpoint::open(path)?;
        match family {
            Family::Mamba1 => {
                let cfg = Mamba1Config::from_json(&cfg_path, &v)?;
                let src = weights::WithProgress::new(&ck, &Mamba1::tensor_shapes(&cfg), progress);
                Ok(Model::Mamba1(Mamba1::from_source_with(
                    ctx, cfg, &src, options,
                )?))
            }
            Family::Mamba2 => {
                let cfg = Mamba2Config::from_json(&cfg_path, &v)?;
                let src = weights::WithProgress::new(&ck, &Mamba2::tensor_shapes(&cfg), progress);
                Ok(Model::Mamba2(Mamba2::from_source_with(
                    ctx, cfg, &src, options,
                )?))
            }
        }
    }

    /// A random-weight model of a published checkpoint's dimensions (`mamba-130m` ...
    /// `mamba-2.8b`, `mamba2-130m` ... `mamba2-2.7b`), built directly on the GPU.
    pub fn preset(ctx: Arc<GpuContext>, name: &str, seed: u64) -> Result<Self> {
        Self::preset_with(ctx, name, seed, &LoadOptions::default())
    }

    /// [`Model::preset`] with options (weight storage).
    pub fn preset_with(
        ctx: Arc<GpuContext>,
        name: &str,
        seed: u64,
        options: &LoadOptions,
    ) -> Result<Self> {
        if let Some(cfg) = Mamba1Config::preset(name) {
            return Ok(Model::Mamba1(Mamba1::random_with(ctx, cfg, seed, options)?));
        }
        if let Some(cfg) = Mamba2Config::preset(name) {
            return Ok(Model::Mamba2(Mamba2::random_with(ctx, cfg, seed, options)?));
        }
        Err(Error::InvalidInput(format!("unknown preset `{name}`")))
    }

    /// Bytes of the weight matrices on the GPU (what one decode step streams).
    pub fn weight_bytes(&self) -> u64 {
        match self {
            Model::Mamba1(m) => m.weight_bytes(),
            Model::Mamba2(m) => m.weight_bytes(),
        }
    }

    /// Starts a generation session.
    pub fn session(&self, options: &SessionOptions) -> Result<Session> {
        match self {
            Model::Mamba1(m) => m.session(options),
            Model::Mamba2(m) => m.session(options),
        }
    }

    /// Logits per token (the embedding's rows).
    pub fn vocab(&self) -> usize {
        match self {
            Model::Mamba1(m) => m.vocab(),
            Model::Mamba2(m) => m.vocab(),
        }
    }

    /// The end-of-sequence token the config names, if any.
    pub fn eos_token_id(&self) -> Option<u32> {
        match self {
            Model::Mamba1(m) => m.config().eos_token_id,
            Model::Mamba2(m) => m.config().eos_token_id,
        }
    }
}
