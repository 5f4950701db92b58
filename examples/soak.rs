//! A soak run: one session decodes many tokens (a million by default) through the decode path,
//! checking every token's logits for NaN/Inf, sampling resident memory (VmRSS) and GPU memory
//! (wgpu's allocator report, or the bytes our own buffers hold where the backend has none)
//! along the way, and comparing the cached-state logits with a fresh chunked prefill.
//!
//! ```text
//! cargo run --release --example soak -- [--model DIR] [--tokens N] [--every K] [--window M]
//!     [--chunk C] [--seed S] [--max-drift D] [--max-rss-growth-mib G]
//! ```
//!
//! The comparison is over windows: the session is reset every M tokens, and at each window's
//! end the logits the decode path produced for its last token (from the state carried token by
//! token through all M) are compared with those of a second session that prefills the same M
//! tokens from scratch in chunks of C (the prefill kernels, chunk boundaries carrying the
//! state). A fresh prefill over the whole history would cost O(history) per checkpoint; over a
//! window it costs O(M). The drift reported is max|decode - prefill| / max|prefill| over the
//! window's last logits, the largest over all windows.
//!
//! Tokens are sampled on the CPU from each step's logits (temperature 1, seeded), so the
//! history is varied rather than a greedy loop. Prints a line every K tokens and a JSON summary
//! last; exits with an error if a logit is not finite, the drift passes --max-drift, or
//! resident memory grew by more than --max-rss-growth-mib between the first sample and the end.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use mamba_wgpu::{GpuContext, Model, SessionOptions};

const DEFAULT_MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/mamba1/tiny_tied"
);

#[derive(Parser)]
struct Args {
    /// Checkpoint folder.
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: PathBuf,
    /// Tokens to decode.
    #[arg(long, default_value_t = 1_000_000)]
    tokens: u64,
    /// Sample memory (and print a line) every this many tokens.
    #[arg(long, default_value_t = 10_000)]
    every: u64,
    /// Reset and compare against a fresh prefill every this many tokens.
    #[arg(long, default_value_t = 2048)]
    window: usize,
    /// Prefill chunk of the comparison session (smaller than the window, so it is chunked).
    #[arg(long, default_value_t = 100)]
    chunk: usize,
    /// Seed of the CPU sampler.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Largest drift (relative to the largest logit) accepted.
    #[arg(long, default_value_t = 1e-3)]
    max_drift: f32,
    /// Largest growth of resident memory accepted, MiB.
    #[arg(long, default_value_t = 64)]
    max_rss_growth_mib: u64,
}

