//! `cargo +nightly fuzz run gguf_tokenizer`: see [`mamba_wgpu_fuzz::gguf_tokenizer`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mamba_wgpu_fuzz::gguf_tokenizer(data));
