//! Streams generated text (or token ids when the model folder has no tokenizer.json) and ends
//! with prefill and decode speed. With no arguments it runs the English model the repository
//! ships (models/tiny-mamba-en, trained on Jane Austen's novels) on a default prompt.
//!
//! ```text
//! cargo run --release --example generate -- [--model DIR|FILE.gguf] [--prompt TEXT | --ids 1,2,3]
//!     [--max-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S] [--ignore-eos]
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use mamba_wgpu::{GpuContext, Model, Sampling, SessionOptions};

/// The model the repository ships, used when --model is not given.
const DEFAULT_MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/tiny-mamba-en");

/// The prompt when neither --prompt nor --ids is given (and the model has a tokenizer).
#[cfg(feature = "tokenizer")]
const DEFAULT_PROMPT: &str = "It is a truth universally acknowledged";

/// Token ids used when the model has no tokenizer and no --ids are given.
const DEFAULT_IDS: &[u32] = &[1, 2, 3];

#[derive(Parser)]
struct Args {
    /// Checkpoint folder (config.json + safetensors [+ tokenizer.json]) or a .gguf file.
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: PathBuf,
    /// Prompt text (needs tokenizer.json in the model folder) [default: "It is a truth
    /// universally acknowledged"].
    #[arg(long, conflicts_with = "ids")]
    prompt: Option<String>,
    /// Prompt as comma-separated token ids.
    #[arg(long, value_delimiter = ',')]
    ids: Vec<u32>,
    /// Tokens to generate (the first comes from the prefill).
    #[arg(long, default_value_t = 100)]
    max_tokens: usize,
    /// Softmax temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Keep only the k most likely tokens (0: all).
    #[arg(long, default_value_t = 40)]
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

/// Writes the text of the tokens so far as it grows. Byte-level BPE tokens need not end on a
/// UTF-8 character boundary, and the tokenizer decodes an incomplete character as U+FFFD, so
/// the whole id list is decoded each time and a trailing U+FFFD is held back until the next
/// token completes (or `finish` gives up on) the character.
#[cfg_attr(not(feature = "tokenizer"), allow(dead_code))]
struct TextStream {
    printed: usize,
}

impl TextStream {
    #[cfg(feature = "tokenizer")]
    fn push(
        &mut self,
        out: &mut impl Write,
        tok: &mamba_wgpu::tokenizer::Tokenizer,
        ids: &[u32],
        finish: bool,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let text = tok.decode(ids)?;
        let ready = if finish {
            &text[..]
        } else {
            text.trim_end_matches('\u{FFFD}')
        };
        if ready.len() > self.printed && ready.is_char_boundary(self.printed) {
            write!(out, "{}", &ready[self.printed..])?;
            self.printed = ready.len();
        }
        out.flush()?;
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let ctx = Arc::new(GpuContext::new()?);
    eprintln!("adapter: {}", ctx.adapter_name());
    let t_load = Instant::now();
    // A progress bar over the values read (memory-mapped files, one tensor at a time).
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("loading {bar:30} {percent:>3}% {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let report = |p: &mamba_wgpu::model::weights::LoadProgress<'_>| {
        bar.set_length(p.values_total);
        bar.set_position(p.values);
        bar.set_message(p.tensor.to_string());
    };
    let model = Model::load_with_progress(ctx, &args.model, &Default::default(), &report)?;
    bar.finish_and_clear();
    eprintln!(
        "loaded {} in {:.2} s: {:.1} MB of weight matrices (f32, storage chosen for the adapter)",
        args.model.display(),
        t_load.elapsed().as_secs_f64(),
        model.weight_bytes() as f64 / 1e6
    );

    #[cfg(feature = "tokenizer")]
    // tokenizer.json in a folder, or the vocabulary inside a .gguf file.
    let tokenizer = mamba_wgpu::tokenizer::Tokenizer::for_model(&args.model)?;
    #[cfg(not(feature = "tokenizer"))]
    let tokenizer: Option<()> = None;

    let mut stdout = std::io::stdout();
    let ids: Vec<u32> = match (&args.prompt, &tokenizer) {
        #[cfg(feature = "tokenizer")]
        (Some(text), Some(tok)) => tok.encode(text)?,
        (Some(_), _) => {
            return Err(
                "--prompt needs a tokenizer (tokenizer.json in the folder, or a .gguf with a vocabulary); use --ids"
                    .into(),
            )
        }
        (None, _) if !args.ids.is_empty() => args.ids.clone(),
        #[cfg(feature = "tokenizer")]
        (None, Some(tok)) => tok.encode(DEFAULT_PROMPT)?,
        (None, _) => DEFAULT_IDS.to_vec(),
    };
    if ids.is_empty() {
        return Err("the prompt is empty (no tokens)".into());
    }
    // Echo the prompt so the continuation reads on from it.
    #[cfg(feature = "tokenizer")]
    if let Some(tok) = &tokenizer {
        write!(stdout, "{}", tok.decode(&ids)?)?;
    }
    if tokenizer.is_none() {
        let shown: Vec<String> = ids.iter().map(u32::to_string).collect();
        write!(stdout, "[{}] ", shown.join(" "))?;
    }
    stdout.flush()?;

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
    let mut stream = TextStream { printed: 0 };
    let mut emit = |generated: &[u32], finish: bool| -> Result<(), Box<dyn std::error::Error>> {
        #[cfg(feature = "tokenizer")]
        if let Some(tok) = &tokenizer {
            return stream.push(&mut stdout, tok, generated, finish);
        }
        let _ = &mut stream;
        if !finish {
            write!(stdout, "{} ", generated[generated.len() - 1])?;
            stdout.flush()?;
        }
        Ok(())
    };

    let t0 = Instant::now();
    let first = session.prefill(&[&ids])?[0];
    let prefill_s = t0.elapsed().as_secs_f64();
    generated.push(first);
    emit(&generated, false)?;
    let eos = if args.ignore_eos {
        None
    } else {
        model.eos_token_id()
    };
    let t1 = Instant::now();
    while generated.len() < args.max_tokens && Some(generated[generated.len() - 1]) != eos {
        let next = session.decode()?[0];
        generated.push(next);
        emit(&generated, false)?;
    }
    let decode_s = t1.elapsed().as_secs_f64();
    emit(&generated, true)?;
    let decoded = generated.len() - 1;
    println!();
    eprintln!(
        "prefill: {} tokens in {:.3} s ({:.1} tokens/s); decode: {} tokens in {:.3} s ({:.1} tokens/s)",
        ids.len(),
        prefill_s,
        ids.len() as f64 / prefill_s,
        decoded,
        decode_s,
        if decoded > 0 {
            decoded as f64 / decode_s
        } else {
            0.0
        }
    );
    Ok(())
}
