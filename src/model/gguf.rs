//! Models from GGUF files as llama.cpp's `convert_hf_to_gguf.py` writes them for the `mamba`
//! and `mamba2` architectures, mapped onto the Hugging Face names and shapes the model loaders
//! read ([`GgufWeights`] is a [`WeightSource`]).
//!
//! What the converter does to a checkpoint, and what this module undoes:
//!
//! | HF tensor | GGUF tensor | stored as |
//! | --- | --- | --- |
//! | `backbone.embeddings.weight` | `token_embd.weight` | as is |
//! | `lm_head.weight` | `output.weight` | absent when tied to the embedding |
//! | `backbone.norm_f.weight` | `output_norm.weight` | f32 |
//! | `layers.N.norm.weight` | `blk.N.attn_norm.weight` | f32 |
//! | `mixer.in_proj.{weight,bias}` | `blk.N.ssm_in.{weight,bias}` | as is |
//! | `mixer.conv1d.weight` `[C, 1, K]` | `blk.N.ssm_conv1d.weight` | squeezed to `[C, K]`, f32 |
//! | `mixer.x_proj.weight` (Mamba-1) | `blk.N.ssm_x.weight` | as is |
//! | `mixer.dt_proj.{weight,bias}` (Mamba-1) | `blk.N.ssm_dt.{weight,bias}` | as is |
//! | `mixer.dt_bias` (Mamba-2) | `blk.N.ssm_dt.bias` | f32 |
//! | `mixer.A_log` | `blk.N.ssm_a` | **A = −exp(A_log)**, f32 (Mamba-2: `[H, 1]`) |
//! | `mixer.D` | `blk.N.ssm_d` | f32 (Mamba-2: `[H, 1]`) |
//! | `mixer.norm.weight` (Mamba-2) | `blk.N.ssm_norm.weight` | grouped `[G, d_inner / G]`, f32 |
//! | `mixer.out_proj.{weight,bias}` | `blk.N.ssm_out.{weight,bias}` | as is |
//!
//! "As is" is the file's type: F32, F16, BF16, Q8_0 or Q4_0 (a matrix whose row length is not
//! a multiple of 32 is kept in F16 in a Q8_0 or Q4_0 file). Shapes are compared in row-major
//! order (ggml's `ne` reversed) with size-1 dimensions ignored, as for safetensors. A is turned
//! back into A_log = ln(−A) in f64, which the scan kernels read.
//!
//! The dimensions come from the metadata (`{arch}.embedding_length`, `.block_count`,
//! `.ssm.conv_kernel`, `.ssm.inner_size`, `.ssm.state_size`, `.ssm.time_step_rank` — the head
//! count for Mamba-2 —, `.ssm.group_count`, `.attention.layer_norm_rms_epsilon`), the
//! vocabulary from the embedding's rows, biases and tying from which tensors are present, and
//! the end-of-sequence token from `tokenizer.ggml.eos_token_id`.
//!
//! **Mamba-2's `time_step_limit` is not in GGUF**: the converter has no key for it, and
//! llama.cpp applies no clamp to Δ. A Mamba-2 GGUF therefore runs unclamped (`dt_min` 0,
//! `dt_max` ∞), as llama.cpp runs it; a checkpoint whose config sets a finite limit gives
//! slightly different logits from its safetensors folder. Neither is the SSD chunk length
//! stored; it changes only the summation order, and 256 (the published models') is used.
//!
//! A Q8_0 or Q4_0 matrix goes to the GPU as its blocks, repacked to whole u32 words
//! ([`crate::kernels::gemv_q8_0::repack_q8_0`], [`crate::kernels::gemv_q4_0::repack_q4_0`]),
//! and the dequantising GEMV (`gemv_q8_0`, `gemv_q4_0`) reads them for prefill and decode,
//! whatever [`LoadOptions::dtype`] asks (widening would cost memory for the same values).
//! Where an f32 copy is needed it is dequantised on load: the embedding table
//! (the gather reads f32 rows), which a tied lm_head shares unless it gets its own copy (then
//! the blocks again).

use std::path::Path;
use std::sync::Arc;

