//! # mamba-wgpu
//!
//! Portable GPU compute kernels for state space models (Mamba-1, Mamba-2) written in WGSL, and
//! a runtime on [`wgpu`] that compiles them once and records whole layer stacks into one
//! command encoder, keeping the recurrent state on the GPU between tokens. Runs on any
//! Vulkan, Metal or DX12 GPU, and on Mesa's lavapipe where there is none.
#![warn(missing_docs)]

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

pub use context::{ContextOptions, GpuContext};
pub use error::{Error, Result};
pub use model::{LoadOptions, Mamba1, Mamba2, Model, Sampling, Session, SessionOptions};
pub use tensor::{WeightDtype, WeightStorage};
