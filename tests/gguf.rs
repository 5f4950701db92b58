//! GGUF files as llama.cpp's converter writes them (tests/fixtures/gguf, made from the
//! safetensors fixtures by scripts/gen_gguf.py with the `gguf` package): each runs through the
//! same runtime as its safetensors twin and gives the same logits; the tensors hold what the
//! converter's rounding allows; the tokenizer inside a file encodes like the tokenizer.json it
//! came from; and a table of broken files, each an `Err` naming what is wrong, never a panic.

mod common;

use std::path::{Path, PathBuf};

use common::fixtures::{cases, fixture_dir, max_diff, Case};
use common::shared;
use mamba_wgpu::gguf::{GgmlType, Gguf, ValueType};
use mamba_wgpu::kernels::gemv_q4_0::repack_q4_0;
use mamba_wgpu::model::checkpoint::Checkpoint;
use mamba_wgpu::model::config::{read_json, Mamba1Config, Mamba2Config};
use mamba_wgpu::model::gguf::{mamba1_config, mamba2_config, GgufWeights};
use mamba_wgpu::model::weights::WeightSource;
use mamba_wgpu::model::Family;
use mamba_wgpu::reference::gemv_q4_0::{dequantize_q4_0, quantize_q4_0};
use mamba_wgpu::tensor::quantize_q4_0_rows;
use mamba_wgpu::tokenizer::Tokenizer;
use mamba_wgpu::{Error, Mamba1, Mamba2, Model, SessionOptions};

fn gguf_path(family: &str, name: &str, ftype: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gguf")
        .join(format!("{family}-{name}-{ftype}.gguf"))
}

/// How the converter stores the big matrices of a file type.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Ftype {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
}

impl Ftype {
    fn name(self) -> &'static str {
        match self {
            Ftype::F32 => "F32",
            Ftype::F16 => "F16",
            Ftype::BF16 => "BF16",
            Ftype::Q8_0 => "Q8_0",
            Ftype::Q4_0 => "Q4_0",
        }
    }
}

/// The matrices the converter stores in the file type (everything else stays F32): the
/// 2-D `.weight` tensors that are neither norms nor the conv.
fn quantized(hf_name: &str) -> bool {
    [
        "embeddings.weight",
        "embedding.weight",
        "lm_head.weight",
        "in_proj.weight",
        "x_proj.weight",
        "dt_proj.weight",
        "out_proj.weight",
    ]
    .iter()
    .any(|s| hf_name.ends_with(s))
}

/// ggml's reference Q8_0 (`quantize_row_q8_0_ref`, which gguf-py reproduces bit for bit),
/// written here from its definition: per block of 32, d = max|x| / 127, q = roundf(x / d)
/// (halves away from zero) computed as x · (1/d), the scale stored as f16; then widened back.
fn q8_0_round_trip(row: &[f32]) -> Vec<f32> {
    row.chunks(32)
        .flat_map(|b| {
            let amax = b.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            let d = amax / 127.0;
            let id = if d == 0.0 { 0.0 } else { 1.0 / d };
            let d16 = half::f16::from_f32(d).to_f32();
            b.iter().map(move |x| d16 * (x * id).round())
        })
        .collect()
}

/// The safetensors checkpoint with the converter's rounding applied to the matrices it
/// quantizes: the model a GGUF file of `ftype` should equal.
struct Rounded {
    ck: Checkpoint,
    ftype: Ftype,
}

impl WeightSource for Rounded {
    fn contains(&self, name: &str) -> bool {
        self.ck.contains(name)
    }
    fn shape(&self, name: &str) -> mamba_wgpu::Result<Vec<usize>> {
        self.ck.shape(name)
    }
    fn file_of(&self, name: &str) -> PathBuf {
        self.ck.file_of(name)
    }
    fn f32(&self, name: &str, shape: &[usize]) -> mamba_wgpu::Result<Vec<f32>> {
        let v = self.ck.f32(name, shape)?;
        if !quantized(name) {
            return Ok(v);
        }
        let cols = *self.ck.shape(name)?.last().unwrap();
        let f16 = |v: Vec<f32>| -> Vec<f32> {
            v.into_iter()
                .map(|x| half::f16::from_f32(x).to_f32())
                .collect()
        };
        Ok(match self.ftype {
            Ftype::F32 => v,
            Ftype::F16 => f16(v),
            Ftype::BF16 => v
                .into_iter()
                .map(|x| half::bf16::from_f32(x).to_f32())
                .collect(),
            // A row that is not whole blocks cannot be Q8_0 or Q4_0: the converter falls back
            // to F16.
            Ftype::Q8_0 | Ftype::Q4_0 if !cols.is_multiple_of(32) => f16(v),
            Ftype::Q8_0 => v.chunks(cols).flat_map(q8_0_round_trip).collect(),
            // ggml's rule as the CPU twin writes it (bit for bit gguf-py's, checked below).
            Ftype::Q4_0 => dequantize_q4_0(&quantize_q4_0(&v)),
        })
    }
}

/// A model from the safetensors fixture, rounded as `ftype` stores it, with the fixture's own
/// SSD chunk and, when `unclamped`, without Mamba-2's time_step_limit clamp (GGUF has no key
/// for it).
fn twin(family: &str, name: &str, ftype: Ftype, unclamped: bool) -> Model {
    let dir = fixture_dir(family, name);
    let cfg_path = dir.join("config.json");
    let json = read_json(&cfg_path).unwrap();
    let src = Rounded {
        ck: Checkpoint::open(&dir).unwrap(),
        ftype,
    };
    let ctx = shared().clone();
    match family {
        "mamba1" => {
            let cfg = Mamba1Config::from_json(&cfg_path, &json).unwrap();
            Model::Mamba1(Mamba1::from_source(ctx, cfg, &src).unwrap())
        }
        _ => {
            let mut cfg = Mamba2Config::from_json(&cfg_path, &json).unwrap();
            if unclamped {
                cfg.dt_min = 0.0;
                cfg.dt_max = f32::INFINITY;
            }
            Model::Mamba2(Mamba2::from_source(ctx, cfg, &src).unwrap())
        }
    }
}

