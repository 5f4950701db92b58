//! End-to-end speed of prefill (pp) and decode (tg), like llama-bench, on a random-weight model
//! of a published model's exact dimensions built directly on the GPU (nothing to download), or
//! on a checkpoint folder or a `.gguf` file.
//!
//! ```text
//! cargo run --release --example bench -- --preset mamba-130m [--prompt 512] [--gen 128] [--batch 1] [--json]
//! cargo run --release --example bench -- --model DIR|FILE.gguf
//! cargo run --release --example bench -- --preset mamba-130m --prompt 64 --gen 4 --profile [--trace trace.json]
//! ```
//!
//! It also measures the device's own copy and read bandwidth (`mamba_wgpu::profile`), the
//! limits a decode step's weight streaming is compared with. `--profile` times every dispatch
//! of one more prefill and one decode step and prints the time per kernel and per layer;
//! `--trace FILE` writes them as a Chrome trace (chrome://tracing, ui.perfetto.dev).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use mamba_wgpu::profile::{self, Bandwidth, ProfileMode};
use mamba_wgpu::{GpuContext, Model, Sampling, Session, SessionOptions};

#[derive(Parser)]
struct Args {
    /// mamba-130m ... mamba-2.8b or mamba2-130m ... mamba2-2.7b (random weights).
    #[arg(long, default_value = "mamba-130m")]
    preset: String,
    /// A checkpoint folder or a `.gguf` file instead of a preset.
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
    /// Weight storage of the big matrices: f32, f16, q8_0 or q4_0 (f16 halves the bytes each
    /// decode step streams, q8_0 and q4_0 leave 0.28 and 0.16 of them; sums, activations and
    /// states stay f32).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Where the big matrices live: auto (textures on CPU adapters such as lavapipe, storage
    /// buffers on GPUs), buffer or texture.
    #[arg(long, default_value = "auto")]
    storage: String,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
    /// Time every dispatch of one prefill and one decode step; print per kernel and per layer.
    #[arg(long)]
    profile: bool,
    /// Write the profiled prefill and decode step as a Chrome trace JSON (implies --profile).
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// MiB streamed by the copy and read bandwidth probes.
    #[arg(long, default_value_t = 64)]
    probe_mib: u64,
}

/// The device's copy, storage-read and texture-read bandwidth (one warm-up, then 5
/// repetitions in one submit).
fn probe(
    ctx: &GpuContext,
    mib: u64,
) -> mamba_wgpu::Result<(Bandwidth, Bandwidth, Bandwidth, Bandwidth)> {
    let bytes = mib << 20;
    let copy = profile::copy_bandwidth(ctx, bytes, 5)?;
    let read = profile::read_bandwidth(ctx, bytes, 5)?;
    let tex = profile::texture_read_bandwidth(ctx, bytes, 5)?;
    let how = |b: &Bandwidth| {
        if b.gpu_timed {
            "GPU timestamps"
        } else {
            "wall clock"
        }
    };
    eprintln!(
        "device copy bandwidth {:.2} GB/s (read + write of {} MiB, {}); read bandwidth {:.2} GB/s (stream_read of {} MiB, {})",
        copy.gb_s,
        copy.bytes >> 21,
        how(&copy),
        read.gb_s,
        read.bytes >> 20,
        how(&read)
    );
    eprintln!(
        "texture read bandwidth {:.2} GB/s (stream_read_tex of {} MiB, {})",
        tex.gb_s,
        tex.bytes >> 20,
        how(&tex)
    );
    let fma = profile::fma_rate(ctx, 512, 2000, 3)?;
    eprintln!(
        "register FMA rate {:.2} GFLOP/s (fma_probe, {})",
        fma.gb_s,
        how(&fma)
    );
    Ok((copy, read, tex, fma))
}