use crate::context::GpuContext;
use crate::error::{Error, Result};
use crate::gguf::{GgmlType, Gguf, MAGIC};
use crate::kernels::gemv_q4_0::repack_q4_0;
use crate::kernels::gemv_q8_0::repack_q8_0;
use crate::model::config::{Family, Mamba1Config, Mamba2Config};
use crate::model::weights::{ProgressFn, WeightSource, WithProgress};
use crate::model::{LoadOptions, Mamba1, Mamba2, Model};

/// The SSD chunk length a Mamba-2 GGUF runs with (the file does not store one).
pub const MAMBA2_CHUNK_SIZE: usize = 256;

/// Whether `path` should be read as GGUF: its extension is `.gguf` (any case), or it is a file
/// that starts with the GGUF magic.
pub fn is_gguf(path: &Path) -> bool {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        return true;
    }
    if !path.is_file() {
        return false;
    }
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok()
        && magic == MAGIC
}

fn bad(g: &Gguf, msg: impl Into<String>) -> Error {
    Error::Checkpoint {
        file: g.path().to_path_buf(),
        tensor: None,
        msg: msg.into(),
    }
}

/// The family `general.architecture` names (`mamba` or `mamba2`).
pub fn family(g: &Gguf) -> Result<Family> {
    match g.str("general.architecture")? {
        "mamba" => Ok(Family::Mamba1),
        "mamba2" => Ok(Family::Mamba2),
        other => Err(bad(
            g,
            format!("architecture `{other}` is not supported (mamba, mamba2)"),
        )),
    }
}

fn arch(family: &Family) -> &'static str {
    match family {
        Family::Mamba1 => "mamba",
        Family::Mamba2 => "mamba2",
    }
}

/// A dimension from the metadata: a positive integer below 2^31 (as config.json's are).
fn dim(g: &Gguf, key: &str) -> Result<usize> {
    let v = g.u64(key)?;
    if v == 0 || v > 1 << 31 {
        return Err(bad(
            g,
            format!("`{key}` must be a positive integer below 2^31, got {v}"),
        ));
    }
    Ok(v as usize)
}

/// The parts both families read the same way.
struct Common {
    d_model: usize,
    n_layer: usize,
    d_conv: usize,
    d_inner: usize,
    d_state: usize,
    time_step_rank: usize,
    eps: f32,
    vocab: usize,
    use_bias: bool,
    use_conv_bias: bool,
    tie_embeddings: bool,
    eos_token_id: Option<u32>,
}

fn common(g: &Gguf, family: Family) -> Result<Common> {
    let found = self::family(g)?;
    if found != family {
        return Err(bad(
            g,
            format!("architecture `{}`, not `{}`", arch(&found), arch(&family)),
        ));
    }
    let a = arch(&family);
    let key = |k: &str| format!("{a}.{k}");
    let eps_key = key("attention.layer_norm_rms_epsilon");
    let eps = if g.contains_key(&eps_key) {
        let e = g.f32(&eps_key)?;
        if !(e.is_finite() && e >= 0.0) {
            return Err(bad(
                g,
                format!("`{eps_key}` must be a non-negative number, got {e}"),
            ));
        }
        e
    } else {
        1e-5
    };
    let emb = g
        .tensor("token_embd.weight")
        .ok_or_else(|| Error::tensor(g.path(), "token_embd.weight", "missing tensor"))?;
    let vocab = emb.shape.first().copied().unwrap_or(0);
    let eos_token_id = if g.contains_key("tokenizer.ggml.eos_token_id") {
        Some(g.u32("tokenizer.ggml.eos_token_id")?)
    } else {
        None
    };
    let c = Common {
        d_model: dim(g, &key("embedding_length"))?,
        n_layer: dim(g, &key("block_count"))?,
        d_conv: dim(g, &key("ssm.conv_kernel"))?,
        d_inner: dim(g, &key("ssm.inner_size"))?,
        d_state: dim(g, &key("ssm.state_size"))?,
        time_step_rank: dim(g, &key("ssm.time_step_rank"))?,
        eps,
        vocab,
        // llama.cpp's graphs read no in/out-projection biases; a converted checkpoint that
        // had them carries them under the mapped names, and they are used when present.
        use_bias: g.tensor("blk.0.ssm_in.bias").is_some(),
        use_conv_bias: g.tensor("blk.0.ssm_conv1d.bias").is_some(),
        tie_embeddings: g.tensor("output.weight").is_none(),
        eos_token_id,
    };
    if c.d_conv < 2 || c.d_conv > 8 {
        return Err(bad(
            g,
            format!("conv kernel {} is outside the supported 2..=8", c.d_conv),
        ));
    }
    Ok(c)
}