fn load_gguf(family: &str, name: &str, ftype: Ftype) -> Model {
    let p = gguf_path(family, name, ftype.name());
    Model::load(shared().clone(), &p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn all_logits(m: &Model, c: &Case) -> Vec<f32> {
    m.session(&SessionOptions {
        batch: c.batch,
        all_logits: true,
        ..Default::default()
    })
    .unwrap()
    .logits(&c.refs())
    .unwrap()
}

fn greedy(m: &Model, c: &Case) -> Vec<Vec<u32>> {
    let mut s = m
        .session(&SessionOptions {
            batch: c.batch,
            ..Default::default()
        })
        .unwrap();
    let mut got: Vec<Vec<u32>> = vec![Vec::new(); c.batch];
    for (b, t) in s.prefill(&c.refs()).unwrap().into_iter().enumerate() {
        got[b].push(t);
    }
    for _ in 1..c.greedy[0].len() {
        for (b, t) in s.decode().unwrap().into_iter().enumerate() {
            got[b].push(t);
        }
    }
    got
}

/// Max |Δlogit| / max|logit| of `a` against `b` over every case of a fixture.
fn worst_ratio(family: &str, name: &str, a: &Model, b: impl Fn(usize, &Case) -> Vec<f32>) -> f32 {
    let mut worst = 0.0f32;
    for (k, c) in cases(family, name).iter().enumerate() {
        let (d, scale) = max_diff(&all_logits(a, c), &b(k, c));
        worst = worst.max(d / scale);
    }
    worst
}

/// Fixtures converted, and whether their config sets a finite time_step_limit.
const FILES: &[(&str, &str, bool)] = &[
    ("mamba1", "tiny_tied", false),
    ("mamba1", "untied_dconv3", false),
    ("mamba2", "g1_small", false),
    ("mamba2", "groups2_hd12", true),
];

/// The GGUF and its twin run the same kernels on the same weights; what differs is A (stored
/// as −exp(A_log) in f32, read back as ln(−A): within an ulp or two of A_log) and, for Mamba-2,
/// the SSD chunk (256 against the fixture's 8 or 16: another summation order). Measured
/// ≤ 1e-6 · max|logit|; 1e-5 leaves room for a different device's rounding, not for a wrong
/// term.
const TWIN_TOLERANCE: f32 = 1e-5;

#[test]
fn f32_files_give_their_safetensors_twins_logits_and_greedy_tokens() {
    for &(family, name, clamped) in FILES {
        let g = load_gguf(family, name, Ftype::F32);
        let t = twin(family, name, Ftype::F32, true);
        let r = worst_ratio(family, name, &g, |_, c| all_logits(&t, c));
        eprintln!("{family}/{name} F32: GGUF vs safetensors max |Δlogit| / max|logit| = {r:.2e}");
        assert!(r <= TWIN_TOLERANCE, "{family}/{name}: {r:e}");
        for c in cases(family, name) {
            let got = greedy(&g, &c);
            assert_eq!(got, greedy(&t, &c), "{family}/{name}: greedy tokens");
            if !clamped {
                // No clamp in the fixture: transformers' own tokens.
                assert_eq!(
                    got, c.greedy,
                    "{family}/{name}: transformers' greedy tokens"
                );
            }
        }
        if !clamped {
            // And transformers' logits, at the f32 bar of the safetensors tests.
            let r = worst_ratio(family, name, &g, |_, c| c.logits.clone());
            assert!(r <= 1e-4, "{family}/{name} against transformers: {r:e}");
        }
    }
}

/// Against transformers' f32 logits. Rounding moves a weight by up to 2^-11 of itself in f16
/// (4.9e-4), 2^-8 in bf16 (3.9e-3), and in Q8_0 by up to half a step, d/2 = max|block| / 254,
/// plus the f16 scale's own 2^-11: with the fixtures' normal weights a block's max is about
/// 2.4σ, so Q8_0's error is ~0.005σ per weight, about four times bf16's typical one. Through
/// the layers that measures 1.6e-3 to 1.8e-3 (F16), 1.4e-2 to 1.6e-2 (BF16) and 5.3e-2 to
/// 5.4e-2 (Q8_0) · max|logit| on these fixtures; each bar leaves a margin of 2.3 to 2.8.
/// Q4_0's half step is max|block| / 16, about 16 times Q8_0's (~0.15σ per weight, and a whole
/// step where q clips at 15), so its logits move about 16 times as far: 0.64 (tiny_tied) and
/// 1.11 (g1_small) · max|logit| measured, as large as the logits themselves on models this
/// small (d_model 32, 3 layers); the bar, 2.5, leaves a margin of 2.3 to 3.9. The tight
/// check is against the rounded twin above (≤ 1e-6; for Q4_0 also against the file's own
/// blocks widened to f32, below); this one only says the rounding costs what it should.
fn reference_tolerance(ftype: Ftype) -> f32 {
    match ftype {
        Ftype::F32 => 1e-4,
        Ftype::F16 => 5e-3,
        Ftype::BF16 => 4e-2,
        Ftype::Q8_0 => 1.25e-1,
        Ftype::Q4_0 => 2.5,
    }
}

#[test]
fn quantized_files_equal_the_rounded_twin_and_stay_near_transformers() {
    for &(family, name, clamped) in FILES {
        let types: &[Ftype] = if name == "tiny_tied" || name == "g1_small" {
            &[Ftype::F16, Ftype::BF16, Ftype::Q8_0, Ftype::Q4_0]
        } else {
            &[Ftype::F16]
        };
        for &ft in types {
            let g = load_gguf(family, name, ft);
            let t = twin(family, name, ft, true);
            let r = worst_ratio(family, name, &g, |_, c| all_logits(&t, c));
            eprintln!("{family}/{name} {ft:?}: GGUF vs rounded safetensors {r:.2e}");
            assert!(r <= TWIN_TOLERANCE, "{family}/{name} {ft:?}: {r:e}");
            if !clamped {
                let r = worst_ratio(family, name, &g, |_, c| c.logits.clone());
                eprintln!("{family}/{name} {ft:?}: GGUF vs transformers {r:.2e}");
                assert!(
                    r <= reference_tolerance(ft),
                    "{family}/{name} {ft:?} against transformers: {r:e}"
                );
            }
        }
    }
}

#[test]
fn mamba2_files_run_without_the_time_step_clamp() {
    // groups2_hd12's limit (0.01, 0.2) binds at both ends; the GGUF has no key for it.
    let g = Gguf::open(&gguf_path("mamba2", "groups2_hd12", "F32")).unwrap();
    let cfg = mamba2_config(&g).unwrap();
    assert_eq!((cfg.dt_min, cfg.dt_max), (0.0, f32::INFINITY));
    let m = load_gguf("mamba2", "groups2_hd12", Ftype::F32);
    let clamped = twin("mamba2", "groups2_hd12", Ftype::F32, false);
    let r = worst_ratio("mamba2", "groups2_hd12", &m, |_, c| all_logits(&clamped, c));
    eprintln!("groups2_hd12: unclamped GGUF vs clamped safetensors {r:.2e}");
    assert!(r > 1e-3, "the clamp should matter on this fixture: {r:e}");
}

#[test]
fn configs_come_from_the_metadata() {
    for &(family, name, _) in FILES {
        let dir = fixture_dir(family, name);
        let cfg_path = dir.join("config.json");
        let json = read_json(&cfg_path).unwrap();
        let g = Gguf::open(&gguf_path(family, name, "F32")).unwrap();
        if family == "mamba1" {
            let mut want = Mamba1Config::from_json(&cfg_path, &json).unwrap();
            let got = mamba1_config(&g).unwrap();
            // Not in the files without a vocabulary (and untied_dconv3 has none).
            want.eos_token_id = got.eos_token_id;
            assert_eq!(got, want, "{name}");
        } else {
            let mut want = Mamba2Config::from_json(&cfg_path, &json).unwrap();
            let got = mamba2_config(&g).unwrap();
            want.eos_token_id = got.eos_token_id;
            (want.dt_min, want.dt_max, want.chunk_size) = (0.0, f32::INFINITY, 256);
            assert_eq!(got, want, "{name}");
        }
    }
    // The end-of-sequence token comes from the vocabulary's metadata.
    let eos = |family, name| {
        Model::load(shared().clone(), &gguf_path(family, name, "Q8_0"))
            .unwrap()
            .eos_token_id()
    };
    assert_eq!(eos("mamba1", "tiny_tied"), Some(0));
    assert_eq!(eos("mamba2", "g1_small"), Some(2));
}

#[test]
fn tensors_hold_the_values_the_converter_rounded() {
    // Straight from the parser, against the safetensors values and bounds from the formats'
    // definitions: F16 within 2^-11 relative (normal range; these weights are), BF16 2^-8,
    // Q8_0 within 0.5·d + 127·|d − f16(d)| ≤ (0.5 + 127·2^-11)·d with d = max|block| / 127,
    // Q4_0 within a step plus 8 times d's rounding, (1 + 8·2^-11)·d with d = max|block| / 8
    // (half a step, except where v / d in (7.5, 8] clips to q = 15: up to a whole step),
    // and A_log back from A = −exp(A_log) within 1e-6 (f32's ulp near ln 16 is 2.4e-7).
    for (family, name) in [("mamba1", "tiny_tied"), ("mamba2", "g1_small")] {
        let ck = Checkpoint::open(&fixture_dir(family, name)).unwrap();
        let fam = if family == "mamba1" {
            Family::Mamba1
        } else {
            Family::Mamba2
        };
        for ft in [
            Ftype::F32,
            Ftype::F16,
            Ftype::BF16,
            Ftype::Q8_0,
            Ftype::Q4_0,
        ] {
            let g = Gguf::open(&gguf_path(family, name, ft.name())).unwrap();
            let w = GgufWeights::new(&g, fam.clone());
            for hf in ck.names() {
                let shape = ck.shape(hf).unwrap();
                let want = ck.f32(hf, &shape).unwrap();
                let got = w.f32(hf, &shape).unwrap_or_else(|e| panic!("{hf}: {e}"));
                assert_eq!(got.len(), want.len(), "{hf}");
                let cols = *shape.last().unwrap();
                let rel = match ft {
                    _ if !quantized(hf) => 0.0,
                    Ftype::F32 => 0.0,
                    Ftype::F16 => 2f32.powi(-11),
                    Ftype::BF16 => 2f32.powi(-8),
                    Ftype::Q8_0 | Ftype::Q4_0 if !cols.is_multiple_of(32) => 2f32.powi(-11),
                    Ftype::Q8_0 | Ftype::Q4_0 => -1.0,
                };
                for (i, (g, x)) in got.iter().zip(&want).enumerate() {
                    let bound = if hf.ends_with("A_log") {
                        1e-6
                    } else if rel >= 0.0 {
                        // Plus half f16's subnormal spacing, where tiny weights round.
                        rel * x.abs()
                            + if rel == 2f32.powi(-11) {
                                2f32.powi(-25)
                            } else {
                                0.0
                            }
                    } else {
                        let block = &want[i / 32 * 32..(i / 32 * 32 + 32).min(want.len())];
                        let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                        if ft == Ftype::Q8_0 {
                            (0.5 + 127.0 * 2f32.powi(-11)) * amax / 127.0 * (1.0 + 1e-6)
                        } else {
                            (1.0 + 8.0 * 2f32.powi(-11)) * amax / 8.0 * (1.0 + 1e-6)
                        }
                    };
                    assert!(
                        (g - x).abs() <= bound,
                        "{name} {ft:?} {hf}[{i}]: {g} vs {x} (bound {bound})"
                    );
                }
            }
        }
    }
}

/// A GGUF file's weights with its Q8_0/Q4_0 blocks hidden: every matrix comes through
/// [`WeightSource::f32`], i.e. the converter's blocks widened to f32 by the loader.
struct Widened<'a>(GgufWeights<'a>);

impl WeightSource for Widened<'_> {
    fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }
    fn shape(&self, name: &str) -> mamba_wgpu::Result<Vec<usize>> {
        self.0.shape(name)
    }
    fn file_of(&self, name: &str) -> PathBuf {
        self.0.file_of(name)
    }
    fn f32(&self, name: &str, shape: &[usize]) -> mamba_wgpu::Result<Vec<f32>> {
        self.0.f32(name, shape)
    }
}

