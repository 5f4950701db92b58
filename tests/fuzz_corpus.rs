//! Replays through the fuzz harnesses, as ordinary tests (no nightly, no libFuzzer, a few
//! seconds): the committed fuzz corpora (`fuzz/corpus/<target>/`, minimized from the fuzzing
//! runs), the inputs that once crashed a target (`fuzz/regressions/<target>/`; each also has a
//! row in `tests/bad_inputs.rs`), the hand-made seeds (`fuzz/seeds/<target>/`) and the
//! committed fixtures. CI replays; it does not fuzz.

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod harness;

use std::path::{Path, PathBuf};

/// Inputs per target replayed under Miri.
const MIRI_INPUTS: usize = 6;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every file under `dir`, recursively, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Runs `f` over the committed corpus of `target`, the hand-made seeds, and the fixture files
/// for which `fixture` is true. Returns how many inputs ran; at least `min` must exist, so a
/// corpus that went missing fails the test instead of passing it vacuously.
fn replay(target: &str, fixture: impl Fn(&Path) -> bool, min: usize, f: fn(&[u8])) -> usize {
    let mut inputs = files(&root().join("fuzz/corpus").join(target));
    inputs.extend(files(&root().join("fuzz/seeds").join(target)));
    inputs.extend(files(&root().join("fuzz/regressions").join(target)));
    inputs.extend(
        files(&root().join("tests/fixtures"))
            .into_iter()
            .filter(|p| fixture(p)),
    );
    if cfg!(miri) {
        // Miri runs ~1000× slower: the smallest few inputs of each source still cover every
        // code path the harness has, the full replay runs in ordinary tests.
        inputs.sort_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0));
        inputs.truncate(MIRI_INPUTS);
    }
    for p in &inputs {
        let data = std::fs::read(p).unwrap();
        // A panic names the input that caused it.
        let r = std::panic::catch_unwind(|| f(&data));
        assert!(r.is_ok(), "{target}: {} panicked", p.display());
    }
    let min = if cfg!(miri) {
        min.min(MIRI_INPUTS)
    } else {
        min
    };
    assert!(
        inputs.len() >= min,
        "{target}: only {} inputs (expected at least {min})",
        inputs.len()
    );
    inputs.len()
}

fn named(name: &'static str) -> impl Fn(&Path) -> bool {
    move |p| p.file_name().is_some_and(|n| n == name)
}

#[test]
fn config_corpus() {
    replay("config", named("config.json"), 10, harness::config);
}

#[test]
fn safetensors_corpus() {
    replay(
        "safetensors",
        |p| p.extension().is_some_and(|e| e == "safetensors"),
        10,
        harness::safetensors,
    );
}

#[test]
fn index_corpus() {
    replay(
        "index",
        named("model.safetensors.index.json"),
        2,
        harness::index,
    );
}

// Not under Miri: the work is inside the `tokenizers` crate (regex compilation over Unicode
// tables), which takes Miri tens of minutes for a handful of inputs; the library's own code on
// this path is the thin wrapper in src/tokenizer.rs.
#[test]
#[cfg_attr(miri, ignore)]
fn tokenizer_corpus() {
    replay("tokenizer", |_| false, 5, harness::tokenizer);
}

/// The seeds are real inputs: each hand-made tokenizer loads and round-trips plain text, so a
/// harness that silently rejected everything could not pass.
#[test]
#[cfg_attr(miri, ignore)] // tokenizers: see tokenizer_corpus
fn seeds_are_accepted() {
    for p in files(&root().join("fuzz/seeds/tokenizer")) {
        let tok = mamba_wgpu::tokenizer::Tokenizer::from_bytes(&std::fs::read(&p).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let ids = tok.encode("the quick brown fox").unwrap();
        assert!(!ids.is_empty(), "{}", p.display());
    }
}

/// The hand-made safetensors seed reads back the values it was written with, so a harness that
/// silently refused every file could not pass.
#[test]
fn safetensors_seed_values() {
    let ck = mamba_wgpu::model::checkpoint::Checkpoint::from_bytes(
        Path::new("mixed.safetensors"),
        std::fs::read(root().join("fuzz/seeds/safetensors/mixed.safetensors")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        ck.f32("a.weight", &[2, 3]).unwrap(),
        [1., 2., 3., 4., 5., 6.]
    );
    assert_eq!(ck.f32("b.bias", &[3]).unwrap(), [0.5, -1., 2.]);
    assert_eq!(ck.f32("c", &[2]).unwrap(), [1.5, -2.25]);
    assert!(ck.f32("d", &[2]).is_err(), "I32 is not a float dtype");
}

#[test]
fn gguf_corpus() {
    replay(
        "gguf",
        |p| p.extension().is_some_and(|e| e == "gguf"),
        10,
        harness::gguf,
    );
}

#[test]
#[cfg_attr(miri, ignore)] // tokenizers: see tokenizer_corpus
fn gguf_tokenizer_corpus() {
    replay(
        "gguf_tokenizer",
        |p| p.extension().is_some_and(|e| e == "gguf"),
        10,
        harness::gguf_tokenizer,
    );
}

/// The hand-made GGUF seeds parse (so the fuzzers start from files that reach past the
/// header), and the tokenizer seeds build tokenizers that encode text.
#[test]
fn gguf_seeds_parse() {
    use mamba_wgpu::gguf::Gguf;
    let mut n = 0;
    for t in ["gguf", "gguf_tokenizer"] {
        for p in files(&root().join("fuzz/seeds").join(t)) {
            let g = Gguf::from_bytes(&std::fs::read(&p).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            for info in g.tensors() {
                g.tensor_f32(&info.name)
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            }
            n += 1;
        }
    }
    assert!(n >= 8, "{n} GGUF seeds");
    assert_eq!(
        Gguf::from_bytes(
            &std::fs::read(root().join("fuzz/seeds/gguf/every_value_type.gguf")).unwrap()
        )
        .unwrap()
        .keys()
        .count(),
        16
    );
}

#[test]
#[cfg_attr(miri, ignore)] // tokenizers: see tokenizer_corpus
fn gguf_tokenizer_seeds_build() {
    for p in files(&root().join("fuzz/seeds/gguf_tokenizer")) {
        let g = mamba_wgpu::gguf::Gguf::from_bytes(&std::fs::read(&p).unwrap()).unwrap();
        let tok = mamba_wgpu::tokenizer::Tokenizer::from_gguf(&g)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let ids = tok.encode("hello").unwrap();
        assert!(!ids.is_empty(), "{}", p.display());
    }
}