/// A Mamba-1 config from a `mamba` GGUF's metadata.
pub fn mamba1_config(g: &Gguf) -> Result<Mamba1Config> {
    let c = common(g, Family::Mamba1)?;
    let dbc_key = "mamba.ssm.dt_b_c_rms";
    if g.contains_key(dbc_key) && g.bool(dbc_key)? {
        return Err(bad(
            g,
            "`mamba.ssm.dt_b_c_rms` is set (Falcon-Mamba's RMSNorm of dt, B and C): not supported",
        ));
    }
    let cfg = Mamba1Config {
        d_model: c.d_model,
        n_layer: c.n_layer,
        vocab_size: c.vocab,
        pad_vocab_size_multiple: 1,
        d_state: c.d_state,
        d_conv: c.d_conv,
        d_inner: c.d_inner,
        dt_rank: c.time_step_rank,
        eps: c.eps,
        use_bias: c.use_bias,
        use_conv_bias: c.use_conv_bias,
        tie_embeddings: c.tie_embeddings,
        eos_token_id: c.eos_token_id,
    };
    // The same size limits as config.json: no width or tensor a file can claim overflows
    // the arithmetic that sizes buffers (found by the gguf fuzz target).
    cfg.validate(g.path())?;
    Ok(cfg)
}

/// A Mamba-2 config from a `mamba2` GGUF's metadata. `ssm.time_step_rank` is the head count;
/// the head size is `d_inner` / heads. No Δ clamp (GGUF stores no `time_step_limit`) and an
/// SSD chunk of [`MAMBA2_CHUNK_SIZE`]: see the module docs.
pub fn mamba2_config(g: &Gguf) -> Result<Mamba2Config> {
    let c = common(g, Family::Mamba2)?;
    let num_heads = c.time_step_rank;
    if c.d_inner % num_heads != 0 {
        return Err(bad(
            g,
            format!(
                "ssm.inner_size {} is not a multiple of the head count (ssm.time_step_rank) {num_heads}",
                c.d_inner
            ),
        ));
    }
    let n_groups = if g.contains_key("mamba2.ssm.group_count") {
        dim(g, "mamba2.ssm.group_count")?
    } else {
        1
    };
    if num_heads % n_groups != 0 {
        return Err(bad(
            g,
            format!("ssm.group_count {n_groups} does not divide the head count {num_heads}"),
        ));
    }
    let cfg = Mamba2Config {
        d_model: c.d_model,
        n_layer: c.n_layer,
        vocab_size: c.vocab,
        pad_vocab_size_multiple: 1,
        d_state: c.d_state,
        d_conv: c.d_conv,
        d_inner: c.d_inner,
        num_heads,
        head_dim: c.d_inner / num_heads,
        n_groups,
        chunk_size: MAMBA2_CHUNK_SIZE,
        dt_min: 0.0,
        dt_max: f32::INFINITY,
        eps: c.eps,
        norm_before_gate: false,
        use_bias: c.use_bias,
        use_conv_bias: c.use_conv_bias,
        tie_embeddings: c.tie_embeddings,
        eos_token_id: c.eos_token_id,
    };
    cfg.validate(g.path())?;
    Ok(cfg)
}

/// How a GGUF tensor's values and shape relate to the HF tensor's.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Same values, same shape up to size-1 dimensions.
    Plain,
    /// The depthwise conv: `[C, K]` in the file, `[C, 1, K]` in HF.
    Conv,
    /// A = −exp(A_log) in the file; A_log = ln(−A).
    NegExp,
    /// Same values in another shape of the same size (Mamba-2's `[H, 1]` A and D, the grouped
    /// norm `[G, d_inner / G]`): HF's is the flat `[n]`.
    Flat,
}

/// A GGUF file's tensors under their Hugging Face names and shapes, as f32.
pub struct GgufWeights<'a> {
    g: &'a Gguf,
    family: Family,
}