#[test]
fn q4_0_files_hold_ggml_blocks_and_give_the_logits_of_their_widened_weights() {
    for (family, name) in [("mamba1", "tiny_tied"), ("mamba2", "g1_small")] {
        let path = gguf_path(family, name, "Q4_0");
        let g = Gguf::open(&path).unwrap();
        let fam = if family == "mamba1" {
            Family::Mamba1
        } else {
            Family::Mamba2
        };
        let w = GgufWeights::new(&g, fam.clone());
        // gguf-py's blocks are ggml's reference quantiser's, bit for bit: the CPU twin's
        // (`quantize_q4_0`) and the on-load quantiser's (`quantize_q4_0_rows`) are the same
        // words. Rows that are not whole blocks are F16 in the file, so no Q4_0 words.
        let ck = Checkpoint::open(&fixture_dir(family, name)).unwrap();
        let mut blocks = 0;
        for hf in ck.names().into_iter().filter(|n| quantized(n)) {
            let shape = ck.shape(hf).unwrap();
            let (rows, cols) = (shape[0], shape[1..].iter().product::<usize>());
            let got = w.q4_0_words(hf, rows, cols);
            if !cols.is_multiple_of(32) {
                assert!(got.is_none(), "{hf}: [{rows}, {cols}] cannot be Q4_0");
                continue;
            }
            let got = got.unwrap_or_else(|| panic!("{hf}: not Q4_0")).unwrap();
            let v = ck.f32(hf, &shape).unwrap();
            assert_eq!(
                got,
                repack_q4_0(&quantize_q4_0(&v), rows, cols).unwrap(),
                "{name} {hf}: the file's blocks against the twin's quantiser"
            );
            assert_eq!(got, quantize_q4_0_rows(&v, rows, cols).unwrap(), "{hf}");
            blocks += got.len() / 5;
        }
        assert!(blocks > 100, "{name}: {blocks} blocks");

        // The same weights through two paths: the file's blocks read by gemv_q4_0 (prefill and
        // decode), and the loader's f32 widening of them run by the f32 kernels. Only the
        // summation order differs (measured ≤ 1e-6 · max|logit|), so the twin bar holds.
        let q4 = load_gguf(family, name, Ftype::Q4_0);
        assert!(q4.weight_bytes() < load_gguf(family, name, Ftype::Q8_0).weight_bytes());
        let src = Widened(GgufWeights::new(&g, fam));
        let ctx = shared().clone();
        let wide = match family {
            "mamba1" => {
                Model::Mamba1(Mamba1::from_source(ctx, mamba1_config(&g).unwrap(), &src).unwrap())
            }
            _ => Model::Mamba2(Mamba2::from_source(ctx, mamba2_config(&g).unwrap(), &src).unwrap()),
        };
        let r = worst_ratio(family, name, &q4, |_, c| all_logits(&wide, c));
        eprintln!("{family}/{name} Q4_0: blocks vs widened to f32 {r:.2e}");
        assert!(r <= TWIN_TOLERANCE, "{family}/{name}: {r:e}");
        for c in cases(family, name) {
            assert_eq!(greedy(&q4, &c), greedy(&wide, &c), "{family}/{name}");
        }
    }
}

