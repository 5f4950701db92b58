//! `cargo +nightly fuzz run config`: see [`mamba_wgpu_fuzz::config`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mamba_wgpu_fuzz::config(data));
