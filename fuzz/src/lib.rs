//! The fuzz harnesses: one function per parser, taking the raw bytes of a hostile file. Each
//! must return (an `Err` is fine) without panicking, hanging or allocating beyond what the
//! input's length justifies, and checks what the parser promises about what it accepts.
//!
//! The same file is compiled into `tests/fuzz_corpus.rs` (by `#[path]`), which replays the
//! committed corpora through these functions as ordinary tests; the fuzz targets in
//! `fuzz_targets/` are one-line wrappers. It uses only `mamba_wgpu` and `serde_json`.

use std::collections::HashMap;
use std::path::Path;

use mamba_wgpu::model::checkpoint::Checkpoint;
use mamba_wgpu::model::config::{self, Family, Mamba1Config, Mamba2Config};

/// The shards of the committed sharded fixture, which [`index`] offers to every index.
const SHARDS: [(&str, &[u8]); 3] = [
    (
        "model-00001-of-00003.safetensors",
        include_bytes!("../../tests/fixtures/mamba1/sharded/model-00001-of-00003.safetensors"),
    ),
    (
        "model-00002-of-00003.safetensors",
        include_bytes!("../../tests/fixtures/mamba1/sharded/model-00002-of-00003.safetensors"),
    ),
    (
        "model-00003-of-00003.safetensors",
        include_bytes!("../../tests/fixtures/mamba1/sharded/model-00003-of-00003.safetensors"),
    ),
];

/// A `config.json`: JSON parsing, the family choice, and both families' parsers (both
/// spellings: the harness tries each parser whatever the family says). An accepted config
/// must have the invariants the model code relies on.
pub fn config(data: &[u8]) {
    let file = Path::new("fuzz/config.json");
    let Ok(v) = config::parse_json(file, data) else {
        return;
    };
    let fam = config::family(file, &v);
    if let Ok(c) = Mamba1Config::from_json(file, &v) {
        assert!(c.d_model > 0 && c.n_layer > 0 && c.d_inner > 0 && c.d_state > 0);
        assert!(c.dt_rank > 0 && (2..=8).contains(&c.d_conv));
        assert!(c.padded_vocab() >= c.vocab_size);
        assert!(c.eps.is_finite() && c.eps >= 0.0);
        c.validate(file)
            .expect("from_json accepted what validate refuses");
    }
    if let Ok(c) = Mamba2Config::from_json(file, &v) {
        c.validate(file)
            .expect("from_json accepted what validate refuses");
        assert_eq!(c.num_heads * c.head_dim, c.d_inner);
        assert_eq!(c.num_heads % c.n_groups, 0);
        assert!(c.d_in_proj() > c.conv_dim() && c.conv_dim() > c.d_inner);
        assert!(c.dt_min >= 0.0 && c.dt_min <= c.dt_max && !c.dt_max.is_nan());
        assert!(c.padded_vocab() >= c.vocab_size);
        assert!(c.eps.is_finite() && c.eps >= 0.0);
        assert!(c.chunk_size > 0 && (2..=8).contains(&c.d_conv));
    }
    if let Ok(f) = fam {
        assert!(matches!(f, Family::Mamba1 | Family::Mamba2));
    }
}

/// Reads every tensor of `ck` at its own shape (it must come back with exactly that many
/// finite values, or an error) and at a wrong shape (always an error).
fn read_all(ck: &Checkpoint, limit: usize) {
    for name in ck.names().into_iter().take(limit) {
        let Ok(shape) = ck.shape(name) else {
            panic!("{name} is listed but has no shape");
        };
        let n: usize = shape.iter().product();
        if let Ok(v) = ck.f32(name, &shape) {
            assert_eq!(v.len(), n, "{name}: {shape:?}");
            assert!(v.iter().all(|x| x.is_finite()));
        }
        let mut wrong = shape.clone();
        wrong.push(2);
        assert!(ck.f32(name, &wrong).is_err(), "{name} read at {wrong:?}");
        assert!(ck.file_of(name).to_string_lossy().ends_with(".safetensors"));
    }
    assert!(ck.f32("no such tensor", &[1]).is_err());
}

/// A `model.safetensors`: the header (length, JSON, dtypes, shapes, offsets) and the
/// conversion of every tensor to f32.
pub fn safetensors(data: &[u8]) {
    if let Ok(ck) = Checkpoint::from_bytes(Path::new("fuzz/model.safetensors"), data.to_vec()) {
        read_all(&ck, usize::MAX);
    }
}

/// A `model.safetensors.index.json`, over the committed sharded fixture's three shards
/// (other shard names fail like missing files).
pub fn index(data: &[u8]) {
    let shards: HashMap<&str, &[u8]> = SHARDS.into_iter().collect();
    let opened = Checkpoint::from_index_bytes(Path::new("fuzz"), data, |name| {
        shards
            .get(name)
            .map(|b| b.to_vec())
            .ok_or_else(|| mamba_wgpu::Error::Io {
                path: name.into(),
                source: std::io::ErrorKind::NotFound.into(),
            })
    });
    if let Ok(ck) = opened {
        // Every tensor's shape, but only a few reads: the safetensors target covers those.
        for name in ck.names() {
            assert!(ck.contains(name));
            assert!(ck.shape(name).is_ok());
        }
        read_all(&ck, 3);
    }
}