#[test]
fn the_converter_layout_is_what_the_files_hold() {
    // Facts about llama.cpp's conventions, checked on the files themselves: A negative, the
    // conv squeezed to [C, K], Mamba-2's A and D as [H, 1], its norm grouped, a tied head
    // absent, Q8_0 only where a row is whole blocks.
    let g = Gguf::open(&gguf_path("mamba2", "groups2_hd12", "F32")).unwrap();
    let t = |n: &str| g.tensor(n).unwrap_or_else(|| panic!("{n}"));
    assert_eq!(t("blk.0.ssm_conv1d.weight").shape, [200, 3]);
    assert_eq!(t("blk.0.ssm_a").shape, [6, 1]);
    assert_eq!(t("blk.0.ssm_d").shape, [6, 1]);
    assert_eq!(t("blk.0.ssm_norm.weight").shape, [2, 36]);
    assert!(g
        .tensor_f32("blk.0.ssm_a")
        .unwrap()
        .iter()
        .all(|&a| a < 0.0));
    assert!(g.tensor("output.weight").is_some(), "untied");
    assert!(!g.contains_key("tokenizer.ggml.tokens"));
    let g = Gguf::open(&gguf_path("mamba1", "tiny_tied", "Q8_0")).unwrap();
    assert!(g.tensor("output.weight").is_none(), "tied");
    let t = |n: &str| g.tensor(n).unwrap().dtype;
    assert_eq!(t("blk.0.ssm_in.weight"), GgmlType::Q8_0);
    assert_eq!(
        t("blk.0.ssm_dt.weight"),
        GgmlType::F16,
        "rows of 2 fall back to F16"
    );
    assert_eq!(t("blk.0.ssm_conv1d.weight"), GgmlType::F32);
    assert_eq!(t("blk.0.ssm_a"), GgmlType::F32);
    assert_eq!(g.u32("mamba.ssm.time_step_rank").unwrap(), 2);
    assert_eq!(g.str("general.architecture").unwrap(), "mamba");
    assert_eq!(g.version(), 3);
    assert_eq!(g.alignment(), 32);
}

