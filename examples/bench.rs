//! End-to-end speed of prefill (pp) and decode (tg), like llama-bench, on a random-weight model
//! of a published model's exact dimensions built directly on the GPU (nothing to download), or
//! on a checkpoint folder.
//!
//! ```text
//! cargo run --release --example bench -- --preset mamba-130m [--prompt 512] [--gen 128] [--batch 1] [--json]
//! cargo run --release --example bench -- --model DIR
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use mamba_wgpu::{GpuContext, Model, Sampling, SessionOptions};

#[derive(Parser)]
struct Args {
    /// mamba-130m ... mamba-2.8b or mamba2-130m ... mamba2-2.7b (random weights).
    #[arg(long, default_value = "mamba-130m")]
    preset: String,
    /// A checkpoint folder instead of a preset.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Prompt tokens per sequence.
    #[arg(long, default_value_t = 512)]
    prompt: usize,
    /// Decoded tokens per sequence.
    #[arg(long, default_value_t = 128)]
    gen: usize,
    /// Sequences.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Weight storage (f32 only for now).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    if a.dtype != "f32" {
        return Err(format!("--dtype {} is not supported yet (f32)", a.dtype).into());
    }
    let ctx = Arc::new(GpuContext::new()?);
    let adapter = ctx.adapter_name();
    let t = Instant::now();
    let (model, name) = match &a.model {
        Some(dir) => (Model::load(ctx.clone(), dir)?, dir.display().to_string()),
        None => (Model::preset(ctx.clone(), &a.preset, 1)?, a.preset.clone()),
    };
    eprintln!(
        "{name}: built in {:.1} s on {adapter}",
        t.elapsed().as_secs_f64()
    );
    let vocab = model.vocab() as u32;
    let prompts: Vec<Vec<u32>> = (0..a.batch)
        .map(|b| {
            (0..a.prompt)
                .map(|i| ((i * 7919 + b * 104_729 + 13) as u32) % vocab)
                .collect()
        })
        .collect();
    let refs: Vec<&[u32]> = prompts.iter().map(|p| &p[..]).collect();
    let mut s = model.session(&SessionOptions {
        batch: a.batch,
        sampling: Sampling::default(),
        ..Default::default()
    })?;

    // Warm-up: drivers may compile pipelines at their first dispatch.
    let warm: Vec<&[u32]> = prompts.iter().map(|p| &p[..p.len().min(4)]).collect();
    s.prefill(&warm)?;
    s.decode()?;
    s.reset();

    let t = Instant::now();
    s.prefill(&refs)?;
    let pp_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..a.gen {
        s.decode()?;
    }
    let tg_s = t.elapsed().as_secs_f64();
    let pp = (a.prompt * a.batch) as f64 / pp_s;
    let tg = (a.gen * a.batch) as f64 / tg_s;
    // Weights streamed per decode step (every matrix once, lm_head included); states are small.
    let bytes = model.weight_bytes() as f64;
    let gbs = bytes * (a.gen as f64 / tg_s) / 1e9;
    println!("| model | dtype | batch | test | t/s |");
    println!("|---|---|---|---|---|");
    println!(
        "| {name} | {} | {} | pp{} | {pp:.2} |",
        a.dtype, a.batch, a.prompt
    );
    println!(
        "| {name} | {} | {} | tg{} | {tg:.2} |",
        a.dtype, a.batch, a.gen
    );
    println!(
        "dispatches per decode step: {}; weights read per decode step: {:.1} MB ({gbs:.2} GB/s); prefill chunk {} tokens",
        s.dispatches_per_token(),
        bytes / 1e6,
        s.chunk_tokens()
    );
    if a.json {
        println!(
            "{{\"preset\":\"{name}\",\"dtype\":\"{}\",\"prompt\":{},\"gen\":{},\"batch\":{},\"adapter\":{:?},\"pp_tokens_per_s\":{pp:.3},\"tg_tokens_per_s\":{tg:.3},\"dispatches_per_token\":{},\"weight_bytes_per_token\":{},\"weight_read_gb_s\":{gbs:.3}}}",
            a.dtype,
            a.prompt,
            a.gen,
            a.batch,
            adapter,
            s.dispatches_per_token(),
            model.weight_bytes()
        );
    }
    Ok(())
}
