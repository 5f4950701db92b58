//! Plain-Rust CPU twins of every kernel: the math in f32, written for clarity, used by the
//! tests as the specification the shaders are checked against.

pub mod conv1d;
pub mod embedding;
pub mod gemv_q4_0;
pub mod gemv_q8_0;
pub mod matmul;
pub mod rmsnorm;
pub mod rmsnorm_gated;
pub mod sample;
pub mod selective_scan;
pub mod ssd;
pub mod ssd_step;

pub use rmsnorm::rmsnorm;