#[test]
fn the_tokenizer_inside_a_file_encodes_like_its_tokenizer_json() {
    let texts = [
        "the river ran past the old mill",
        "Where did the water go? To the sea, and then to the clouds!",
        "  double  spaces, tabs\tand\nnew lines ",
        "<|endoftext|>the same water<|endoftext|>",
        "",
    ];
    for (family, name, vocab) in [("mamba1", "tiny_tied", 128), ("mamba2", "g1_small", 64)] {
        let json = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
            "tests/fixtures/gguf/tokenizer-{family}-{name}.json"
        ));
        let want = Tokenizer::from_bytes(&std::fs::read(&json).unwrap()).unwrap();
        for ft in ["F32", "Q8_0"] {
            let path = gguf_path(family, name, ft);
            let got = Tokenizer::for_model(&path).unwrap().expect("a vocabulary");
            assert_eq!(got.vocab_size(), vocab);
            assert_eq!(got.vocab_size(), want.vocab_size());
            for text in texts {
                let ids = want.encode(text).unwrap();
                assert_eq!(got.encode(text).unwrap(), ids, "{name}: {text:?}");
                assert_eq!(got.decode(&ids).unwrap(), want.decode(&ids).unwrap());
            }
            // Merges apply: "the" is one token, not three.
            assert_eq!(got.encode(" the").unwrap().len(), 1, "{name}");
        }
    }
    // A file without a vocabulary has no tokenizer; asking for it directly is an error.
    let p = gguf_path("mamba1", "untied_dconv3", "F32");
    assert!(Tokenizer::for_model(&p).unwrap().is_none());
    let e = Tokenizer::from_gguf(&Gguf::open(&p).unwrap()).unwrap_err();
    assert!(e.to_string().contains("tokenizer.ggml.model"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Broken files.

/// A small GGUF writer for the table: every value type, a nested array, two tensors (an F32
/// `[3, 4]` matrix and a Q8_0 row of 32), with the positions of the fields the table mutates.
#[derive(Default)]
struct Pos {
    version: usize,
    tensor_count: usize,
    kv_count: usize,
    first_key_len: usize,
    str_value_len: usize,
    arr_type: usize,
    arr_count: usize,
    bool_value: usize,
    value_type: usize,
    alignment_value: usize,
    a_ndims: usize,
    a_dims: usize,
    a_type: usize,
    b_dims: usize,
    b_offset: usize,
    data: usize,
    b_data: usize,
}

struct Opts {
    depth: usize,
    dup_key: bool,
    dup_tensor: bool,
    alignment_u64: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            depth: 2,
            dup_key: false,
            dup_tensor: false,
            alignment_u64: false,
        }
    }
}

fn synthetic(o: &Opts) -> (Vec<u8>, Pos) {
    let mut p = Pos::default();
    let mut b: Vec<u8> = Vec::new();
    fn s(b: &mut Vec<u8>, x: &str) {
        b.extend((x.len() as u64).to_le_bytes());
        b.extend(x.as_bytes());
    }
    fn u32_(b: &mut Vec<u8>, x: u32) {
        b.extend(x.to_le_bytes());
    }
    fn u64_(b: &mut Vec<u8>, x: u64) {
        b.extend(x.to_le_bytes());
    }
    b.extend(b"GGUF");
    p.version = b.len();
    u32_(&mut b, 3);
    p.tensor_count = b.len();
    u64_(&mut b, 2);
    p.kv_count = b.len();
    u64_(&mut b, 0); // patched below
    let mut kvs = 0u64;
    let mut kv = |b: &mut Vec<u8>, key: &str, ty: u32| {
        kvs += 1;
        s(b, key);
        u32_(b, ty);
    };
    p.first_key_len = b.len();
    kv(&mut b, "general.architecture", 8);
    p.str_value_len = b.len();
    s(&mut b, "mamba");
    kv(
        &mut b,
        "general.alignment",
        if o.alignment_u64 { 10 } else { 4 },
    );
    p.alignment_value = b.len();
    if o.alignment_u64 {
        u64_(&mut b, 32);
    } else {
        u32_(&mut b, 32);
    }
    kv(&mut b, "t.u8", 0);
    b.push(7);
    kv(&mut b, "t.i8", 1);
    b.push(0xF9);
    kv(&mut b, "t.u16", 2);
    b.extend(700u16.to_le_bytes());
    kv(&mut b, "t.i16", 3);
    b.extend((-700i16).to_le_bytes());
    kv(&mut b, "t.i32", 5);
    p.value_type = b.len() - 4;
    b.extend((-70000i32).to_le_bytes());
    kv(&mut b, "t.f32", 6);
    b.extend(1.5f32.to_le_bytes());
    kv(&mut b, "t.bool", 7);
    p.bool_value = b.len();
    b.push(1);
    kv(&mut b, "t.u64", 10);
    u64_(&mut b, 1 << 40);
    kv(&mut b, "t.i64", 11);
    b.extend((-1i64 << 40).to_le_bytes());
    kv(&mut b, "t.f64", 12);
    b.extend(0.25f64.to_le_bytes());
    kv(&mut b, "t.arr", 9);
    p.arr_type = b.len();
    u32_(&mut b, 4);
    p.arr_count = b.len();
    u64_(&mut b, 3);
    for x in [1u32, 2, 3] {
        u32_(&mut b, x);
    }
    kv(&mut b, "t.strs", 9);
    u32_(&mut b, 8);
    u64_(&mut b, 2);
    s(&mut b, "a");
    s(&mut b, "bc");
    // `depth` levels of single-element arrays around a [u8; 2].
    kv(&mut b, "t.nested", 9);
    for _ in 1..o.depth {
        u32_(&mut b, 9);
        u64_(&mut b, 1);
    }
    u32_(&mut b, 0);
    u64_(&mut b, 2);
    b.extend([1u8, 2]);
    kv(&mut b, "t.empty", 9);
    u32_(&mut b, 5);
    u64_(&mut b, 0);
    if o.dup_key {
        kv(&mut b, "t.u8", 0);
        b.push(8);
    }
    b[p.kv_count..p.kv_count + 8].copy_from_slice(&kvs.to_le_bytes());

    s(&mut b, "a");
    p.a_ndims = b.len();
    u32_(&mut b, 2);
    p.a_dims = b.len();
    u64_(&mut b, 4);
    u64_(&mut b, 3);
    p.a_type = b.len();
    u32_(&mut b, 0);
    u64_(&mut b, 0);
    s(&mut b, if o.dup_tensor { "a" } else { "b" });
    u32_(&mut b, 1);
    p.b_dims = b.len();
    u64_(&mut b, 32);
    u32_(&mut b, 8);
    p.b_offset = b.len();
    u64_(&mut b, 64);
    b.resize(b.len().next_multiple_of(32), 0);
    p.data = b.len();
    for i in 0..12 {
        b.extend((i as f32 * 0.5 - 2.0).to_le_bytes());
    }
    b.resize(p.data + 64, 0);
    p.b_data = b.len();
    b.extend(half::f16::from_f32(0.125).to_le_bytes());
    b.extend((0..32).map(|i| (i as i8 - 16) as u8));
    (b, p)
}

