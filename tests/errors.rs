//! Bad input gets a clear `Error` naming what is wrong (the file and tensor where there is
//! one), never a panic, a hang or silent garbage. Each case starts from a good fixture and
//! breaks one thing.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::shared;
use mamba_wgpu::{ContextOptions, Error, GpuContext, Mamba1, Model, Sampling, SessionOptions};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mamba1")
        .join(name)
}

/// A temporary copy of a Mamba-1 fixture folder.
fn copy_fixture(name: &str) -> tempfile::TempDir {
    copy_family_fixture("mamba1", name)
}

/// A temporary copy of a fixture folder of either family.
fn copy_family_fixture(family: &str, name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(family)
        .join(name);
    for entry in std::fs::read_dir(src).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    dir
}

/// Rewrites `dir/model.safetensors` with `edit` applied to its tensors (name → (dtype, shape, bytes)).
fn rewrite(dir: &Path, edit: impl FnOnce(&mut HashMap<String, (Dtype, Vec<usize>, Vec<u8>)>)) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut t: HashMap<String, (Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    edit(&mut t);
    let views: Vec<(String, TensorView)> = t
        .iter()
        .map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, v.to_string()).unwrap();
}

fn load_err(dir: &Path) -> Error {
    match Model::load(shared().clone(), dir) {
        Ok(_) => panic!("{} loaded but should not", dir.display()),
        Err(e) => e,
    }
}

/// Asserts the message mentions every `needle`.
fn says(e: &Error, needles: &[&str]) {
    let msg = e.to_string();
    for n in needles {
        assert!(msg.contains(n), "error `{msg}` should mention `{n}`");
    }
}

#[test]
fn bad_folders_and_configs() {
    let e = load_err(Path::new("/nonexistent/model"));
    says(&e, &["/nonexistent/model"]);

    let d = copy_fixture("tiny_tied");
    std::fs::remove_file(d.path().join("config.json")).unwrap();
    says(&load_err(d.path()), &["config.json"]);

    let d = copy_fixture("tiny_tied");
    std::fs::write(d.path().join("config.json"), "{ not json").unwrap();
    says(&load_err(d.path()), &["config.json", "JSON"]);

    let d = copy_fixture("tiny_tied");
    edit_config(d.path(), |v| {
        v.as_object_mut().unwrap().remove("hidden_size");
    });
    says(&load_err(d.path()), &["hidden_size"]);

    let d = copy_fixture("tiny_tied");
    edit_config(d.path(), |v| v["state_size"] = serde_json::json!(-3));
    says(&load_err(d.path()), &["state_size"]);

    let d = copy_fixture("tiny_tied");
    edit_config(d.path(), |v| v["model_type"] = serde_json::json!("llama"));
    says(&load_err(d.path()), &["llama"]);

    let d = copy_fixture("tiny_tied");
    std::fs::remove_file(d.path().join("model.safetensors")).unwrap();
    says(&load_err(d.path()), &["model.safetensors"]);
}

#[test]
fn config_that_disagrees_with_the_weights() {
    let d = copy_fixture("tiny_tied");
    edit_config(d.path(), |v| v["hidden_size"] = serde_json::json!(48));
    says(&load_err(d.path()), &["model.safetensors", "shape"]);

    let d = copy_fixture("tiny_tied");
    edit_config(d.path(), |v| v["vocab_size"] = serde_json::json!(100));
    says(
        &load_err(d.path()),
        &["backbone.embeddings.weight", "vocab_size"],
    );

    let d = copy_fixture("tiny_tied");
    edit_config(d.path(), |v| v["num_hidden_layers"] = serde_json::json!(4));
    says(&load_err(d.path()), &["backbone.layers.3", "missing"]);

    // Untied config but no lm_head in the file.
    let d = copy_fixture("tiny_tied");
    edit_config(d.path(), |v| {
        v["tie_word_embeddings"] = serde_json::json!(false)
    });
    says(&load_err(d.path()), &["lm_head.weight", "missing"]);
}

#[test]
fn missing_misshaped_and_non_finite_tensors() {
    let d = copy_fixture("tiny_tied");
    rewrite(d.path(), |t| {
        t.remove("backbone.layers.1.mixer.D");
    });
    says(
        &load_err(d.path()),
        &["model.safetensors", "backbone.layers.1.mixer.D", "missing"],
    );

    let d = copy_fixture("tiny_tied");
    rewrite(d.path(), |t| {
        let e = t.get_mut("backbone.layers.0.mixer.A_log").unwrap();
        e.1 = vec![e.1[1], e.1[0]];
    });
    says(
        &load_err(d.path()),
        &["backbone.layers.0.mixer.A_log", "shape"],
    );

    let d = copy_fixture("tiny_tied");
    rewrite(d.path(), |t| {
        let e = t.get_mut("backbone.layers.2.mixer.dt_proj.weight").unwrap();
        e.2[0..4].copy_from_slice(&f32::NAN.to_le_bytes());
    });
    says(
        &load_err(d.path()),
        &["backbone.layers.2.mixer.dt_proj.weight", "NaN"],
    );

    let d = copy_fixture("tiny_tied");
    rewrite(d.path(), |t| {
        let e = t.get_mut("backbone.norm_f.weight").unwrap();
        let n = e.2.len() / 4;
        e.0 = Dtype::I32;
        e.2 = vec![0u8; n * 4];
    });
    says(&load_err(d.path()), &["backbone.norm_f.weight", "I32"]);
}

