//! Where a model's weights come from: a checkpoint on disk, or seeded random values of the
//! right shapes (benches of real model dimensions without downloading anything).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::error::{Error, Result};
use crate::model::checkpoint::Checkpoint;

/// A source of named f32 tensors.
pub trait WeightSource {
    /// Whether the source holds `name`.
    fn contains(&self, name: &str) -> bool;
    /// The shape of `name`.
    fn shape(&self, name: &str) -> Result<Vec<usize>>;
    /// `name` as f32, checked against `shape` (size-1 dimensions ignored) and for finiteness.
    fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>>;
    /// The file to name in errors about `name`.
    fn file_of(&self, name: &str) -> PathBuf;
    /// `name` as Q8_0 blocks in [`crate::kernels::gemv_q8_0::repack_q8_0`]'s words, when the
    /// source stores it so (a GGUF file's Q8_0 tensor, `[rows, cols]`); `None` otherwise.
    fn q8_0_words(&self, _name: &str, _rows: usize, _cols: usize) -> Option<Result<Vec<u32>>> {
        None
    }
    /// `name` as Q4_0 blocks in [`crate::kernels::gemv_q4_0::repack_q4_0`]'s words, when the
    /// source stores it so (a GGUF file's Q4_0 tensor, `[rows, cols]`); `None` otherwise.
    fn q4_0_words(&self, _name: &str, _rows: usize, _cols: usize) -> Option<Result<Vec<u32>>> {
        None
    }
}

impl WeightSource for Checkpoint {
    fn contains(&self, name: &str) -> bool {
        Checkpoint::contains(self, name)
    }
    fn shape(&self, name: &str) -> Result<Vec<usize>> {
        Checkpoint::shape(self, name)
    }
    fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        Checkpoint::f32(self, name, shape)
    }
    fn file_of(&self, name: &str) -> PathBuf {
        Checkpoint::file_of(self, name)
    }
}

/// How far a load has got, reported after each tensor is read.
#[derive(Clone, Copy, Debug)]
pub struct LoadProgress<'a> {
    /// The tensor just read (HF name).
    pub tensor: &'a str,
    /// Tensors read so far.
    pub tensors: usize,
    /// Values read so far, at most `values_total` (a tied head's copy is not counted twice).
    pub values: u64,
    /// Values of every tensor the model reads.
    pub values_total: u64,
}

/// The callback [`crate::Model::load_with_progress`] reports to.
pub type ProgressFn<'a> = &'a (dyn Fn(&LoadProgress<'_>) + Sync);

/// A [`WeightSource`] that reports every tensor read from `inner` to a callback.
pub struct WithProgress<'a> {
    inner: &'a dyn WeightSource,
    total: u64,
    values: AtomicU64,
    tensors: AtomicUsize,
    progress: ProgressFn<'a>,
}

impl<'a> WithProgress<'a> {
    /// Wraps `inner`; `shapes` are the tensors the model will read (for the total).
    pub fn new(
        inner: &'a dyn WeightSource,
        shapes: &HashMap<String, Vec<usize>>,
        progress: ProgressFn<'a>,
    ) -> Self {
        let total = shapes
            .values()
            .map(|s| s.iter().product::<usize>() as u64)
            .sum();
        Self {
            inner,
            total,
            values: AtomicU64::new(0),
            tensors: AtomicUsize::new(0),
            progress,
        }
    }

    fn report(&self, name: &str, n: u64) {
        let values = (self.values.fetch_add(n, Ordering::Relaxed) + n).min(self.total);
        let tensors = self.tensors.fetch_add(1, Ordering::Relaxed) + 1;
        (self.progress)(&LoadProgress {
            tensor: name,
            tensors,
            values,
            values_total: self.total,
        });
    }
}

impl WeightSource for WithProgress<'_> {
    fn contains(&self, name: &str) -> bool {
        self.inner.contains(name)
    }
    fn shape(&self, name: &str) -> Result<Vec<usize>> {
        self.inner.shape(name)
    }
    fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let v = self.inner.f32(name, shape)?;
        self.report(name, v.len() as u64);
        Ok(v)
    }
    fn file_of(&self, name: &str) -> PathBuf {
        self.inner.file_of(name)
    }
    fn q8_0_words(&self, name: &str, rows: usize, cols: usize) -> Option<Result<Vec<u32>>> {
        let w = self.inner.q8_0_words(name, rows, cols)?;
        if w.is_ok() {
            self.report(name, (rows * cols) as u64);
        }
        Some(w)
    }
    fn q4_0_words(&self, name: &str, rows: usize, cols: usize) -> Option<Result<Vec<u32>>> {
        let w = self.inner.q4_0_words(name, rows, cols)?;
        if w.is_ok() {
            self.report(name, (rows * cols) as u64);
        }
        Some(w)
    }
}