fn patch(mut b: Vec<u8>, at: usize, bytes: &[u8]) -> Vec<u8> {
    b[at..at + bytes.len()].copy_from_slice(bytes);
    b
}

#[test]
fn the_synthetic_file_parses_with_every_value_type() {
    let (b, _) = synthetic(&Opts::default());
    let g = Gguf::from_bytes(&b).unwrap();
    assert_eq!(g.str("general.architecture").unwrap(), "mamba");
    assert_eq!(g.u32("t.u8").unwrap(), 7);
    assert_eq!(g.get("t.i8").unwrap().as_i64(), Some(-7));
    assert_eq!(g.u32("t.u16").unwrap(), 700);
    assert_eq!(g.get("t.i16").unwrap().as_i64(), Some(-700));
    assert_eq!(g.get("t.i32").unwrap().as_i64(), Some(-70000));
    assert!(g.u32("t.i32").is_err(), "negative is not a u32");
    assert_eq!(g.f32("t.f32").unwrap(), 1.5);
    assert!(g.bool("t.bool").unwrap());
    assert_eq!(g.u64("t.u64").unwrap(), 1 << 40);
    assert!(g.u32("t.u64").is_err(), "2^40 does not fit u32");
    assert_eq!(g.get("t.i64").unwrap().as_i64(), Some(-1 << 40));
    assert_eq!(g.f32("t.f64").unwrap(), 0.25);
    assert_eq!(g.array("t.arr").unwrap().ints(), Some(vec![1, 2, 3]));
    assert_eq!(g.str_array("t.strs").unwrap(), ["a", "bc"]);
    let nested = g.array("t.nested").unwrap();
    assert_eq!(nested.elem_type(), ValueType::Array);
    let inner = nested.iter().next().unwrap().as_array().unwrap();
    assert_eq!(inner.ints(), Some(vec![1, 2]));
    assert!(g.array("t.empty").unwrap().is_empty());
    assert!(g.str("t.u8").is_err(), "a u8 is not a string");
    assert_eq!(g.keys().count(), 16);
    let a = g.tensor("a").unwrap();
    assert_eq!(a.shape, [3, 4], "row-major: ggml's ne reversed");
    assert_eq!(a.dtype, GgmlType::F32);
    let want: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
    assert_eq!(g.tensor_f32("a").unwrap(), want);
    let want: Vec<f32> = (0..32).map(|i| 0.125 * (i - 16) as f32).collect();
    assert_eq!(g.tensor_f32("b").unwrap(), want);
    assert_eq!(g.tensor("b").unwrap().range.len(), 34);
}

/// One broken file: what is wrong, the bytes, and a word the error must contain.
struct Bad {
    what: &'static str,
    bytes: Vec<u8>,
    word: &'static str,
}

fn bad_files() -> Vec<Bad> {
    let (v, p) = synthetic(&Opts::default());
    let u32b = |x: u32| x.to_le_bytes().to_vec();
    let u64b = |x: u64| x.to_le_bytes().to_vec();
    let at = |at: usize, bytes: Vec<u8>| patch(v.clone(), at, &bytes);
    let with = |o: Opts| synthetic(&o).0;
    let mut rows = vec![
        Bad {
            what: "empty file",
            bytes: vec![],
            word: "truncated",
        },
        Bad {
            what: "bad magic",
            bytes: at(0, b"GGUG".to_vec()),
            word: "magic",
        },
        Bad {
            what: "version 0",
            bytes: at(p.version, u32b(0)),
            word: "version",
        },
        Bad {
            what: "version 1",
            bytes: at(p.version, u32b(1)),
            word: "version",
        },
        Bad {
            what: "version 99",
            bytes: at(p.version, u32b(99)),
            word: "version",
        },
        Bad {
            what: "big-endian",
            bytes: at(p.version, 3u32.to_be_bytes().to_vec()),
            word: "big-endian",
        },
        Bad {
            what: "tensor count 2^60",
            bytes: at(p.tensor_count, u64b(1 << 60)),
            word: "count",
        },
        Bad {
            what: "tensor count u64::MAX",
            bytes: at(p.tensor_count, u64b(u64::MAX)),
            word: "count",
        },
        Bad {
            what: "metadata count 2^60",
            bytes: at(p.kv_count, u64b(1 << 60)),
            word: "count",
        },
        Bad {
            what: "metadata count one too many",
            bytes: at(p.kv_count, u64b(17)),
            word: "",
        },
        Bad {
            what: "key of 2^40 bytes",
            bytes: at(p.first_key_len, u64b(1 << 40)),
            word: "string",
        },
        Bad {
            what: "string value of 2^40 bytes",
            bytes: at(p.str_value_len, u64b(1 << 40)),
            word: "past the end",
        },
        Bad {
            what: "string value of u64::MAX bytes",
            bytes: at(p.str_value_len, u64b(u64::MAX)),
            word: "string",
        },
        Bad {
            what: "array count u64::MAX",
            bytes: at(p.arr_count, u64b(u64::MAX)),
            word: "count",
        },
        Bad {
            what: "array count × 4 overflows",
            bytes: at(p.arr_count, u64b(u64::MAX / 4 + 1)),
            word: "count",
        },
        Bad {
            what: "array count past the end",
            bytes: at(p.arr_count, u64b(1 << 20)),
            word: "count",
        },
        Bad {
            what: "unknown array element type",
            bytes: at(p.arr_type, u32b(13)),
            word: "value type",
        },
        Bad {
            what: "unknown value type",
            bytes: at(p.value_type, u32b(99)),
            word: "value type",
        },
        Bad {
            what: "bool of 2",
            bytes: at(p.bool_value, vec![2]),
            word: "bool",
        },
        Bad {
            what: "arrays nested 9 deep",
            bytes: with(Opts {
                depth: 9,
                ..Opts::default()
            }),
            word: "nested",
        },
        Bad {
            what: "duplicate key",
            bytes: with(Opts {
                dup_key: true,
                ..Opts::default()
            }),
            word: "twice",
        },
        Bad {
            what: "duplicate tensor",
            bytes: with(Opts {
                dup_tensor: true,
                ..Opts::default()
            }),
            word: "twice",
        },
        Bad {
            what: "alignment stored as u64",
            bytes: with(Opts {
                alignment_u64: true,
                ..Opts::default()
            }),
            word: "alignment",
        },
        Bad {
            what: "alignment 48",
            bytes: at(p.alignment_value, u32b(48)),
            word: "power of two",
        },
        Bad {
            what: "alignment 0",
            bytes: at(p.alignment_value, u32b(0)),
            word: "power of two",
        },
        Bad {
            what: "key not UTF-8",
            bytes: at(p.first_key_len + 8, vec![0xFF]),
            word: "UTF-8",
        },
        Bad {
            what: "zero dimensions",
            bytes: at(p.a_ndims, u32b(0)),
            word: "dimensions",
        },
        Bad {
            what: "5 dimensions",
            bytes: at(p.a_ndims, u32b(5)),
            word: "dimensions",
        },
        Bad {
            what: "a dimension of 0",
            bytes: at(p.a_dims, u64b(0)),
            word: "zero",
        },
        Bad {
            what: "shape product overflows",
            bytes: patch(at(p.a_dims, u64b(1 << 32)), p.a_dims + 8, &u64b(1 << 32)),
            word: "overflow",
        },
        Bad {
            what: "a 10^15-element tensor",
            bytes: at(p.a_dims, u64b(1_000_000_000_000_000 / 3)),
            word: "past the end",
        },
        Bad {
            what: "unknown ggml type",
            bytes: at(p.a_type, u32b(99)),
            word: "unknown ggml type",
        },
        Bad {
            what: "Q8_0 row not whole blocks",
            bytes: at(p.b_dims, u64b(33)),
            word: "multiple",
        },
        Bad {
            what: "offset past the end",
            bytes: at(p.b_offset, u64b(1 << 40)),
            word: "past the end",
        },
        Bad {
            what: "offset u64::MAX − 31",
            bytes: at(p.b_offset, u64b(u64::MAX - 31)),
            word: "past the end",
        },
        Bad {
            what: "overlapping tensors",
            bytes: at(p.b_offset, u64b(32)),
            word: "overlap",
        },
        Bad {
            what: "misaligned offset",
            bytes: at(p.b_offset, u64b(65)),
            word: "aligned",
        },
        Bad {
            what: "data cut short",
            bytes: v[..v.len() - 1].to_vec(),
            word: "past the end",
        },
    ];
    // Truncated at every byte of the header and metadata (the data is checked by the rows above).
    for n in 0..p.data {
        rows.push(Bad {
            what: "truncated",
            bytes: v[..n].to_vec(),
            word: "",
        });
    }
    rows
}

