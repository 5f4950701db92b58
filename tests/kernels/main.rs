//! Every kernel against its CPU twin over awkward shapes. One test binary (one device).

#[path = "../common/mod.rs"]
mod common;

mod block_gemv;
mod conv1d;
mod embedding;
mod gemv_q4_0;
mod gemv_q8_0;
mod linear_tex;
mod matmul;
mod rmsnorm;
mod sample;
mod selective_scan;
mod ssd;
mod ssd_decode;