/// Resident memory of this process, bytes (VmRSS in /proc/self/status; 0 where there is none).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// GPU memory: (allocations, bytes allocated, bytes reserved) from wgpu's allocator report.
fn gpu_memory(ctx: &GpuContext) -> Option<(usize, u64, u64)> {
    ctx.device().generate_allocator_report().map(|r| {
        (
            r.allocations.len(),
            r.total_allocated_bytes,
            r.total_reserved_bytes,
        )
    })
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

/// xorshift64*: the CPU sampler's random numbers.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A token drawn from softmax(logits).
    fn sample(&mut self, logits: &[f32]) -> u32 {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let w: Vec<f64> = logits.iter().map(|&l| f64::from(l - max).exp()).collect();
        let mut u = self.uniform() * w.iter().sum::<f64>();
        for (i, wi) in w.iter().enumerate() {
            u -= wi;
            if u <= 0.0 {
                return i as u32;
            }
        }
        (w.len() - 1) as u32
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    let ctx = Arc::new(GpuContext::new()?);
    let model = Model::load(ctx.clone(), &a.model)?;
    let vocab = model.vocab();
    let mut main = model.session(&SessionOptions::default())?;
    let mut fresh = model.session(&SessionOptions {
        all_logits: true,
        max_chunk_tokens: a.chunk,
        ..Default::default()
    })?;
    eprintln!(
        "soak: {} on {}, {} tokens, windows of {}, prefill chunks of {}",
        a.model.display(),
        ctx.adapter_name(),
        a.tokens,
        a.window,
        a.chunk
    );

    let mut rng = Rng(a.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut hist: Vec<u32> = Vec::with_capacity(a.window);
    let mut tok = rng.sample(&vec![0.0; vocab]);
    let (mut max_drift, mut windows, mut bad_logits) = (0.0f32, 0u64, 0u64);
    let mut min_control = f32::INFINITY;
    let rss0 = rss_bytes();
    let gpu0 = gpu_memory(&ctx);
    let (mut rss_first, mut rss_max) = (0u64, rss0);
    let mut gpu_last = gpu0;
    let start = Instant::now();
    for i in 1..=a.tokens {
        let logits = main.decode_logits(&[tok])?;
        hist.push(tok);
        if let Some(j) = logits.iter().position(|v| !v.is_finite()) {
            bad_logits += 1;
            eprintln!("token {i}: logit {j} is {}", logits[j]);
        }
        if hist.len() == a.window {
            fresh.reset();
            let all = fresh.logits(&[&hist])?;
            let want = &all[all.len() - vocab..];
            let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
            let diff = logits
                .iter()
                .zip(want)
                .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
            max_drift = max_drift.max(diff / scale);
            // Control: against the previous position's logits the difference must be large,
            // or the comparison could not see a wrong state.
            let prev = &all[all.len() - 2 * vocab..all.len() - vocab];
            let control = logits
                .iter()
                .zip(prev)
                .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
                / scale;
            min_control = min_control.min(control);
            windows += 1;
            main.reset();
            hist.clear();
        }
        tok = rng.sample(&logits);
        if i % a.every == 0 || i == a.tokens {
            let rss = rss_bytes();
            if rss_first == 0 {
                rss_first = rss;
            }
            rss_max = rss_max.max(rss);
            gpu_last = gpu_memory(&ctx);
            let secs = start.elapsed().as_secs_f64();
            let gpu = gpu_last.map_or("n/a".to_string(), |(n, b, r)| {
                format!("{n} allocations, {:.2}/{:.2} MiB", mib(b), mib(r))
            });
            eprintln!(
                "{i:>10} tokens  {:>8.1} tok/s  rss {:.1} MiB  gpu {gpu}  windows {windows}  max drift {max_drift:.2e} (control {min_control:.2e})  bad logits {bad_logits}",
                i as f64 / secs,
                mib(rss)
            );
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let rss_end = rss_bytes();
    let (g0, g1) = (gpu0.unwrap_or_default(), gpu_last.unwrap_or_default());
    println!(
        "{{\"model\":{:?},\"tokens\":{},\"seconds\":{secs:.1},\"tokens_per_s\":{:.1},\"window\":{},\"windows_compared\":{windows},\"max_drift\":{max_drift:e},\"min_control_diff\":{min_control:e},\"non_finite_logit_tokens\":{bad_logits},\"rss_start_mib\":{:.1},\"rss_first_sample_mib\":{:.1},\"rss_end_mib\":{:.1},\"rss_max_mib\":{:.1},\"gpu_allocations_start\":{},\"gpu_allocations_end\":{},\"gpu_allocated_start_mib\":{:.2},\"gpu_allocated_end_mib\":{:.2},\"gpu_reserved_start_mib\":{:.2},\"gpu_reserved_end_mib\":{:.2}}}",
        a.model.display().to_string(),
        a.tokens,
        a.tokens as f64 / secs,
        a.window,
        mib(rss0),
        mib(rss_first),
        mib(rss_end),
        mib(rss_max),
        g0.0,
        g1.0,
        mib(g0.1),
        mib(g1.1),
        mib(g0.2),
        mib(g1.2),
    );
    if bad_logits > 0 {
        return Err(format!("{bad_logits} tokens had non-finite logits").into());
    }
    if windows > 0 && min_control <= max_drift {
        return Err(format!(
            "the check cannot tell positions apart: control {min_control:e} ≤ drift {max_drift:e}"
        )
        .into());
    }
    if max_drift > a.max_drift {
        return Err(format!("drift {max_drift:e} is above {:e}", a.max_drift).into());
    }
    let growth = rss_end.saturating_sub(rss_first);
    if growth > a.max_rss_growth_mib << 20 {
        return Err(format!("resident memory grew by {:.1} MiB", mib(growth)).into());
    }
    Ok(())
}