#[test]
fn every_broken_file_is_an_error_naming_the_problem() {
    let rows = bad_files();
    assert!(rows.len() > 38);
    for row in &rows {
        let r = std::panic::catch_unwind(|| Gguf::from_bytes(&row.bytes));
        let r = r.unwrap_or_else(|_| panic!("{}: panicked", row.what));
        match r {
            Ok(_) => panic!("{} ({} bytes): parsed", row.what, row.bytes.len()),
            Err(e @ Error::Checkpoint { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(row.word),
                    "{}: `{msg}` lacks `{}`",
                    row.what,
                    row.word
                );
            }
            Err(e) => panic!("{}: not a checkpoint error: {e}", row.what),
        }
    }
}

#[test]
fn bad_tensor_values_are_errors_when_read() {
    let (v, p) = synthetic(&Opts::default());
    let read = |bytes: Vec<u8>, name: &str| Gguf::from_bytes(&bytes).unwrap().tensor_f32(name);
    let msg = |r: mamba_wgpu::Result<Vec<f32>>| r.unwrap_err().to_string();
    let nan = patch(v.clone(), p.data + 8, &f32::NAN.to_le_bytes());
    assert!(msg(read(nan, "a")).contains("element 2 is NaN"));
    let inf = patch(v.clone(), p.b_data, &half::f16::INFINITY.to_le_bytes());
    assert!(msg(read(inf, "b")).contains("scale inf"));
    // A type the parser knows (its size is checked) but does not convert: IQ4_NL [32] is 18
    // bytes.
    let iq4 = patch(v.clone(), p.b_offset - 4, &20u32.to_le_bytes());
    assert!(msg(read(iq4, "b")).contains("IQ4_NL is not supported"));
    // The same tensor typed Q4_0 is its first 18 bytes as one block, widened as the twin
    // does; a non-finite scale there is an error too.
    let q4 = patch(v.clone(), p.b_offset - 4, &2u32.to_le_bytes());
    let want = dequantize_q4_0(&q4[p.b_data..p.b_data + 18]);
    assert_eq!(read(q4.clone(), "b").unwrap(), want);
    for bad in [half::f16::INFINITY, half::f16::NAN] {
        let e = msg(read(patch(q4.clone(), p.b_data, &bad.to_le_bytes()), "b"));
        assert!(e.contains(&format!("Q4_0 block 0 has scale {bad}")), "{e}");
    }
    assert!(msg(read(v, "c")).contains("missing tensor"));
}

#[test]
fn every_truncation_of_a_real_file_is_an_error() {
    let bytes = std::fs::read(gguf_path("mamba2", "g1_small", "Q8_0")).unwrap();
    let g = Gguf::from_bytes(&bytes).unwrap();
    // Every length through the metadata and tensor infos, then every 97th into the data.
    let lengths = (0..g.data_start()).chain((g.data_start()..bytes.len()).step_by(97));
    for n in lengths {
        assert!(Gguf::from_bytes(&bytes[..n]).is_err(), "{n} bytes parsed");
    }
}