/// A `tokenizer.json`: loading, then encoding and decoding text (and ids it never made).
/// The library turns a panic inside the `tokenizers` crate into an error; such an error still
/// fails here (and libFuzzer's panic hook aborts before it is caught), so fuzzing reports it.
pub fn tokenizer(data: &[u8]) {
    fn no_panic<T>(r: mamba_wgpu::Result<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                assert!(!e.to_string().contains("panicked"), "{e}");
                None
            }
        }
    }
    let Some(tok) = no_panic(mamba_wgpu::tokenizer::Tokenizer::from_bytes(data)) else {
        return;
    };
    for text in [
        "",
        "Hello, world!",
        " Mamba  é ü 日本語 🐍\n\t0123",
        "\u{0}\u{ffff}",
    ] {
        if let Some(ids) = no_panic(tok.encode(text)) {
            no_panic(tok.decode(&ids));
        }
    }
    no_panic(tok.decode(&[]));
    no_panic(tok.decode(&[0, 1, 2, 255, 65_535, u32::MAX]));
}

/// Visits a metadata value and, for arrays, every item (nested arrays included).
fn walk(v: mamba_wgpu::gguf::Value<'_>, depth: usize) {
    assert!(
        depth <= mamba_wgpu::gguf::MAX_ARRAY_DEPTH + 1,
        "arrays nested too deep"
    );
    let _ = (
        v.value_type(),
        v.as_u64(),
        v.as_i64(),
        v.as_f64(),
        v.as_bool(),
        v.as_str(),
    );
    if let Some(a) = v.as_array() {
        assert_eq!(a.iter().count(), a.len());
        let _ = (a.strings(), a.ints(), a.floats());
        for item in a.iter().take(64) {
            walk(item, depth + 1);
        }
    }
}

/// A GGUF file: header, metadata of every value type, tensor infos, alignment and data
/// offsets; then what the library builds from one: the model config and the weights under
/// their Hugging Face names ([`gguf_tokenizer`] covers the tokenizer, which is much slower to
/// build).
pub fn gguf(data: &[u8]) {
    use mamba_wgpu::gguf::Gguf;
    use mamba_wgpu::model::gguf as model_gguf;
    use mamba_wgpu::model::weights::WeightSource;

    let Ok(g) = Gguf::from_bytes(data) else {
        return;
    };
    for k in g.keys() {
        let v = g.get(k).expect("a listed key has a value");
        walk(v, 0);
    }
    for t in g.tensors() {
        assert!(t.range.end <= data.len() && t.range.start <= t.range.end);
        assert!(t.range.start >= g.data_start());
        if let Ok(v) = g.tensor_f32(&t.name) {
            assert_eq!(v.len(), t.elements(), "{}", t.name);
        }
        let _ = g.tensor_bytes(&t.name);
    }
    if let Ok(fam) = model_gguf::family(&g) {
        let file = Path::new("fuzz.gguf");
        match fam {
            Family::Mamba1 => {
                if let Ok(c) = model_gguf::mamba1_config(&g) {
                    c.validate(file)
                        .expect("a GGUF Mamba-1 config that validation refuses");
                }
            }
            Family::Mamba2 => {
                if let Ok(c) = model_gguf::mamba2_config(&g) {
                    c.validate(file)
                        .expect("a GGUF Mamba-2 config that validation refuses");
                }
            }
        }
        let w = model_gguf::GgufWeights::new(&g, fam);
        for name in [
            "backbone.embeddings.weight",
            "backbone.norm_f.weight",
            "lm_head.weight",
            "backbone.layers.0.norm.weight",
            "backbone.layers.0.mixer.A_log",
            "backbone.layers.0.mixer.D",
            "backbone.layers.0.mixer.conv1d.weight",
            "backbone.layers.0.mixer.in_proj.weight",
            "backbone.layers.0.mixer.dt_bias",
            "backbone.layers.0.mixer.norm.weight",
        ] {
            if w.contains(name) {
                if let Ok(shape) = w.shape(name) {
                    if let Ok(v) = w.f32(name, &shape) {
                        assert_eq!(v.len(), shape.iter().product::<usize>(), "{name}");
                    }
                }
            }
        }
    }
}

/// The tokenizer a GGUF file carries (`tokenizer.ggml.*` metadata), built and used.
pub fn gguf_tokenizer(data: &[u8]) {
    let Ok(g) = mamba_wgpu::gguf::Gguf::from_bytes(data) else {
        return;
    };
    match mamba_wgpu::tokenizer::Tokenizer::from_gguf(&g) {
        Ok(tok) => {
            for text in ["", "Hello, world!", " Mamba  é 日本語 🐍\n\t0123"] {
                if let Ok(ids) = tok.encode(text) {
                    let _ = tok.decode(&ids);
                }
            }
            let _ = tok.decode(&[0, 1, u32::MAX]);
        }
        Err(e) => assert!(!e.to_string().contains("panicked"), "{e}"),
    }
}
