//! # mamba-wgpu
//!
//! Portable GPU compute kernels for state space models (Mamba-1, Mamba-2) written in WGSL, and
//! a runtime on [`wgpu`] that compiles them once and records whole layer stacks into one
//! command encoder, keeping the recurrent state on the GPU between tokens. Runs on any
//! Vulkan, Metal or DX12 GPU, and on Mesa's lavapipe where there is none.
//!
//! Load a checkpoint folder (config.json + safetensors) or a `.gguf` file, open a session and
//! generate: one submit per token, only the chosen token ids come back.
//!
//! ```
//! use std::sync::Arc;
//! use mamba_wgpu::{GpuContext, LoadOptions, Model, Sampling, SessionOptions, WeightDtype};
//!
//! # fn main() -> mamba_wgpu::Result<()> {
//! // Or GpuContext::from_device(device, queue) with the wgpu device an application owns.
//! let ctx = Arc::new(GpuContext::new()?);
//! let dir = std::path::Path::new("tests/fixtures/mamba1/tiny_tied");
//! // f16 weight storage halves what each decode step streams; sums and states stay f32.
//! let options = LoadOptions { dtype: WeightDtype::F16, ..Default::default() };
//! let model = Model::load_with(ctx, dir, &options)?;
//! let sampling = Sampling { temperature: 0.8, top_k: 40, seed: 7, ..Default::default() };
//! let mut session = model.session(&SessionOptions { sampling, ..Default::default() })?;
//! let mut tokens = session.prefill(&[&[1, 2, 3]])?; // the first new token of each sequence
//! for _ in 0..8 {
//!     tokens.extend(session.decode()?);
//! }
//! assert_eq!(tokens.len(), 9);
//! assert!(tokens.iter().all(|&t| (t as usize) < model.vocab()));
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod bytes;
pub mod context;
pub mod error;
pub mod gguf;
pub mod kernels;
pub mod model;
pub mod profile;
pub mod reference;
pub mod tensor;
#[cfg(feature = "tokenizer")]
pub mod tokenizer;

pub use context::{ContextOptions, GpuContext, Readback};
pub use error::{Error, Result};
pub use model::{LoadOptions, Mamba1, Mamba2, Model, Sampling, Session, SessionOptions};
pub use tensor::{WeightDtype, WeightStorage};