#[test]
fn files_that_parse_but_are_not_a_model_are_errors() {
    let bytes = std::fs::read(gguf_path("mamba1", "tiny_tied", "F32")).unwrap();
    // Same-length substitutions in the real file: another architecture, a key missing, a
    // tensor missing, A made positive.
    let subst = |from: &str, to: &str| {
        let at = bytes
            .windows(from.len())
            .position(|w| w == from.as_bytes())
            .unwrap();
        patch(bytes.clone(), at, to.as_bytes())
    };
    let cfg_err = |b: Vec<u8>| {
        mamba1_config(&Gguf::from_bytes(&b).unwrap())
            .unwrap_err()
            .to_string()
    };
    let e = cfg_err(subst("\x05\0\0\0\0\0\0\0mamba", "\x05\0\0\0\0\0\0\0llama"));
    assert!(e.contains("architecture `llama`"), "{e}");
    let e = cfg_err(subst("mamba.ssm.state_size", "mamba.ssm.state_sizf"));
    assert!(
        e.contains("missing metadata key `mamba.ssm.state_size`"),
        "{e}"
    );
    let e = cfg_err(subst("mamba.ssm.conv_kernel", "mamba.ssm.conv_kernex"));
    assert!(e.contains("conv_kernel"), "{e}");

    let g = Gguf::from_bytes(&subst("blk.1.ssm_x.weight", "blk.1.ssm_y.weight")).unwrap();
    let cfg = mamba1_config(&g).unwrap();
    let e = Mamba1::from_source(shared().clone(), cfg, &GgufWeights::new(&g, Family::Mamba1))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("blk.1.ssm_x.weight") && e.contains("missing"),
        "{e}"
    );

    let g = Gguf::from_bytes(&bytes).unwrap();
    let a = g.tensor("blk.2.ssm_a").unwrap().range.start;
    let mut b = bytes.clone();
    b[a..a + 4].copy_from_slice(&1.0f32.to_le_bytes());
    let g = Gguf::from_bytes(&b).unwrap();
    let e = GgufWeights::new(&g, Family::Mamba1)
        .f32("backbone.layers.2.mixer.A_log", &[64, 16])
        .unwrap_err()
        .to_string();
    assert!(e.contains("must be negative"), "{e}");
}

/// Reads everything a parsed file offers: every value (arrays element by element, nested ones
/// too) and every tensor.
fn touch_everything(g: &Gguf) {
    fn walk(v: mamba_wgpu::gguf::Value<'_>) {
        if let Some(a) = v.as_array() {
            let _ = (a.strings(), a.ints(), a.floats());
            a.iter().for_each(walk);
        }
    }
    let keys: Vec<String> = g.keys().map(str::to_string).collect();
    for k in &keys {
        walk(g.get(k).unwrap());
        let _ = (
            g.u32(k),
            g.u64(k),
            g.f32(k),
            g.bool(k),
            g.str(k),
            g.str_array(k),
        );
    }
    for t in g.tensors() {
        let _ = g.tensor_f32(&t.name);
    }
}

#[test]
fn random_byte_mutations_never_panic() {
    // 4,000 seeded mutants of the synthetic file and of a real one (1 to 4 bytes overwritten,
    // biased toward the header where the counts and lengths are): each parses or is an error,
    // and whatever parses can be read in full without a panic.
    let (synth, p) = synthetic(&Opts::default());
    let real = std::fs::read(gguf_path("mamba2", "g1_small", "Q8_0")).unwrap();
    let real_header = Gguf::from_bytes(&real).unwrap().data_start();
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let (mut parsed, mut refused) = (0, 0);
    for i in 0..4000 {
        let (mut b, header) = if i % 2 == 0 {
            (synth.clone(), p.data)
        } else {
            (real.clone(), real_header)
        };
        for _ in 0..1 + next() % 4 {
            let at = (next() as usize) % if next() % 4 == 0 { b.len() } else { header };
            b[at] = match next() % 4 {
                0 => 0,
                1 => 0xFF,
                2 => b[at] ^ (1 << (next() % 8)),
                _ => next() as u8,
            };
        }
        let r = std::panic::catch_unwind(|| match Gguf::from_bytes(&b) {
            Ok(g) => {
                touch_everything(&g);
                true
            }
            Err(_) => false,
        });
        match r {
            Ok(true) => parsed += 1,
            Ok(false) => refused += 1,
            Err(_) => panic!("mutant {i} panicked"),
        }
    }
    eprintln!("{parsed} mutants parsed, {refused} refused");
    assert!(
        parsed > 100 && refused > 100,
        "{parsed} parsed, {refused} refused"
    );
}

#[test]
fn loading_reports_progress_for_folders_and_gguf_files() {
    use mamba_wgpu::model::weights::LoadProgress;
    use std::sync::Mutex;
    let folder = fixture_dir("mamba1", "tiny_tied");
    let file = gguf_path("mamba2", "g1_small", "Q8_0");
    for path in [folder.as_path(), file.as_path()] {
        let seen: Mutex<Vec<(String, usize, u64, u64)>> = Mutex::new(Vec::new());
        let record = |p: &LoadProgress<'_>| {
            seen.lock()
                .unwrap()
                .push((p.tensor.to_string(), p.tensors, p.values, p.values_total));
        };
        let m = Model::load_with_progress(
            shared().clone(),
            path,
            &mamba_wgpu::LoadOptions::default(),
            &record,
        )
        .unwrap();
        let seen = seen.into_inner().unwrap();
        let (_, n, last, total) = seen.last().cloned().expect("no progress reported");
        // Every tensor is reported once (a tied head's second read of the table too), the
        // counts only grow, and the last report reaches the total.
        assert!(
            n >= 10 && n == seen.len(),
            "{}: {n} reports",
            path.display()
        );
        assert!(seen.windows(2).all(|w| w[0].1 < w[1].1 && w[0].2 <= w[1].2));
        assert_eq!(last, total, "{}", path.display());
        // The model is the one Model::load gives.
        let plain = Model::load(shared().clone(), path).unwrap();
        let opts = SessionOptions::default();
        let a = m.session(&opts).unwrap().prefill(&[&[1, 2, 3]]).unwrap();
        let b = plain
            .session(&opts)
            .unwrap()
            .prefill(&[&[1, 2, 3]])
            .unwrap();
        assert_eq!(a, b);
    }
}
