//! The table of bad inputs: every row names an input, what is wrong with it, the [`Error`]
//! variant it must produce and a word the message must contain. Each row starts from a
//! committed fixture (copied to a temporary folder) and breaks one thing. A row passes only
//! when the call returns that error: a panic, a hang, a success or another variant fails it.
//! All rows run (and all failures are reported) before the test fails.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use common::shared;
use mamba_wgpu::model::checkpoint::Checkpoint;
use mamba_wgpu::tokenizer::Tokenizer;
use mamba_wgpu::{
    ContextOptions, Error, GpuContext, Mamba1, Model, Result, Sampling, Session, SessionOptions,
};
use serde_json::{json, Value};

fn fixture(family: &str, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(family)
        .join(name)
}

/// A temporary copy of a fixture folder.
fn copy(family: &str, name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture(family, name)).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    dir
}

fn load(dir: &Path) -> Result<()> {
    Model::load(shared().clone(), dir).map(drop)
}

/// Loads a copy of `family/name` after `edit` changed its config.json.
fn load_with_config(family: &str, name: &str, edit: impl FnOnce(&mut Value)) -> Result<()> {
    let d = copy(family, name);
    let path = d.path().join("config.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, v.to_string()).unwrap();
    load(d.path())
}

/// Loads a copy of `family/name` after `edit` changed the bytes of `file`.
fn load_with_file(
    family: &str,
    name: &str,
    file: &str,
    edit: impl FnOnce(&mut Vec<u8>),
) -> Result<()> {
    let d = copy(family, name);
    let path = d.path().join(file);
    let mut bytes = std::fs::read(&path).unwrap();
    edit(&mut bytes);
    std::fs::write(&path, bytes).unwrap();
    load(d.path())
}

/// Splits a safetensors file into its header JSON and its data.
fn split(bytes: &[u8]) -> (serde_json::Map<String, Value>, Vec<u8>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let hdr = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (hdr, bytes[8 + n..].to_vec())
}

fn join(hdr: &serde_json::Map<String, Value>, data: &[u8]) -> Vec<u8> {
    let h = serde_json::to_vec(hdr).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    out
}

/// Loads tiny_tied after `edit` changed the header of model.safetensors (data kept as is).
fn load_with_header(edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Result<()> {
    load_with_file("mamba1", "tiny_tied", "model.safetensors", |b| {
        let (mut hdr, data) = split(b);
        edit(&mut hdr);
        *b = join(&hdr, &data);
    })
}

/// The tensor whose data ends the file (the largest end offset).
fn last_tensor(hdr: &serde_json::Map<String, Value>) -> String {
    hdr.iter()
        .filter(|(k, _)| *k != "__metadata__")
        .max_by_key(|(_, v)| v["data_offsets"][1].as_u64().unwrap())
        .unwrap()
        .0
        .clone()
}

/// Loads `family/name` after `edit` changed the values of one tensor (read and written as
/// f32; the fixture stores it as F32).
fn load_with_values(
    family: &str,
    name: &str,
    tensor: &str,
    edit: impl FnOnce(&mut [f32]),
) -> Result<()> {
    load_with_file(family, name, "model.safetensors", |b| {
        let (hdr, mut data) = split(b);
        let t = &hdr[tensor];
        assert_eq!(t["dtype"], "F32", "{tensor}");
        let (s, e) = (
            t["data_offsets"][0].as_u64().unwrap() as usize,
            t["data_offsets"][1].as_u64().unwrap() as usize,
        );
        let mut v: Vec<f32> = data[s..e]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        edit(&mut v);
        for (i, x) in v.iter().enumerate() {
            data[s + 4 * i..s + 4 * i + 4].copy_from_slice(&x.to_le_bytes());
        }
        *b = join(&hdr, &data);
    })
}

/// Removes a tensor from tiny_tied's model.safetensors (the data after it moves up).
fn load_without(tensor: &str) -> Result<()> {
    load_with_file("mamba1", "tiny_tied", "model.safetensors", |b| {
        let (mut hdr, data) = split(b);
        let mut kept: Vec<(String, Value)> = hdr
            .iter()
            .filter(|(k, _)| *k != tensor && *k != "__metadata__")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        kept.sort_by_key(|(_, v)| v["data_offsets"][0].as_u64().unwrap());
        let mut out = Vec::new();
        hdr.clear();
        for (k, mut v) in kept {
            let (s, e) = (
                v["data_offsets"][0].as_u64().unwrap() as usize,
                v["data_offsets"][1].as_u64().unwrap() as usize,
            );
            v["data_offsets"] = json!([out.len(), out.len() + e - s]);
            out.extend_from_slice(&data[s..e]);
            hdr.insert(k, v);
        }
        *b = join(&hdr, &out);
    })
}

/// Loads the sharded fixture after `edit` changed its index.
fn load_with_index(edit: impl FnOnce(&mut Value)) -> Result<()> {
    load_with_config_file("sharded", "model.safetensors.index.json", edit)
}

fn load_with_config_file(name: &str, file: &str, edit: impl FnOnce(&mut Value)) -> Result<()> {
    load_with_file("mamba1", name, file, |b| {
        let mut v: Value = serde_json::from_slice(b).unwrap();
        edit(&mut v);
        *b = v.to_string().into_bytes();
    })
}

/// A file of `len` bytes that takes no disk space (a hole), to test size caps cheaply.
fn sparse(path: &Path, len: u64) {
    std::fs::File::create(path).unwrap().set_len(len).unwrap();
}

/// tiny_tied, loaded once for the rows about sessions.
fn model() -> &'static Mamba1 {
    static M: OnceLock<Mamba1> = OnceLock::new();
    M.get_or_init(|| Mamba1::load(shared().clone(), &fixture("mamba1", "tiny_tied")).unwrap())
}

fn session() -> Session {
    model().session(&SessionOptions::default()).unwrap()
}

fn session_with(o: SessionOptions) -> Result<()> {
    model().session(&o).map(drop)
}

fn sampling(temperature: f32, top_p: f32) -> Sampling {
    Sampling {
        temperature,
        top_p,
        ..Default::default()
    }
}

/// Both places sampling settings enter: a new session and `set_sampling` on a live one.
fn bad_sampling(s: Sampling) -> Result<()> {
    let e = session_with(SessionOptions {
        sampling: s.clone(),
        ..Default::default()
    });
    let e2 = session().set_sampling(s);
    match (e, e2) {
        (Err(a), Err(b)) if a.to_string() == b.to_string() => Err(a),
        (Err(_), Ok(())) => panic!("set_sampling accepted what a new session refused"),
        (a, _) => a,
    }
}

fn tokenizer_file(bytes: &[u8]) -> Result<()> {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("tokenizer.json"), bytes).unwrap();
    Tokenizer::from_dir(d.path()).map(drop)
}