#[test]
fn truncated_and_corrupt_safetensors() {
    let d = copy_fixture("tiny_tied");
    let p = d.path().join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    says(&load_err(d.path()), &["model.safetensors", "safetensors"]);

    std::fs::write(&p, &bytes[..5]).unwrap();
    says(&load_err(d.path()), &["model.safetensors"]);

    // A header that claims a gigantic length.
    let mut evil = bytes.clone();
    evil[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    std::fs::write(&p, &evil).unwrap();
    says(&load_err(d.path()), &["model.safetensors"]);

    // Garbage header JSON.
    let mut evil = bytes.clone();
    evil[8] = b'#';
    std::fs::write(&p, &evil).unwrap();
    says(&load_err(d.path()), &["model.safetensors"]);
}

#[test]
fn broken_shard_index() {
    let d = copy_fixture("sharded");
    std::fs::remove_file(d.path().join("model-00002-of-00003.safetensors")).unwrap();
    says(&load_err(d.path()), &["model-00002-of-00003.safetensors"]);

    let d = copy_fixture("sharded");
    let idx = d.path().join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&idx)
        .unwrap()
        .replace("model-00001-of-00003.safetensors", "../../etc/passwd");
    std::fs::write(&idx, text).unwrap();
    says(&load_err(d.path()), &["../../etc/passwd"]);

    let d = copy_fixture("sharded");
    std::fs::write(d.path().join("model.safetensors.index.json"), "[]").unwrap();
    says(&load_err(d.path()), &["weight_map"]);
}

#[test]
fn bad_prompts_and_sampling_settings() {
    let m = Mamba1::load(shared().clone(), &fixture("tiny_tied")).unwrap();
    let mut s = m.session(&SessionOptions::default()).unwrap();
    says(&s.decode().unwrap_err(), &["before any prefill"]);
    says(&s.prefill(&[&[]]).unwrap_err(), &["empty prompt"]);
    says(
        &s.prefill(&[&[1, 128, 2]]).unwrap_err(),
        &["128", "out of range"],
    );
    says(
        &s.prefill(&[&[1], &[2]]).unwrap_err(),
        &["2 prompts", "batch 1"],
    );
    says(&s.logits(&[&[1, 2]]).unwrap_err(), &["all_logits"]);
    // The session is still usable after refused input.
    assert_eq!(s.prefill(&[&[1, 2, 3]]).unwrap().len(), 1);

    let mut s2 = m
        .session(&SessionOptions {
            batch: 2,
            ..Default::default()
        })
        .unwrap();
    says(
        &s2.prefill(&[&[1, 2], &[3]]).unwrap_err(),
        &["equally long"],
    );

    for (bad, needle) in [
        (
            Sampling {
                temperature: -1.0,
                ..Default::default()
            },
            "temperature",
        ),
        (
            Sampling {
                temperature: f32::NAN,
                ..Default::default()
            },
            "temperature",
        ),
        (
            Sampling {
                temperature: 1.0,
                top_p: 0.0,
                ..Default::default()
            },
            "top_p",
        ),
        (
            Sampling {
                temperature: 1.0,
                top_p: 1.5,
                ..Default::default()
            },
            "top_p",
        ),
    ] {
        let e = m
            .session(&SessionOptions {
                sampling: bad.clone(),
                ..Default::default()
            })
            .unwrap_err();
        says(&e, &[needle]);
        says(&s.set_sampling(bad).unwrap_err(), &[needle]);
    }
    says(
        &m.session(&SessionOptions {
            batch: 0,
            ..Default::default()
        })
        .unwrap_err(),
        &["batch"],
    );
}

#[test]
fn tensors_over_the_device_limit_are_refused_up_front() {
    // 256-byte bindings: the weights still page (rows of 32 f32 fit), but one row of the
    // [tokens, 2·d_inner] activations (512 bytes) cannot be bound.
    let ctx = Arc::new(
        GpuContext::with_options(&ContextOptions {
            storage_binding_limit: Some(256),
            ..Default::default()
        })
        .unwrap(),
    );
    let e = match Mamba1::load(ctx, &fixture("tiny_tied")) {
        Err(e) => e,
        Ok(m) => m.session(&SessionOptions::default()).unwrap_err(),
    };
    assert!(matches!(e, Error::LimitExceeded { .. }), "{e}");
    says(&e, &["256"]);
}

#[test]
fn bad_mamba2_configs() {
    let d = copy_family_fixture("mamba2", "groups2_hd12");
    edit_config(d.path(), |v| v["num_heads"] = serde_json::json!(5));
    says(&load_err(d.path()), &["num_heads 5", "head_dim 12", "72"]);

    let d = copy_family_fixture("mamba2", "groups2_hd12");
    edit_config(d.path(), |v| v["n_groups"] = serde_json::json!(4));
    says(&load_err(d.path()), &["n_groups 4", "num_heads 6"]);

    let d = copy_family_fixture("mamba2", "groups2_hd12");
    edit_config(d.path(), |v| {
        v["time_step_limit"] = serde_json::json!([0.5, 0.1])
    });
    says(&load_err(d.path()), &["time_step_limit"]);

    let d = copy_family_fixture("mamba2", "groups2_hd12");
    edit_config(d.path(), |v| {
        v["time_step_limit"] = serde_json::json!([0.0, "lots"])
    });
    says(&load_err(d.path()), &["time_step_limit[1]"]);

    // Weights of another shape than the config implies: the gated norm's weight.
    let d = copy_family_fixture("mamba2", "g1_small");
    edit_config(d.path(), |v| v["n_groups"] = serde_json::json!(2));
    says(&load_err(d.path()), &["in_proj.weight", "shape"]);

    let d = copy_family_fixture("mamba2", "state_spaces");
    edit_config(d.path(), |v| {
        v["ssm_cfg"]["headdim"] = serde_json::json!(24)
    });
    says(&load_err(d.path()), &["head_dim 24"]);
}