impl<'a> GgufWeights<'a> {
    /// The weights of `g`, a file of `family`.
    pub fn new(g: &'a Gguf, family: Family) -> Self {
        Self { g, family }
    }

    /// The GGUF tensor behind an HF name, and how it was transformed.
    fn map(&self, hf: &str) -> Option<(String, Kind)> {
        let plain = |s: &str| Some((s.to_string(), Kind::Plain));
        match hf {
            "backbone.embeddings.weight" | "backbone.embedding.weight" => {
                return plain("token_embd.weight")
            }
            "lm_head.weight" => return plain("output.weight"),
            "backbone.norm_f.weight" => return plain("output_norm.weight"),
            _ => {}
        }
        let rest = hf.strip_prefix("backbone.layers.")?;
        let (i, rest) = rest.split_once('.')?;
        let i: usize = i.parse().ok()?;
        if rest == "norm.weight" {
            return Some((format!("blk.{i}.attn_norm.weight"), Kind::Plain));
        }
        let m = rest.strip_prefix("mixer.")?;
        let mamba2 = self.family == Family::Mamba2;
        let (name, kind) = match m {
            "in_proj.weight" => ("ssm_in.weight", Kind::Plain),
            "in_proj.bias" => ("ssm_in.bias", Kind::Plain),
            "conv1d.weight" => ("ssm_conv1d.weight", Kind::Conv),
            "conv1d.bias" => ("ssm_conv1d.bias", Kind::Plain),
            "x_proj.weight" if !mamba2 => ("ssm_x.weight", Kind::Plain),
            "dt_proj.weight" if !mamba2 => ("ssm_dt.weight", Kind::Plain),
            "dt_proj.bias" if !mamba2 => ("ssm_dt.bias", Kind::Plain),
            "dt_bias" if mamba2 => ("ssm_dt.bias", Kind::Plain),
            "A_log" => ("ssm_a", Kind::NegExp),
            "D" => ("ssm_d", if mamba2 { Kind::Flat } else { Kind::Plain }),
            "norm.weight" if mamba2 => ("ssm_norm.weight", Kind::Flat),
            "out_proj.weight" => ("ssm_out.weight", Kind::Plain),
            "out_proj.bias" => ("ssm_out.bias", Kind::Plain),
            _ => return None,
        };
        Some((format!("blk.{i}.{name}"), kind))
    }

    fn mapped(&self, hf: &str) -> Result<(String, Kind)> {
        self.map(hf)
            .filter(|(g, _)| self.g.tensor(g).is_some())
            .ok_or_else(|| {
                let name = self.map(hf).map(|(g, _)| g).unwrap_or_default();
                Error::tensor(
                    self.g.path(),
                    if name.is_empty() {
                        hf.to_string()
                    } else {
                        name
                    },
                    format!("missing tensor (the GGUF name of {hf})"),
                )
            })
    }

    /// `name`'s blocks repacked by `repack` into a kernel's words when the file stores it
    /// plainly as `dtype` (a block type), checked against `[rows, cols]`; `None` otherwise.
    fn block_words(
        &self,
        name: &str,
        rows: usize,
        cols: usize,
        dtype: GgmlType,
        repack: fn(&[u8], usize, usize) -> Result<Vec<u32>>,
    ) -> Option<Result<Vec<u32>>> {
        let (g, kind) = self.map(name)?;
        let t = self.g.tensor(&g)?;
        if kind != Kind::Plain || t.dtype != dtype {
            return None;
        }
        Some((|| {
            if squeeze(&t.shape) != squeeze(&[rows, cols]) {
                return Err(Error::tensor(
                    self.g.path(),
                    &g,
                    format!(
                        "shape {:?} but the metadata implies [{rows}, {cols}]",
                        t.shape
                    ),
                ));
            }
            let bytes = self.g.tensor_bytes(&g)?;
            repack(bytes, rows, cols).map_err(|e| Error::tensor(self.g.path(), &g, e.to_string()))
        })())
    }
}

fn squeeze(s: &[usize]) -> Vec<usize> {
    s.iter().copied().filter(|&d| d != 1).collect()
}

