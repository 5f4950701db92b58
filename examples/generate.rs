//! Streams generated text (or token ids when the model folder has no tokenizer.json) and ends
//! with prefill and decode speed.
//!
//! ```text
//! cargo run --release --example generate -- --model DIR (--prompt TEXT | --ids 1,2,3)
//!     [--max-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S]
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use mamba_wgpu::{GpuContext, Model, Sampling, SessionOptions};

/// The model the repository ships, used when --model is not given.
const DEFAULT_MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/mamba1/tiny_tied"
);

#[derive(Parser)]
struct Args {
    /// Checkpoint folder (config.json + safetensors [+ tokenizer.json]).
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: PathBuf,
    /// Prompt text (needs tokenizer.json in the model folder).
    #[arg(long, conflicts_with = "ids")]
    prompt: Option<String>,
    /// Prompt as comma-separated token ids.
    #[arg(long, value_delimiter = ',')]
    ids: Vec<u32>,
    /// Tokens to generate.
    #[arg(long, default_value_t = 32)]
    max_tokens: usize,
    /// Softmax temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Keep only the k most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    top_k: u32,
    /// Keep the most likely tokens up to this probability mass.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Keep going past the end-of-sequence token.
    #[arg(long)]
    ignore_eos: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let ctx = Arc::new(GpuContext::new()?);
    eprintln!("adapter: {}", ctx.adapter_name());
    let t_load = Instant::now();
    let model = Model::load(ctx, &args.model)?;
    eprintln!(
        "loaded {} in {:.2} s",
        args.model.display(),
        t_load.elapsed().as_secs_f64()
    );

    #[cfg(feature = "tokenizer")]
    let tokenizer = mamba_wgpu::tokenizer::Tokenizer::from_dir(&args.model)?;
    #[cfg(not(feature = "tokenizer"))]
    let tokenizer: Option<()> = None;

    let ids: Vec<u32> = match (&args.prompt, &tokenizer) {
        #[cfg(feature = "tokenizer")]
        (Some(text), Some(tok)) => tok.encode(text)?,
        (Some(_), _) => {
            return Err("--prompt needs a tokenizer.json in the model folder; use --ids".into())
        }
        (None, _) if !args.ids.is_empty() => args.ids.clone(),
        (None, _) => vec![1, 2, 3],
    };
    let sampling = Sampling {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
    };
    let mut session = model.session(&SessionOptions {
        sampling,
        ..Default::default()
    })?;

    let mut generated: Vec<u32> = Vec::new();
    let mut printed = 0usize;
    let mut stdout = std::io::stdout();
    let mut emit = |generated: &[u32]| -> Result<(), Box<dyn std::error::Error>> {
        #[cfg(feature = "tokenizer")]
        if let Some(tok) = &tokenizer {
            // Decode everything so far and print the new suffix: a token may complete a
            // multi-byte character only together with the next one.
            let text = tok.decode(generated)?;
            if text.len() > printed && text.is_char_boundary(printed) {
                write!(stdout, "{}", &text[printed..])?;
                printed = text.len();
            }
            stdout.flush()?;
            return Ok(());
        }
        let _ = &mut printed;
        write!(stdout, "{} ", generated[generated.len() - 1])?;
        stdout.flush()?;
        Ok(())
    };

    let t0 = Instant::now();
    let first = session.prefill(&[&ids])?[0];
    let prefill_s = t0.elapsed().as_secs_f64();
    generated.push(first);
    emit(&generated)?;
    let eos = if args.ignore_eos {
        None
    } else {
        model.eos_token_id()
    };
    let t1 = Instant::now();
    while generated.len() < args.max_tokens && Some(generated[generated.len() - 1]) != eos {
        let next = session.decode()?[0];
        generated.push(next);
        emit(&generated)?;
    }
    let decode_s = t1.elapsed().as_secs_f64();
    let decoded = generated.len() - 1;
    println!();
    eprintln!(
        "prefill: {} tokens in {:.3} s ({:.1} tokens/s); decode: {} tokens in {:.3} s ({:.1} tokens/s)",
        ids.len(),
        prefill_s,
        ids.len() as f64 / prefill_s,
        decoded,
        decode_s,
        if decoded > 0 { decoded as f64 / decode_s } else { 0.0 }
    );
    Ok(())
}
