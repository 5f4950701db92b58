//! One full forward over given token ids, and optionally greedy generation, written to a
//! safetensors file: `logits` (f32 [len, vocab]) and `greedy` (i64 [N]).
//!
//! ```text
//! cargo run --release --example logits -- --model DIR|FILE.gguf --ids 1,2,3 --out FILE [--greedy N]
//! ```
//! `--model` takes a checkpoint folder or a GGUF file (llama.cpp's `mamba`/`mamba2`, F32, F16,
//! BF16, Q8_0 or Q4_0; a Mamba-2 GGUF runs without the time_step_limit clamp, which GGUF cannot
//! store).
//! The greedy tokens are a prefill and then N-1 cached decode steps, never stopping at an
//! end-of-sequence token.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use mamba_wgpu::{GpuContext, Model, Sampling, SessionOptions};
use safetensors::tensor::{Dtype, TensorView};

#[derive(Parser)]
struct Args {
    /// Checkpoint folder (config.json + safetensors) or a `.gguf` file.
    #[arg(long)]
    model: PathBuf,
    /// Comma-separated token ids.
    #[arg(long, value_delimiter = ',', required = true)]
    ids: Vec<u32>,
    /// Output safetensors file.
    #[arg(long)]
    out: PathBuf,
    /// Also generate this many tokens greedily.
    #[arg(long)]
    greedy: Option<usize>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let ctx = Arc::new(GpuContext::new()?);
    let model = Model::load(ctx, &args.model)?;
    let vocab = model.vocab();
    let ids = &args.ids[..];

    let mut session = model.session(&SessionOptions {
        all_logits: true,
        ..Default::default()
    })?;
    let logits = session.logits(&[ids])?;
    let logit_bytes: Vec<u8> = bytemuck::cast_slice(&logits).to_vec();
    let mut tensors = vec![(
        "logits".to_string(),
        TensorView::new(Dtype::F32, vec![ids.len(), vocab], &logit_bytes)?,
    )];

    let greedy_bytes: Vec<u8>;
    if let Some(n) = args.greedy.filter(|&n| n > 0) {
        let mut s = model.session(&SessionOptions {
            sampling: Sampling::default(),
            ..Default::default()
        })?;
        let mut out = vec![s.prefill(&[ids])?[0] as i64];
        while out.len() < n {
            out.push(s.decode()?[0] as i64);
        }
        greedy_bytes = bytemuck::cast_slice(&out).to_vec();
        tensors.push((
            "greedy".to_string(),
            TensorView::new(Dtype::I64, vec![n], &greedy_bytes)?,
        ));
        eprintln!("greedy: {out:?}");
    }
    safetensors::serialize_to_file(tensors, None, &args.out)?;
    eprintln!(
        "wrote {} ({} positions × {vocab} logits)",
        args.out.display(),
        ids.len()
    );
    Ok(())
}
