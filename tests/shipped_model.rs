//! The English model the repository ships (models/tiny-mamba-en, trained by
//! scripts/train_tiny_model.py) against transformers on the same weights
//! (tests/fixtures/shipped/tiny-mamba-en, written by that script's `write_fixture`): full-forward
//! logits, greedy tokens with the cache, and its tokenizer on the recorded prompts.

mod common;

use std::path::{Path, PathBuf};

use common::fixtures::{self as fx, assert_logits};
use common::shared;
use mamba_wgpu::{LoadOptions, Model, SessionOptions, WeightDtype};

const FIXTURE: &str = "tiny-mamba-en";

fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny-mamba-en")
}

fn load(dtype: WeightDtype) -> Model {
    let options = LoadOptions {
        dtype,
        ..Default::default()
    };
    Model::load_with(shared().clone(), &model_dir(), &options)
        .unwrap_or_else(|e| panic!("models/tiny-mamba-en: {e}"))
}

/// Both weight storages: the checkpoint is f16 on disk, so f16 storage holds exactly the same
/// values as f32 storage and the same bar applies. The bar is the fixtures' (see
/// `fx::assert_logits`): 1e-4 · max|logit|, which a different summation order stays within
/// and a wrong term does not.
#[test]
fn shipped_model_matches_transformers() {
    let cases = fx::cases("shipped", FIXTURE);
    for dtype in [WeightDtype::F32, WeightDtype::F16] {
        let m = load(dtype);
        assert_eq!(m.eos_token_id(), Some(0), "config.json eos_token_id");
        for (k, c) in cases.iter().enumerate() {
            let mut s = m
                .session(&SessionOptions {
                    batch: c.batch,
                    all_logits: true,
                    ..Default::default()
                })
                .unwrap();
            let got = s.logits(&c.refs()).unwrap();
            assert_logits(&format!("case {k} ({dtype:?})"), &got, &c.logits);
            // Prefill then cached decode steps, greedy, as transformers' generate.
            assert_eq!(
                fx::greedy(&m, c),
                c.greedy,
                "case {k} ({dtype:?}): greedy tokens"
            );
        }
    }
}

/// The prompts, their ids and the greedy continuations as the Python `tokenizers` library wrote
/// them (manifest.json): encoding gives the same ids and decoding gives the text back.
#[cfg(feature = "tokenizer")]
#[test]
fn shipped_tokenizer_round_trips_the_fixture_prompts() {
    use mamba_wgpu::tokenizer::Tokenizer;

    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fx::fixture_dir("shipped", FIXTURE).join("manifest.json"))
            .unwrap(),
    )
    .unwrap();
    let tok = Tokenizer::from_dir(&model_dir())
        .unwrap()
        .expect("models/tiny-mamba-en/tokenizer.json");
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let cases = manifest["cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    for c in cases {
        let prompt = c["prompt"].as_str().unwrap();
        let want = ids(&c["ids"]);
        assert_eq!(tok.encode(prompt).unwrap(), want, "{prompt:?}: ids");
        assert_eq!(tok.decode(&want).unwrap(), prompt, "{prompt:?}: decode");
        assert_eq!(
            tok.decode(&ids(&c["greedy"])).unwrap(),
            c["greedy_text"].as_str().unwrap(),
            "{prompt:?}: greedy text"
        );
    }
    // A multi-byte character split over byte-level tokens decodes whole once complete; the
    // end-of-text token (id 0) is skipped.
    let text = "Café — “quoted”";
    let mut with_eos = tok.encode(text).unwrap();
    with_eos.push(0);
    assert_eq!(tok.decode(&with_eos).unwrap(), text);
}