/// One profiled prefill of `prompts` and one profiled decode step from a fresh state: the time
/// per kernel and per layer, and the Chrome trace.
fn profile_run(
    s: &mut Session,
    prompts: &[&[u32]],
    trace: Option<&std::path::Path>,
) -> mamba_wgpu::Result<()> {
    s.reset();
    let (_, pp) = s.prefill_profiled(prompts, ProfileMode::Auto)?;
    let (_, tg) = s.decode_profiled(ProfileMode::Auto)?;
    println!("{}", pp.report());
    println!("{}", tg.report());
    if let Some(path) = trace {
        profile::write_chrome_trace(path, &[&pp, &tg])?;
        eprintln!("trace written to {}", path.display());
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    let load = mamba_wgpu::model::LoadOptions {
        dtype: a.dtype.parse()?,
        storage: a.storage.parse()?,
    };
    let ctx = Arc::new(GpuContext::new()?);
    let adapter = ctx.adapter_name();
    let t = Instant::now();
    let (model, name) = match &a.model {
        Some(dir) => (
            Model::load_with(ctx.clone(), dir, &load)?,
            dir.display().to_string(),
        ),
        None => (
            Model::preset_with(ctx.clone(), &a.preset, 1, &load)?,
            a.preset.clone(),
        ),
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
    let (copy_bw, read_bw, tex_bw, fma) = probe(&ctx, a.probe_mib)?;
    let best_read = read_bw.gb_s.max(tex_bw.gb_s);
    let pp = (a.prompt * a.batch) as f64 / pp_s;
    let tg = (a.gen * a.batch) as f64 / tg_s;
    // Bytes a decode step must read: every weight matrix once (lm_head included) and every
    // layer's recurrent state (19 MB for mamba2-130m, 7% of its f16 weights).
    let bytes = model.weight_bytes() as f64;
    let state_bytes = s.state_bytes() as f64;
    let gbs = (bytes + state_bytes) * (a.gen as f64 / tg_s) / 1e9;
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
        "dispatches per decode step: {}; read per decode step: {:.1} MB of weights and {:.1} MB of states ({gbs:.2} GB/s); prefill chunk {} tokens",
        s.dispatches_per_token(),
        bytes / 1e6,
        state_bytes / 1e6,
        s.chunk_tokens()
    );
    println!(
        "device limits: copy {:.2} GB/s, storage read {:.2} GB/s, texture read {:.2} GB/s; decode reads at {:.1}% of the best read bandwidth (bound {:.2} tok/s; weights alone {:.1}%)",
        copy_bw.gb_s,
        read_bw.gb_s,
        tex_bw.gb_s,
        100.0 * gbs / best_read,
        best_read * 1e9 / (bytes + state_bytes),
        100.0 * gbs * bytes / (bytes + state_bytes) / best_read
    );
    if a.profile || a.trace.is_some() {
        profile_run(&mut s, &refs, a.trace.as_deref())?;
    }
    if a.json {
        println!(
            "{{\"preset\":\"{name}\",\"dtype\":\"{}\",\"prompt\":{},\"gen\":{},\"batch\":{},\"adapter\":{:?},\"pp_tokens_per_s\":{pp:.3},\"tg_tokens_per_s\":{tg:.3},\"dispatches_per_token\":{},\"weight_bytes_per_token\":{},\"state_bytes_per_token\":{},\"read_gb_s\":{gbs:.3},\"copy_bandwidth_gb_s\":{:.3},\"read_bandwidth_gb_s\":{:.3},\"texture_read_bandwidth_gb_s\":{:.3},\"fma_gflop_s\":{:.3},\"storage\":\"{}\"}}",
            a.dtype,
            a.prompt,
            a.gen,
            a.batch,
            adapter,
            s.dispatches_per_token(),
            model.weight_bytes(),
            s.state_bytes(),
            copy_bw.gb_s,
            read_bw.gb_s,
            tex_bw.gb_s,
            fma.gb_s,
            a.storage
        );
    }
    Ok(())
}
