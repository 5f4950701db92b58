//! The crate's one error type. Library code returns these and never panics on input.

use std::path::PathBuf;

/// Everything that can go wrong in mamba-wgpu.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No wgpu adapter could be found (on a machine without a GPU, install Mesa's lavapipe).
    #[error("no GPU adapter found ({0}); without a GPU install Mesa's lavapipe (Debian: mesa-vulkan-drivers)")]
    NoAdapter(String),
    /// The adapter refused to create a device.
    #[error("could not create a device: {0}")]
    RequestDevice(String),
    /// A feature the caller asked for is not present on the adapter.
    #[error("the adapter lacks the GPU feature {0}")]
    MissingFeature(&'static str),
    /// A buffer, binding or dispatch would exceed what the device allows.
    #[error("{what} needs {needed} but the device allows at most {limit}")]
    LimitExceeded {
        /// What was being allocated or dispatched.
        what: String,
        /// The size or count asked for.
        needed: u64,
        /// The device's limit.
        limit: u64,
    },
    /// Tensor shapes that do not fit together.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// Caller input that cannot be used (token id out of range, empty prompt, bad sampling settings).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A config.json that cannot be read as a supported model.
    #[error("bad config {}: {msg}", file.display())]
    Config {
        /// The config file.
        file: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// A checkpoint file that cannot be used, with the file and tensor named where known.
    #[error("bad checkpoint {}{}: {msg}", file.display(), tensor.as_ref().map(|t| format!(" (tensor {t})")).unwrap_or_default())]
    Checkpoint {
        /// The file that holds (or should hold) the tensor.
        file: PathBuf,
        /// The tensor, where the problem concerns one.
        tensor: Option<String>,
        /// What is wrong.
        msg: String,
    },
    /// An I/O error on a named file.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A validation or out-of-memory error reported by the GPU device.
    #[error("GPU error: {0}")]
    Gpu(String),
    /// The device was lost (driver reset, removed GPU, destroyed device).
    #[error("GPU device lost: {0}")]
    DeviceLost(String),
    /// A tokenizer that cannot be loaded or used.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

/// Shorthand for results carrying [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A checkpoint error about one tensor of one file.
    pub(crate) fn tensor(
        file: impl Into<PathBuf>,
        tensor: impl Into<String>,
        msg: impl Into<String>,
    ) -> Self {
        Error::Checkpoint {
            file: file.into(),
            tensor: Some(tensor.into()),
            msg: msg.into(),
        }
    }
}
