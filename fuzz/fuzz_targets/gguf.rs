//! `cargo +nightly fuzz run gguf`: see [`mamba_wgpu_fuzz::gguf`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mamba_wgpu_fuzz::gguf(data));