/// Seeded random weights for a given set of names and shapes, with magnitudes like a trained
/// Mamba's so activations stay in range: Linear and conv weights uniform in ±1/√fan_in, norm
/// weights 1, `A_log` = log(uniform 1..16), `D` 1, `dt_bias`/`dt_proj.bias` the inverse
/// softplus of a step in [0.001, 0.1], embeddings uniform ±0.1.
pub struct RandomWeights {
    shapes: HashMap<String, Vec<usize>>,
    seed: u64,
}

impl RandomWeights {
    /// A source holding exactly `shapes`.
    pub fn new(shapes: HashMap<String, Vec<usize>>, seed: u64) -> Self {
        Self { shapes, seed }
    }
}

/// splitmix64: a counter-based generator, so every tensor's values depend only on the seed and
/// its name.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl WeightSource for RandomWeights {
    fn contains(&self, name: &str) -> bool {
        self.shapes.contains_key(name)
    }
    fn shape(&self, name: &str) -> Result<Vec<usize>> {
        self.shapes
            .get(name)
            .cloned()
            .ok_or_else(|| Error::tensor(self.file_of(name), name, "missing tensor"))
    }
    fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let have = self.shape(name)?;
        let n: usize = shape.iter().product();
        if have.iter().product::<usize>() != n {
            return Err(Error::tensor(
                self.file_of(name),
                name,
                format!("shape {have:?} but asked for {shape:?}"),
            ));
        }
        let key = name.bytes().fold(self.seed, |h, b| splitmix(h ^ b as u64));
        let uniform = |i: usize| {
            (splitmix(key ^ (i as u64).wrapping_mul(0xA24B_AED4_963E_E407)) >> 40) as f32
                / (1u64 << 24) as f32
        };
        let fan_in = *have.last().unwrap_or(&1) as f32;
        let v = if name.ends_with("A_log") {
            (0..n).map(|i| (1.0 + 15.0 * uniform(i)).ln()).collect()
        } else if name.ends_with(".D")
            || name.ends_with("norm.weight")
            || name.ends_with("norm_f.weight")
        {
            vec![1.0; n]
        } else if name.ends_with("dt_bias") || name.ends_with("dt_proj.bias") {
            // softplus⁻¹(dt) = dt + ln(1 - e^{-dt}) for dt log-uniform in [0.001, 0.1].
            (0..n)
                .map(|i| {
                    let dt = (0.001f32.ln() + uniform(i) * (0.1f32.ln() - 0.001f32.ln())).exp();
                    dt + (-(-dt).exp_m1()).ln()
                })
                .collect()
        } else if name.contains("embedding") {
            (0..n).map(|i| 0.2 * uniform(i) - 0.1).collect()
        } else {
            let bound = 1.0 / fan_in.sqrt();
            (0..n).map(|i| bound * (2.0 * uniform(i) - 1.0)).collect()
        };
        Ok(v)
    }
    fn file_of(&self, _name: &str) -> PathBuf {
        PathBuf::from("<random weights>")
    }
}
