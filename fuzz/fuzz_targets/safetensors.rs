//! `cargo +nightly fuzz run safetensors`: see [`mamba_wgpu_fuzz::safetensors`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mamba_wgpu_fuzz::safetensors(data));
