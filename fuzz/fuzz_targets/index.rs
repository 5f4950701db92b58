//! `cargo +nightly fuzz run index`: see [`mamba_wgpu_fuzz::index`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mamba_wgpu_fuzz::index(data));
