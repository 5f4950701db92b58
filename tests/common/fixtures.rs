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
