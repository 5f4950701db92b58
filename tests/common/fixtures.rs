//! Reading the transformers fixtures under tests/fixtures/<family>/<name>/reference.safetensors.

use std::path::{Path, PathBuf};

use safetensors::SafeTensors;

/// A fixture folder.
pub fn fixture_dir(family: &str, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(family)
        .join(name)
}

/// One recorded case: ids [B, L], logits [B, L, V], greedy [B, G].
pub struct Case {
    pub batch: usize,
    pub len: usize,
    pub ids: Vec<Vec<u32>>,
    pub logits: Vec<f32>,
    pub greedy: Vec<Vec<u32>>,
}

impl Case {
    /// The prompts as slices.
    pub fn refs(&self) -> Vec<&[u32]> {
        self.ids.iter().map(|r| &r[..]).collect()
    }
}

/// Every case of a fixture, in order.
pub fn cases(family: &str, name: &str) -> Vec<Case> {
    let bytes = std::fs::read(fixture_dir(family, name).join("reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let i64s = |t: &str| -> (Vec<usize>, Vec<i64>) {
        let v = st.tensor(t).unwrap();
        (
            v.shape().to_vec(),
            v.data()
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        )
    };
    let mut out = Vec::new();
    for k in 0.. {
        let key = format!("case{k}.ids");
        if st.tensor(&key).is_err() {
            break;
        }
        let (shape, ids) = i64s(&key);
        let (b, l) = (shape[0], shape[1]);
        let (gshape, greedy) = i64s(&format!("case{k}.greedy"));
        let logits = st.tensor(&format!("case{k}.logits")).unwrap();
        out.push(Case {
            batch: b,
            len: l,
            ids: ids
                .chunks(l)
                .map(|r| r.iter().map(|&x| x as u32).collect())
                .collect(),
            logits: logits
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            greedy: greedy
                .chunks(gshape[1])
                .map(|r| r.iter().map(|&x| x as u32).collect())
                .collect(),
        });
    }
    assert!(!out.is_empty(), "{family}/{name}: no cases");
    out
}

/// Largest |got - want| and the largest |want|; fails on a non-finite value.
pub fn max_diff(got: &[f32], want: &[f32]) -> (f32, f32) {
    assert_eq!(got.len(), want.len());
    let mut d = 0.0f32;
    for (g, w) in got.iter().zip(want) {
        assert!(g.is_finite(), "non-finite logit {g}");
        d = d.max((g - w).abs());
    }
    (d, want.iter().fold(0.0f32, |m, w| m.max(w.abs())))
}

/// The bar: max abs difference ≤ 1e-4 · max|logit| in f32. transformers' own f32 and f64
/// logits differ by up to ~2e-5 on these fixtures (see the manifests), so this leaves room for
/// a different summation order but not for a wrong term.
pub fn assert_logits(what: &str, got: &[f32], want: &[f32]) {
    let (d, scale) = max_diff(got, want);
    eprintln!(
        "{what}: max |Δlogit| = {d:.3e} (max |logit| {scale:.2}, ratio {:.2e})",
        d / scale
    );
    assert!(
        d <= 1e-4 * scale,
        "{what}: max |Δlogit| {d:e} > 1e-4 · {scale}"
    );
}

use std::sync::Arc;

use mamba_wgpu::{GpuContext, LoadOptions, Model, SessionOptions, WeightDtype, WeightStorage};

/// Loads a fixture with weights stored as `dtype` where the device prefers them.
pub fn load(family: &str, name: &str, dtype: WeightDtype) -> Model {
    load_with(
        family,
        name,
        &LoadOptions {
            dtype,
            ..Default::default()
        },
    )
}

/// Loads a fixture with `options`.
pub fn load_with(family: &str, name: &str, options: &LoadOptions) -> Model {
    load_on(super::shared(), family, name, options)
}

/// Loads a fixture with `options` on `ctx`.
pub fn load_on(ctx: &Arc<GpuContext>, family: &str, name: &str, options: &LoadOptions) -> Model {
    Model::load_with(ctx.clone(), &fixture_dir(family, name), options)
        .unwrap_or_else(|e| panic!("{family}/{name}: {e}"))
}

/// Greedy tokens of every sequence of `c`: a prefill (matmul path) then cached decode steps
/// (GEMV path), as many as the fixture recorded.
pub fn greedy(m: &Model, c: &Case) -> Vec<Vec<u32>> {
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

/// Every case of a fixture: full-forward logits within `tol` · max|logit| of transformers'
/// and greedy tokens identical to the recorded ones.
pub fn check_fixture(family: &str, name: &str, dtype: WeightDtype, tol: f32) {
    check_fixture_stored(family, name, dtype, WeightStorage::Auto, tol)
}

/// [`check_fixture`] with the big matrices in `storage`.
pub fn check_fixture_stored(
    family: &str,
    name: &str,
    dtype: WeightDtype,
    storage: WeightStorage,
    tol: f32,
) {
    check_fixture_on(super::shared(), family, name, dtype, storage, tol)
}

/// [`check_fixture_stored`] on `ctx` (for instance [`super::gpu_paths`]).
pub fn check_fixture_on(
    ctx: &Arc<GpuContext>,
    family: &str,
    name: &str,
    dtype: WeightDtype,
    storage: WeightStorage,
    tol: f32,
) {
    let gpu_paths = if ctx.is_cpu_adapter() {
        ""
    } else {
        ", GPU paths"
    };
    let m = load_on(ctx, family, name, &LoadOptions { dtype, storage });
    for (k, c) in cases(family, name).iter().enumerate() {
        let mut s = m
            .session(&SessionOptions {
                batch: c.batch,
                all_logits: true,
                ..Default::default()
            })
            .unwrap();
        let (d, scale) = max_diff(&s.logits(&c.refs()).unwrap(), &c.logits);
        eprintln!(
            "{family}/{name} case {k} (B={}, L={}, {dtype:?}, {storage:?}{gpu_paths}): max |Δlogit| = {d:.3e} (max |logit| {scale:.2}, ratio {:.2e})",
            c.batch,
            c.len,
            d / scale
        );
        assert!(
            d <= tol * scale,
            "{family}/{name} case {k} ({dtype:?}): max |Δlogit| {d:e} > {tol} · {scale}"
        );
        assert_eq!(
            greedy(&m, c),
            c.greedy,
            "{family}/{name} case {k} ({dtype:?}): greedy tokens"
        );
    }
}

/// A prompt of `split` tokens, then the following positions one decode step at a time, give
/// the logits of one full forward at those positions (the longest case of the fixture).
pub fn check_prefill_then_decode(family: &str, name: &str, splits: &[usize]) {
    let m = load(family, name, WeightDtype::F32);
    let c = cases(family, name)
        .into_iter()
        .max_by_key(|c| c.len * 10 + c.batch)
        .unwrap();
    let v = m.vocab();
    for &split in splits {
        let mut s = m
            .session(&SessionOptions {
                batch: c.batch,
                all_logits: true,
                ..Default::default()
            })
            .unwrap();
        let head: Vec<&[u32]> = c.ids.iter().map(|r| &r[..split]).collect();
        s.logits(&head).unwrap();
        for t in split..c.len.min(split + 12) {
            let tokens: Vec<u32> = c.ids.iter().map(|r| r[t]).collect();
            let got = s.decode_logits(&tokens).unwrap();
            let want: Vec<f32> = (0..c.batch)
                .flat_map(|b| c.logits[(b * c.len + t) * v..(b * c.len + t + 1) * v].to_vec())
                .collect();
            let (d, scale) = max_diff(&got, &want);
            assert!(
                d <= 1e-4 * scale,
                "{family}/{name}: split {split}, decoded position {t}: max |Δlogit| {d:e}"
            );
        }
    }
}

/// The batched case of a fixture gives, for each sequence, what that sequence gives alone.
pub fn check_batched_equals_single(family: &str, name: &str) {
    let m = load(family, name, WeightDtype::F32);
    let c = cases(family, name)
        .into_iter()
        .find(|c| c.batch > 1)
        .unwrap();
    let v = m.vocab();
    let mut s = m
        .session(&SessionOptions {
            batch: c.batch,
            all_logits: true,
            ..Default::default()
        })
        .unwrap();
    let batched = s.logits(&c.refs()).unwrap();
    for b in 0..c.batch {
        let mut one = m
            .session(&SessionOptions {
                all_logits: true,
                ..Default::default()
            })
            .unwrap();
        let single = one.logits(&[&c.ids[b]]).unwrap();
        let (d, scale) = max_diff(&batched[b * c.len * v..(b + 1) * c.len * v], &single);
        // Same kernels, same per-row summation order: equal up to rounding.
        assert!(
            d <= 1e-6 * scale.max(1.0),
            "{family}/{name}: sequence {b} batched vs alone differs by {d:e}"
        );
    }
}

/// Q8_0 quantised on load (ggml's quantiser) against transformers' f32 logits: each weight
/// moves by up to half a step, max|block| / 254, about 0.4 percent of the block's largest
/// weight (ten times f16's rounding), which measures up to 4.6e-2 · max|logit| through these
/// tiny models (the GGUF Q8_0 files of tests/gguf.rs, quantised by gguf-py the same way,
/// reach 5.4e-2); the bar is 0.125. Greedy tokens are not compared: a top-2 margin can fall
/// within that error. Rows that are not whole blocks stay f16, as llama.cpp's converter keeps
/// them, and the Q8_0 model must hold fewer weight bytes than half the f32 one's.
pub fn check_q8_0(family: &str, name: &str) {
    check_blocks(family, name, WeightDtype::Q8_0, 0.125);
}

/// Q4_0 quantised on load (ggml's quantiser) against transformers' f32 logits: each weight
/// moves by up to half a step, max|block| / 16 (a whole step on the side opposite the block's
/// largest value, where q clips at 15), about 16 times Q8_0's rounding, which measures 0.27
/// (untied_dconv3) to 0.95 (g1_small) · max|logit| through these tiny models (d_model 32: on
/// models this small 4-bit weights move the logits about as far as their own size; the GGUF
/// Q4_0 files of tests/gguf.rs, whose embedding table is Q4_0 too, reach 1.11); the bar is 2,
/// a margin of 2.1 or more. Greedy tokens are not compared. Rows that are not whole blocks
/// stay f16, and the Q4_0 model must hold fewer weight bytes than half the f32 one's and
/// fewer than the Q8_0 one's.
pub fn check_q4_0(family: &str, name: &str) {
    let q8 = load(family, name, WeightDtype::Q8_0).weight_bytes();
    let q4 = check_blocks(family, name, WeightDtype::Q4_0, 2.0);
    assert!(
        q4 < q8,
        "{family}/{name}: Q4_0 weights ({q4} bytes) not below Q8_0's ({q8})"
    );
}

/// A block format quantised on load: max |Δlogit| against transformers within `bar` ·
/// max|logit|, and fewer weight bytes than half the f32 model's. Returns the weight bytes.
fn check_blocks(family: &str, name: &str, dtype: WeightDtype, bar: f32) -> u64 {
    let m = load(family, name, dtype);
    let f32 = load(family, name, WeightDtype::F32);
    assert!(
        m.weight_bytes() < f32.weight_bytes() / 2,
        "{family}/{name}: {} weights not smaller ({} vs {})",
        dtype.name(),
        m.weight_bytes(),
        f32.weight_bytes()
    );
    for c in cases(family, name) {
        let mut s = m
            .session(&SessionOptions {
                batch: c.batch,
                all_logits: true,
                ..Default::default()
            })
            .unwrap();
        let (d, scale) = max_diff(&s.logits(&c.refs()).unwrap(), &c.logits);
        eprintln!(
            "{family}/{name} {}: max |Δlogit| {d:.3e} of {scale:.2} ({:.2e})",
            dtype.name(),
            d / scale
        );
        assert!(
            d <= bar * scale,
            "{family}/{name}: max |Δlogit| {d:e} > {bar} · {scale}"
        );
    }
    m.weight_bytes()
}