impl WeightSource for GgufWeights<'_> {
    fn contains(&self, name: &str) -> bool {
        self.map(name)
            .is_some_and(|(g, _)| self.g.tensor(&g).is_some())
    }

    fn shape(&self, name: &str) -> Result<Vec<usize>> {
        let (g, kind) = self.mapped(name)?;
        let s = self
            .g
            .tensor(&g)
            .map(|t| t.shape.clone())
            .unwrap_or_default();
        Ok(match kind {
            Kind::Plain => s,
            Kind::Conv if s.len() == 2 => vec![s[0], 1, s[1]],
            Kind::Conv => s,
            // Mamba-1's A is [d_inner, d_state]; Mamba-2's [H, 1] is flat in HF.
            Kind::NegExp if self.family == Family::Mamba2 => vec![s.iter().product()],
            Kind::NegExp => s,
            Kind::Flat => vec![s.iter().product()],
        })
    }

    fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (g, kind) = self.mapped(name)?;
        let have = self.shape(name)?;
        if squeeze(&have) != squeeze(shape) {
            return Err(Error::tensor(
                self.g.path(),
                g,
                format!("shape {have:?} (as {name}) but the metadata implies {shape:?}"),
            ));
        }
        let mut v = self.g.tensor_f32(&g)?;
        if kind == Kind::NegExp {
            for (i, x) in v.iter_mut().enumerate() {
                // A = −exp(A_log) < 0, so ln(−A) is defined; f64 keeps the round trip exact
                // to the last bit of A_log.
                let a_log = (-(*x as f64)).ln() as f32;
                if !(*x < 0.0 && a_log.is_finite()) {
                    return Err(Error::tensor(
                        self.g.path(),
                        g,
                        format!(
                            "element {i} is {x}: A is stored as −exp(A_log) and must be negative and of normal size"
                        ),
                    ));
                }
                *x = a_log;
            }
        }
        Ok(v)
    }

    fn file_of(&self, _name: &str) -> std::path::PathBuf {
        self.g.path().to_path_buf()
    }

    fn q8_0_words(&self, name: &str, rows: usize, cols: usize) -> Option<Result<Vec<u32>>> {
        self.block_words(name, rows, cols, GgmlType::Q8_0, repack_q8_0)
    }

    fn q4_0_words(&self, name: &str, rows: usize, cols: usize) -> Option<Result<Vec<u32>>> {
        self.block_words(name, rows, cols, GgmlType::Q4_0, repack_q4_0)
    }
}

/// Loads a GGUF file of either family (memory-mapped), its weights stored as `options` asks.
pub fn load(ctx: Arc<GpuContext>, path: &Path, options: &LoadOptions) -> Result<Model> {
    let g = Gguf::open(path)?;
    from_gguf(ctx, &g, options)
}

/// Builds the model a parsed GGUF file describes.
pub fn from_gguf(ctx: Arc<GpuContext>, g: &Gguf, options: &LoadOptions) -> Result<Model> {
    from_gguf_with(ctx, g, options, None)
}

/// [`from_gguf`], reporting each tensor read to `progress`.
pub fn from_gguf_with(
    ctx: Arc<GpuContext>,
    g: &Gguf,
    options: &LoadOptions,
    progress: Option<ProgressFn<'_>>,
) -> Result<Model> {
    let fam = family(g)?;
    let src = GgufWeights::new(g, fam.clone());
    match fam {
        Family::Mamba1 => {
            let cfg = mamba1_config(g)?;
            let wrapped;
            let s: &dyn WeightSource = match progress {
                Some(p) => {
                    wrapped = WithProgress::new(&src, &Mamba1::tensor_shapes(&cfg), p);
                    &wrapped
                }
                None => &src,
            };
            Ok(Model::Mamba1(Mamba1::from_source_with(
                ctx, cfg, s, options,
            )?))
        }
        Family::Mamba2 => {
            let cfg = mamba2_config(g)?;
            let wrapped;
            let s: &dyn WeightSource = match progress {
                Some(p) => {
                    wrapped = WithProgress::new(&src, &Mamba2::tensor_shapes(&cfg), p);
                    &wrapped
                }
                None => &src,
            };
            Ok(Model::Mamba2(Mamba2::from_source_with(
                ctx, cfg, s, options,
            )?))
        }
    }
}
