//! Shared test support: one device per test binary, upload/readback helpers, seeded data.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use mamba_wgpu::GpuContext;

pub mod fixtures;

/// The test binary's one device. Fails loudly when there is no adapter: CI installs lavapipe,
/// so a silent skip would hide a broken setup.
pub fn ctx() -> &'static GpuContext {
    shared()
}

/// The same device as an `Arc`, for models.
pub fn shared() -> &'static Arc<GpuContext> {
    static CTX: OnceLock<Arc<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| {
        Arc::new(GpuContext::new().unwrap_or_else(|e| {
            panic!("no GPU device for the tests ({e}); on a machine without a GPU install Mesa's lavapipe: apt-get install -y mesa-vulkan-drivers")
        }))
    })
}

/// A second context on the same kind of adapter that runs the kernels chosen for GPUs
/// (`ContextOptions::cpu_paths = Some(false)`: buffer weights, the parallel Mamba-1 scan,
/// Mamba-2's chunked SSD), so that CI's CPU adapter checks those paths against the fixtures
/// too.
pub fn gpu_paths() -> &'static Arc<GpuContext> {
    static CTX: OnceLock<Arc<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| {
        let options = mamba_wgpu::ContextOptions {
            cpu_paths: Some(false),
            ..Default::default()
        };
        Arc::new(GpuContext::with_options(&options).unwrap_or_else(|e| {
            panic!("no GPU device for the tests ({e}); on a machine without a GPU install Mesa's lavapipe: apt-get install -y mesa-vulkan-drivers")
        }))
    })
}

/// A storage buffer holding `data`.
pub fn upload<T: bytemuck::Pod>(data: &[T]) -> wgpu::Buffer {
    ctx()
        .storage_buffer_init("test.upload", data)
        .expect("upload")
}

/// A zeroed storage buffer of `len` elements.
pub fn zeros(len: usize) -> wgpu::Buffer {
    ctx().storage_buffer("test.zeros", len).expect("zeros")
}

/// Reads `len` elements back.
pub fn read<T: bytemuck::Pod>(buf: &wgpu::Buffer, len: usize) -> Vec<T> {
    ctx().read_buffer(buf, 0, len).expect("readback")
}

/// Seeded uniform values in [lo, hi) (xorshift; no dependency, same on every machine).
pub fn rand_vec(seed: u64, len: usize, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 40) as f32 / (1u64 << 24) as f32;
            lo + (hi - lo) * u
        })
        .collect()
}

/// Asserts `got` is within `atol + rtol·|want|` of `want` elementwise, and finite.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0usize, 0.0f32);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(g.is_finite(), "{what}: element {i} is {g} (want {w})");
        let err = (g - w).abs();
        let tol = atol + rtol * w.abs();
        if err > tol && err - tol > worst.1 {
            worst = (i, err - tol);
        }
    }
    if worst.1 > 0.0 {
        let i = worst.0;
        panic!(
            "{what}: element {i} is {} but want {} (tolerance {atol} + {rtol}·|want|)",
            got[i], want[i]
        );
    }
}
