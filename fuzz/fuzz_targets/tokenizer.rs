//! `cargo +nightly fuzz run tokenizer`: see [`mamba_wgpu_fuzz::tokenizer`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mamba_wgpu_fuzz::tokenizer(data));