/// One row of the table.
struct Row {
    /// The input (a file of a fixture, or a call).
    input: &'static str,
    /// What is wrong with it.
    wrong: &'static str,
    /// The `Error` variant it must produce.
    variant: &'static str,
    /// A word the message must contain.
    word: &'static str,
    /// Builds the input and makes the call that must fail.
    run: fn() -> Result<()>,
}

const fn row(
    input: &'static str,
    wrong: &'static str,
    variant: &'static str,
    word: &'static str,
    run: fn() -> Result<()>,
) -> Row {
    Row {
        input,
        wrong,
        variant,
        word,
        run,
    }
}

#[rustfmt::skip]
const ROWS: &[Row] = &[
    // Folders and config.json.
    row("checkpoint folder", "does not exist", "Checkpoint", "/nonexistent/model",
        || load(Path::new("/nonexistent/model"))),
    row("config.json", "missing", "Io", "config.json", || {
        let d = copy("mamba1", "tiny_tied");
        std::fs::remove_file(d.path().join("config.json")).unwrap();
        load(d.path())
    }),
    row("config.json", "not JSON", "Config", "JSON",
        || load_with_file("mamba1", "tiny_tied", "config.json", |b| *b = b"{ not json".to_vec())),
    row("config.json", "a JSON array, not an object", "Config", "family",
        || load_with_file("mamba1", "tiny_tied", "config.json", |b| *b = b"[1, 2]".to_vec())),
    row("config.json", "2 GiB long (a sparse file)", "Config", "bytes", || {
        let d = copy("mamba1", "tiny_tied");
        sparse(&d.path().join("config.json"), 2 << 30);
        load(d.path())
    }),
    row("config.json", "no hidden_size", "Config", "hidden_size",
        || load_with_config("mamba1", "tiny_tied", |v| { v.as_object_mut().unwrap().remove("hidden_size"); })),
    row("config.json", "state_size negative", "Config", "state_size",
        || load_with_config("mamba1", "tiny_tied", |v| v["state_size"] = json!(-3))),
    row("config.json", "model_type of another architecture", "Config", "llama",
        || load_with_config("mamba1", "tiny_tied", |v| v["model_type"] = json!("llama"))),
    row("config.json", "activation other than silu", "Config", "silu",
        || load_with_config("mamba1", "tiny_tied", |v| v["hidden_act"] = json!("gelu"))),
    row("config.json", "conv kernel of 9 taps", "Config", "conv kernel",
        || load_with_config("mamba1", "tiny_tied", |v| v["conv_kernel"] = json!(9))),
    row("config.json", "in_proj of 2^52 elements", "Config", "in_proj",
        || load_with_config("mamba1", "tiny_tied", |v| {
            v["hidden_size"] = json!(1u64 << 31);
            v["intermediate_size"] = json!(1u64 << 20);
        })),
    row("config.json", "inner width 2^32 (expand 2^31)", "Config", "d_inner",
        || load_with_config("mamba1", "state_spaces", |v| v["ssm_cfg"]["expand"] = json!(1u64 << 31))),
    row("config.json", "negative layer_norm_epsilon", "Config", "layer_norm_epsilon",
        || load_with_config("mamba1", "tiny_tied", |v| v["layer_norm_epsilon"] = json!(-1e-5))),
    row("config.json (state-spaces)", "rms_norm false (LayerNorm)", "Config", "rms_norm",
        || load_with_config("mamba1", "state_spaces", |v| v["rms_norm"] = json!(false))),
    row("config.json (Mamba-2)", "num_heads × head_dim ≠ expand · hidden_size", "Config", "num_heads 5",
        || load_with_config("mamba2", "groups2_hd12", |v| v["num_heads"] = json!(5))),
    row("config.json (Mamba-2)", "n_groups does not divide num_heads", "Config", "n_groups 4",
        || load_with_config("mamba2", "groups2_hd12", |v| v["n_groups"] = json!(4))),
    row("config.json (Mamba-2)", "time_step_limit reversed", "Config", "time_step_limit",
        || load_with_config("mamba2", "groups2_hd12", |v| v["time_step_limit"] = json!([0.5, 0.1]))),
    row("config.json (Mamba-2)", "time_step_limit[1] a word", "Config", "time_step_limit[1]",
        || load_with_config("mamba2", "groups2_hd12", |v| v["time_step_limit"] = json!([0.0, "lots"]))),
    row("config.json (Mamba-2)", "conv_dim past 2^31 (state_size 2^31)", "Config", "conv_dim",
        || load_with_config("mamba2", "groups2_hd12", |v| v["state_size"] = json!(1u64 << 31))),
    row("config.json (Mamba-2, state-spaces)", "headdim 24 does not divide d_inner", "Config", "head_dim 24",
        || load_with_config("mamba2", "state_spaces", |v| v["ssm_cfg"]["headdim"] = json!(24))),
    // Configs that disagree with the weights.
    row("config.json vs weights", "hidden_size 48, weights of 32", "Checkpoint", "shape",
        || load_with_config("mamba1", "tiny_tied", |v| v["hidden_size"] = json!(48))),
    row("config.json vs weights", "vocab_size 100, embedding of 128 rows", "Checkpoint", "vocab_size",
        || load_with_config("mamba1", "tiny_tied", |v| v["vocab_size"] = json!(100))),
    row("config.json vs weights", "4 layers, weights of 3", "Checkpoint", "backbone.layers.3",
        || load_with_config("mamba1", "tiny_tied", |v| v["num_hidden_layers"] = json!(4))),
    row("config.json vs weights", "untied, no lm_head.weight", "Checkpoint", "lm_head.weight",
        || load_with_config("mamba1", "tiny_tied", |v| v["tie_word_embeddings"] = json!(false))),
    row("config.json vs weights (Mamba-2)", "n_groups 2, in_proj for 1", "Checkpoint", "in_proj.weight",
        || load_with_config("mamba2", "g1_small", |v| v["n_groups"] = json!(2))),
    // model.safetensors.
    row("model.safetensors", "missing", "Checkpoint", "model.safetensors", || {
        let d = copy("mamba1", "tiny_tied");
        std::fs::remove_file(d.path().join("model.safetensors")).unwrap();
        load(d.path())
    }),
    row("model.safetensors", "empty file", "Checkpoint", "header too small",
        || load_with_file("mamba1", "tiny_tied", "model.safetensors", |b| b.clear())),
    row("model.safetensors", "5 bytes", "Checkpoint", "header too small",
        || load_with_file("mamba1", "tiny_tied", "model.safetensors", |b| b.truncate(5))),
    row("model.safetensors", "truncated by 100 bytes", "Checkpoint", "not fully covered",
        || load_with_file("mamba1", "tiny_tied", "model.safetensors", |b| b.truncate(b.len() - 100))),
    row("model.safetensors", "header length 2^63 (past the file)", "Checkpoint", "header too large",
        || load_with_file("mamba1", "tiny_tied", "model.safetensors", |b| b[..8].copy_from_slice(&(1u64 << 63).to_le_bytes()))),
    row("model.safetensors", "header length one past the file", "Checkpoint", "header length",
        || load_with_file("mamba1", "tiny_tied", "model.safetensors", |b| {
            let n = b.len() as u64 - 7;
            b[..8].copy_from_slice(&n.to_le_bytes());
        })),
    row("model.safetensors", "header JSON garbage", "Checkpoint", "JSON",
        || load_with_file("mamba1", "tiny_tied", "model.safetensors", |b| b[8] = b'#')),
    row("model.safetensors", "header not UTF-8", "Checkpoint", "UTF-8",
        || load_with_file("mamba1", "tiny_tied", "model.safetensors", |b| b[9] = 0xff)),
    row("model.safetensors", "a 10^15-element tensor (offsets to match)", "Checkpoint", "not fully covered",
        || load_with_header(|h| {
            let t = last_tensor(h);
            let s = h[&t]["data_offsets"][0].as_u64().unwrap();
            h[&t]["shape"] = json!([1_000_000_000_000_000u64]);
            h[&t]["data_offsets"] = json!([s, s + 4_000_000_000_000_000]);
        })),
    row("model.safetensors", "shape whose element count overflows", "Checkpoint", "overflow",
        || load_with_header(|h| {
            let t = last_tensor(h);
            h[&t]["shape"] = json!([1u64 << 40, 1u64 << 40]);
        })),
    row("model.safetensors", "shape disagreeing with its byte range", "Checkpoint", "invalid shape",
        || load_with_header(|h| {
            let t = last_tensor(h);
            h[&t]["shape"] = json!([3]);
        })),
    row("model.safetensors", "data offsets past the end of the file", "Checkpoint", "not fully covered",
        || load_with_header(|h| {
            let t = last_tensor(h);
            let (s, e) = (h[&t]["data_offsets"][0].as_u64().unwrap(), h[&t]["data_offsets"][1].as_u64().unwrap());
            h[&t]["shape"] = json!([(e - s) / 4 + 16]);
            h[&t]["data_offsets"] = json!([s, e + 64]);
        })),
    row("model.safetensors", "two tensors overlapping", "Checkpoint", "invalid offset",
        || load_with_header(|h| {
            let t = last_tensor(h);
            let (s, e) = (h[&t]["data_offsets"][0].as_u64().unwrap(), h[&t]["data_offsets"][1].as_u64().unwrap());
            h[&t]["data_offsets"] = json!([s - 4, e - 4]);
        })),
    row("model.safetensors", "norm_f stored as I32", "Checkpoint", "I32",
        || load_with_header(|h| {
            let t = &mut h["backbone.norm_f.weight"];
            t["dtype"] = json!("I32");
        })),
    row("model.safetensors", "D missing", "Checkpoint", "backbone.layers.1.mixer.D", || load_without("backbone.layers.1.mixer.D")),
    row("model.safetensors", "A_log transposed", "Checkpoint", "shape",
        || load_with_header(|h| {
            let t = &mut h["backbone.layers.0.mixer.A_log"];
            let s = t["shape"].clone();
            t["shape"] = json!([s[1], s[0]]);
        })),
    row("model.safetensors", "NaN in dt_proj.weight", "Checkpoint", "NaN",
        || load_with_values("mamba1", "tiny_tied", "backbone.layers.2.mixer.dt_proj.weight", |v| v[0] = f32::NAN)),
    row("model.safetensors", "+Inf in the embedding", "Checkpoint", "inf",
        || load_with_values("mamba1", "tiny_tied", "backbone.embeddings.weight", |v| v[77] = f32::INFINITY)),
    row("model.safetensors (Mamba-2)", "-Inf in A_log", "Checkpoint", "-inf",
        || load_with_values("mamba2", "g1_small", "backbone.layers.1.mixer.A_log", |v| v[1] = f32::NEG_INFINITY)),
    row("model.safetensors (f16)", "f16 NaN in in_proj", "Checkpoint", "NaN",
        || load_with_file("mamba1", "f16_weights", "model.safetensors", |b| {
            let (hdr, mut data) = split(b);
            let t = &hdr["backbone.layers.0.mixer.in_proj.weight"];
            assert_eq!(t["dtype"], "F16");
            let s = t["data_offsets"][0].as_u64().unwrap() as usize;
            data[s..s + 2].copy_from_slice(&half::f16::NAN.to_le_bytes());
            *b = join(&hdr, &data);
        })),
    // Shards.
    row("model.safetensors.index.json", "a shard missing", "Io", "model-00002-of-00003.safetensors", || {
        let d = copy("mamba1", "sharded");
        std::fs::remove_file(d.path().join("model-00002-of-00003.safetensors")).unwrap();
        load(d.path())
    }),
    row("model.safetensors.index.json", "shard path leaves the folder", "Checkpoint", "../../etc/passwd",
        || load_with_index(|v| v["weight_map"]["backbone.norm_f.weight"] = json!("../../etc/passwd"))),
    row("model.safetensors.index.json", "shard an absolute path", "Checkpoint", "/etc/passwd",
        || load_with_index(|v| v["weight_map"]["backbone.norm_f.weight"] = json!("/etc/passwd"))),
    row("model.safetensors.index.json", "no weight_map", "Checkpoint", "weight_map",
        || load_with_index(|v| *v = json!([]))),
    row("model.safetensors.index.json", "shard name a number", "Checkpoint", "not a string",
        || load_with_index(|v| v["weight_map"]["backbone.norm_f.weight"] = json!(3))),
    row("model.safetensors.index.json", "tensor listed in a shard that lacks it", "Checkpoint", "listed in the index",
        || load_with_index(|v| v["weight_map"]["backbone.layers.0.mixer.ghost"] = json!("model-00001-of-00003.safetensors"))),
    row("model.safetensors.index.json", "100 MiB long (a sparse file)", "Checkpoint", "bytes", || {
        let d = copy("mamba1", "sharded");
        sparse(&d.path().join("model.safetensors.index.json"), 100 << 20);
        load(d.path())
    }),
    // Tokenizer files.
    row("tokenizer.json", "not a tokenizer", "Tokenizer", "tokenizer.json", || tokenizer_file(b"{\"model\": 3}")),
    row("tokenizer.json", "a non-string key inside `decoder` (made tokenizers panic; found by fuzzing)",
        "Tokenizer", "not valid JSON", || tokenizer_file(&std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/regressions/tokenizer/decoder-non-string-key.json")).unwrap())),
    row("tokenizer.json", "invalid UTF-8 in a string inside `decoder` (made tokenizers panic; found by fuzzing)",
        "Tokenizer", "not valid JSON", || tokenizer_file(&std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/regressions/tokenizer/decoder-invalid-utf8.json")).unwrap())),
    row("tokenizer.json", "1 TiB long (a sparse file)", "Tokenizer", "bytes", || {
        let d = tempfile::tempdir().unwrap();
        sparse(&d.path().join("tokenizer.json"), 1 << 40);
        Tokenizer::from_dir(d.path()).map(drop)
    }),
    // Prompts and batches.
    row("prefill", "token id 128 in a vocabulary of 128", "InvalidInput", "out of range",
        || session().prefill(&[&[1, 128, 2]]).map(drop)),
    row("prefill", "token id u32::MAX", "InvalidInput", "out of range",
        || session().prefill(&[&[u32::MAX]]).map(drop)),
    row("prefill", "empty prompt", "InvalidInput", "empty prompt", || session().prefill(&[&[]]).map(drop)),
    row("prefill", "no prompts at all", "InvalidInput", "0 prompts", || session().prefill(&[]).map(drop)),
    row("prefill", "2 prompts for a session planned for batch 1", "InvalidInput", "batch 1",
        || session().prefill(&[&[1], &[2]]).map(drop)),
    row("prefill", "prompts of a batch of different lengths", "InvalidInput", "equally long", || {
        let mut s = model().session(&SessionOptions { batch: 2, ..Default::default() })?;
        s.prefill(&[&[1, 2], &[3]]).map(drop)
    }),
    row("decode_logits", "3 tokens for batch 1", "InvalidInput", "batch 1",
        || { let mut s = session(); s.prefill(&[&[1]])?; s.decode_logits(&[1, 2, 3]).map(drop) }),
    row("decode", "before any prefill", "InvalidInput", "before any prefill", || session().decode().map(drop)),
    row("logits", "session without all_logits", "InvalidInput", "all_logits", || session().logits(&[&[1, 2]]).map(drop)),
    row("generate", "max_tokens 0", "InvalidInput", "max_tokens", || {
        let o = mamba_wgpu::model::GenerateOptions { max_tokens: 0, ..Default::default() };
        session().generate(&[&[1]], &o, |_| std::ops::ControlFlow::Continue(())).map(drop)
    }),
    row("generate", "token id out of range in the prompt", "InvalidInput", "out of range", || {
        let o = mamba_wgpu::model::GenerateOptions::default();
        session().generate(&[&[500]], &o, |_| std::ops::ControlFlow::Continue(())).map(drop)
    }),
    row("session", "batch 0", "InvalidInput", "batch", || session_with(SessionOptions { batch: 0, ..Default::default() })),
    row("session", "max_chunk_tokens 0", "InvalidInput", "max_chunk_tokens",
        || session_with(SessionOptions { max_chunk_tokens: 0, ..Default::default() })),
    // Sampling settings.
    row("sampling", "temperature -1", "InvalidInput", "temperature", || bad_sampling(sampling(-1.0, 1.0))),
    row("sampling", "temperature NaN", "InvalidInput", "temperature", || bad_sampling(sampling(f32::NAN, 1.0))),
    row("sampling", "temperature +Inf", "InvalidInput", "temperature", || bad_sampling(sampling(f32::INFINITY, 1.0))),
    row("sampling", "temperature 1e-45 (log2(e)/T overflows)", "InvalidInput", "too small", || bad_sampling(sampling(1e-45, 1.0))),
    row("sampling", "top_p 0", "InvalidInput", "top_p", || bad_sampling(sampling(1.0, 0.0))),
    row("sampling", "top_p 1.5", "InvalidInput", "top_p", || bad_sampling(sampling(1.0, 1.5))),
    row("sampling", "top_p -0.1", "InvalidInput", "top_p", || bad_sampling(sampling(1.0, -0.1))),
    row("sampling", "top_p NaN", "InvalidInput", "top_p", || bad_sampling(sampling(1.0, f32::NAN))),
    // Device limits.
    row("device with 256-byte storage bindings", "activations of 512-byte rows", "LimitExceeded", "256", || {
        let ctx = Arc::new(GpuContext::with_options(&ContextOptions {
            storage_binding_limit: Some(256),
            ..Default::default()
        })?);
        Mamba1::load(ctx, &fixture("mamba1", "tiny_tied"))?
            .session(&SessionOptions::default())
            .map(drop)
    }),
    row("device with 4 KiB storage bindings", "a batch of 64 whose activations cannot fit", "LimitExceeded", "4096", || {
        let ctx = Arc::new(GpuContext::with_options(&ContextOptions {
            storage_binding_limit: Some(4096),
            ..Default::default()
        })?);
        Mamba1::load(ctx, &fixture("mamba1", "odd_sizes"))?
            .session(&SessionOptions { batch: 64, ..Default::default() })
            .map(drop)
    }),
];

/// The first word of an error's Debug form: its variant's name.
fn variant(e: &Error) -> String {
    format!("{e:?}")
        .chars()
        .take_while(|c| c.is_alphanumeric())
        .collect()
}

#[test]
fn every_bad_input_is_refused_with_the_right_error() {
    assert!(ROWS.len() >= 30, "the table has {} rows", ROWS.len());
    let mut failures = Vec::new();
    for r in ROWS {
        let got = std::panic::catch_unwind(r.run);
        let verdict = match got {
            Err(_) => "panicked".to_string(),
            Ok(Ok(())) => "succeeded".to_string(),
            Ok(Err(e)) => {
                let (v, msg) = (variant(&e), e.to_string());
                if v != r.variant {
                    format!("gave {v} (`{msg}`), not {}", r.variant)
                } else if !msg.contains(r.word) {
                    format!("said `{msg}`, without `{}`", r.word)
                } else {
                    continue;
                }
            }
        };
        failures.push(format!("{} ({}): {verdict}", r.input, r.wrong));
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        ROWS.len(),
        failures.join("\n")
    );
}

/// Rows name distinct cases: no two share input and what is wrong.
#[test]
fn rows_are_distinct() {
    let mut seen = HashMap::new();
    for (i, r) in ROWS.iter().enumerate() {
        assert!(
            seen.insert((r.input, r.wrong), i).is_none(),
            "{} / {}",
            r.input,
            r.wrong
        );
    }
}

/// Refused input leaves the session usable: after each kind of refusal the same session
/// prefills and decodes the tokens a fresh session gives.
#[test]
fn a_session_survives_refused_input() {
    let mut fresh = session();
    let want = (
        fresh.prefill(&[&[1, 2, 3]]).unwrap(),
        fresh.decode().unwrap(),
    );
    let mut s = session();
    assert!(s.decode().is_err());
    assert!(s.prefill(&[&[]]).is_err());
    assert!(s.prefill(&[&[1, 999]]).is_err());
    assert!(s.prefill(&[&[1], &[2]]).is_err());
    assert!(s.set_sampling(sampling(-1.0, 1.0)).is_err());
    assert_eq!(
        s.position(),
        0,
        "refused input must not advance the session"
    );
    assert_eq!(
        (s.prefill(&[&[1, 2, 3]]).unwrap(), s.decode().unwrap()),
        want
    );
}

/// Regression (found by the tokenizer fuzz target's seeds): decoding nothing, or only ids the
/// vocabulary lacks, through a BPE decoder made `tokenizers` compute `0 - 1` (a panic in
/// debug builds). The library now answers the empty string.
#[test]
fn decoding_nothing_gives_the_empty_string() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/tokenizer");
    let tok = Tokenizer::from_bytes(&std::fs::read(seeds.join("bpe_unk.json")).unwrap()).unwrap();
    assert_eq!(tok.decode(&[]).unwrap(), "");
    assert_eq!(tok.decode(&[u32::MAX, 1 << 20]).unwrap(), "");
    let ids = tok.encode("the quick brown fox").unwrap();
    // This seed's decoder joins its `##` pieces without spaces; what matters is that real ids
    // still decode to text.
    assert!(tok.decode(&ids).unwrap().starts_with("the"));
}

/// Regression for the sampler: a temperature so small that `log2(e)/T` overflows would have
/// run the kernel with an infinite scale (`0 · ∞` = NaN weights); the smallest temperature
/// that validates still gives finite params.
#[test]
fn tiny_temperatures() {
    assert!(sampling(1e-45, 1.0).validate().is_err());
    let t = std::f32::consts::LOG2_E / f32::MAX * 1.0001;
    let s = sampling(t, 1.0);
    s.validate().unwrap();
    assert!(s.params(1, 8).logit_scale.is_finite());
}

/// Checkpoints parsed from memory refuse the same files as mapped ones (the fuzz targets use
/// this path).
#[test]
fn in_memory_checkpoints_refuse_the_same_files() {
    let bytes = std::fs::read(fixture("mamba1", "tiny_tied").join("model.safetensors")).unwrap();
    let p = Path::new("mem/model.safetensors");
    assert!(Checkpoint::from_bytes(p, bytes[..bytes.len() - 1].to_vec()).is_err());
    let ck = Checkpoint::from_bytes(p, bytes).unwrap();
    assert_eq!(ck.shape("backbone.norm_f.weight").unwrap(), [32]);
    assert_eq!(ck.f32("backbone.norm_f.weight", &[32]).unwrap().len(), 32);
    assert_eq!(ck.dir(), Path::new("mem"));
}
