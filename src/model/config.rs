//! Model configs read from a checkpoint's own `config.json`, in both spellings: Hugging Face's
//! (`MambaConfig`: `hidden_size`, `state_size`, ...) and the original state-spaces one
//! (`d_model`, `n_layer`, `ssm_cfg`, ...).

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};

/// The dimensions and switches of a Mamba-1 model.
#[derive(Clone, Debug, PartialEq)]
pub struct Mamba1Config {
    /// Residual stream width (`hidden_size` / `d_model`).
    pub d_model: usize,
    /// Number of blocks.
    pub n_layer: usize,
    /// Vocabulary size as the config states it (the embedding may be padded past it).
    pub vocab_size: usize,
    /// Embedding rows the state-spaces spelling pads the vocabulary up to a multiple of.
    pub pad_vocab_size_multiple: usize,
    /// SSM state size N per channel (`state_size` / `d_state`).
    pub d_state: usize,
    /// Causal conv taps (`conv_kernel` / `d_conv`).
    pub d_conv: usize,
    /// Inner width (`intermediate_size`, or `expand · d_model`).
    pub d_inner: usize,
    /// Rank of the Δ projection (`time_step_rank` / `dt_rank`; "auto" is ceil(d_model / 16)).
    pub dt_rank: usize,
    /// RMSNorm epsilon.
    pub eps: f32,
    /// in_proj and out_proj have biases.
    pub use_bias: bool,
    /// conv1d has a bias.
    pub use_conv_bias: bool,
    /// lm_head shares the embedding's weights.
    pub tie_embeddings: bool,
    /// End-of-sequence token, where the config names one.
    pub eos_token_id: Option<u32>,
}

fn get<'a>(v: &'a Value, keys: &[&str]) -> Option<&'a Value> {
    keys.iter().find_map(|k| v.get(*k).filter(|x| !x.is_null()))
}

fn err(file: &Path, msg: impl Into<String>) -> Error {
    Error::Config {
        file: file.to_path_buf(),
        msg: msg.into(),
    }
}

fn usize_field(file: &Path, v: &Value, keys: &[&str], default: Option<usize>) -> Result<usize> {
    match get(v, keys) {
        Some(x) => x
            .as_u64()
            .filter(|&n| n > 0 && n <= (1 << 31))
            .map(|n| n as usize)
            .ok_or_else(|| {
                err(
                    file,
                    format!(
                        "`{}` must be a positive integer below 2^31, got {x}",
                        keys[0]
                    ),
                )
            }),
        None => default.ok_or_else(|| err(file, format!("missing `{}`", keys.join("` or `")))),
    }
}

fn bool_field(file: &Path, v: &Value, keys: &[&str], default: bool) -> Result<bool> {
    match get(v, keys) {
        Some(x) => x.as_bool().ok_or_else(|| {
            err(
                file,
                format!("`{}` must be true or false, got {x}", keys[0]),
            )
        }),
        None => Ok(default),
    }
}

/// Which model family a config describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Family {
    /// Mamba-1 (selective scan).
    Mamba1,
    /// Mamba-2 (SSD).
    Mamba2,
}

/// Tells the family from `model_type`, `architectures` or `ssm_cfg.layer`.
pub fn family(file: &Path, v: &Value) -> Result<Family> {
    let model_type = v.get("model_type").and_then(Value::as_str);
    let arch = v
        .get("architectures")
        .and_then(|a| a.get(0))
        .and_then(Value::as_str);
    let layer = v
        .get("ssm_cfg")
        .and_then(|s| s.get("layer"))
        .and_then(Value::as_str);
    // model_type is authoritative where present; the original spelling has none.
    match (model_type, arch, layer) {
        (Some("mamba2"), _, _) => Ok(Family::Mamba2),
        (Some("mamba"), _, _) => Ok(Family::Mamba1),
        (Some(t), _, _) => Err(err(file, format!("model_type `{t}` is not a Mamba model"))),
        (None, Some("Mamba2ForCausalLM"), _) | (None, _, Some("Mamba2")) => Ok(Family::Mamba2),
        (None, Some("MambaForCausalLM"), _) | (None, _, Some("Mamba1")) => Ok(Family::Mamba1),
        (None, None, None) if v.get("d_model").is_some() => Ok(Family::Mamba1),
        _ => Err(err(
            file,
            "cannot tell the model family (no model_type, architectures or ssm_cfg.layer)",
        )),
    }
}

/// The largest config.json read (real ones are about 1 KiB; the text is read whole, so a
/// hostile size is refused before it is allocated).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Widest row any model dimension may have (hidden size, inner width, in_proj output,
/// vocabulary): the kernels index rows with 32-bit integers.
pub const MAX_WIDTH: u128 = 1 << 31;

/// Most elements one weight tensor may have (2^36 f32 values are 256 GiB, past any device):
/// a config that implies more is refused before any size is computed from it.
pub const MAX_TENSOR_ELEMENTS: u128 = 1 << 36;

/// Reads and parses a config.json file.
pub fn read_json(file: &Path) -> Result<Value> {
    let io = |source| Error::Io {
        path: file.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(file).map_err(io)?.len();
    if len > MAX_CONFIG_BYTES {
        return Err(err(
            file,
            format!("{len} bytes: more than the {MAX_CONFIG_BYTES} a config may have"),
        ));
    }
    parse_json(file, &std::fs::read(file).map_err(io)?)
}

/// Parses config.json text; `file` names it in errors.
pub fn parse_json(file: &Path, text: &[u8]) -> Result<Value> {
    serde_json::from_slice(text).map_err(|e| err(file, format!("not valid JSON: {e}")))
}

/// Fails unless every width is at most [`MAX_WIDTH`] and every tensor (rows × columns) at most
/// [`MAX_TENSOR_ELEMENTS`]; sums and products in u128 cannot overflow for inputs below 2^63.
fn check_sizes(file: &Path, widths: &[(&str, u128)], tensors: &[(&str, u128, u128)]) -> Result<()> {
    for &(what, w) in widths {
        if w > MAX_WIDTH {
            return Err(err(
                file,
                format!("{what} is {w}, more than the {MAX_WIDTH} supported"),
            ));
        }
    }
    for &(what, rows, cols) in tensors {
        if rows * cols > MAX_TENSOR_ELEMENTS {
            return Err(err(
                file,
                format!(
                    "{what} would be {rows} × {cols} elements, more than the {MAX_TENSOR_ELEMENTS} supported"
                ),
            ));
        }
    }
    Ok(())
}

impl Mamba1Config {
    /// Parses either spelling. `file` names the config in errors.
    pub fn from_json(file: &Path, v: &Value) -> Result<Self> {
        if !v.is_object() {
            return Err(err(file, "the config is not a JSON object"));
        }
        let ssm = v.get("ssm_cfg").cloned().unwrap_or(Value::Null);
        // Fields live at the top level (HF) or under ssm_cfg (state-spaces).
        let field = |keys: &[&str]| get(v, keys).or_else(|| get(&ssm, keys)).cloned();
        let d_model = usize_field(file, v, &["hidden_size", "d_model"], None)?;
        let n_layer = usize_field(file, v, &["num_hidden_layers", "n_layer"], None)?;
        let vocab_size = usize_field(file, v, &["vocab_size"], None)?;
        let state_spaces = v.get("d_model").is_some() && v.get("hidden_size").is_none();
        let pad = if state_spaces {
            usize_field(file, v, &["pad_vocab_size_multiple"], Some(8))?
        } else {
            1
        };
        let merged = {
            let mut m = serde_json::Map::new();
            for k in [
                "state_size",
                "d_state",
                "conv_kernel",
                "d_conv",
                "expand",
                "intermediate_size",
                "time_step_rank",
                "dt_rank",
                "use_bias",
                "bias",
                "use_conv_bias",
                "conv_bias",
            ] {
                if let Some(x) = field(&[k]) {
                    m.insert(k.to_string(), x);
                }
            }
            Value::Object(m)
        };
        let d_state = usize_field(file, &merged, &["state_size", "d_state"], Some(16))?;
        let d_conv = usize_field(file, &merged, &["conv_kernel", "d_conv"], Some(4))?;
        let expand = usize_field(file, &merged, &["expand"], Some(2))?;
        let d_inner = match get(&merged, &["intermediate_size"]) {
            Some(_) => usize_field(file, &merged, &["intermediate_size"], None)?,
            None => expand
                .checked_mul(d_model)
                .ok_or_else(|| err(file, "expand · d_model overflows"))?,
        };
        let dt_rank = match get(&merged, &["time_step_rank", "dt_rank"]) {
            Some(Value::String(s)) if s == "auto" => d_model.div_ceil(16),
            Some(_) => usize_field(file, &merged, &["time_step_rank", "dt_rank"], None)?,
            None => d_model.div_ceil(16),
        };
        let eps = match get(v, &["layer_norm_epsilon", "norm_epsilon"]) {
            Some(x) => x
                .as_f64()
                .filter(|e| e.is_finite() && *e >= 0.0)
                .ok_or_else(|| {
                    err(
                        file,
                        format!("`layer_norm_epsilon` must be a non-negative number, got {x}"),
                    )
                })? as f32,
            None => 1e-5,
        };
        if let Some(act) = v.get("hidden_act").and_then(Value::as_str) {
            if act != "silu" {
                return Err(err(
                    file,
                    format!("hidden_act `{act}` is not supported (only silu)"),
                ));
            }
        }
        if state_spaces && !bool_field(file, v, &["rms_norm"], true)? {
            return Err(err(file, "rms_norm = false (LayerNorm) is not supported"));
        }
        let eos_token_id = get(v, &["eos_token_id"])
            .and_then(Value::as_u64)
            .and_then(|x| u32::try_from(x).ok());
        let cfg = Self {
            d_model,
            n_layer,
            vocab_size,
            pad_vocab_size_multiple: pad,
            d_state,
            d_conv,
            d_inner,
            dt_rank,
            eps,
            use_bias: bool_field(file, &merged, &["use_bias", "bias"], false)?,
            use_conv_bias: bool_field(file, &merged, &["use_conv_bias", "conv_bias"], true)?,
            tie_embeddings: bool_field(file, v, &["tie_word_embeddings", "tie_embeddings"], true)?,
            eos_token_id,
        };
        cfg.validate(file)?;
        Ok(cfg)
    }

    /// Checks what every config must satisfy however it was read (config.json, GGUF
    /// metadata, code): a conv of 2..=8 taps, and every width and weight tensor within
    /// [`MAX_WIDTH`] and [`MAX_TENSOR_ELEMENTS`], so sizes computed from it cannot overflow.
    /// `file` names the source in errors.
    pub fn validate(&self, file: &Path) -> Result<()> {
        let cfg = self;
        for (what, v) in [
            ("d_model", cfg.d_model),
            ("n_layer", cfg.n_layer),
            ("vocab_size", cfg.vocab_size),
            ("d_state", cfg.d_state),
            ("d_inner", cfg.d_inner),
            ("dt_rank", cfg.dt_rank),
        ] {
            if v == 0 {
                return Err(err(file, format!("{what} is 0")));
            }
        }
        if cfg.d_conv < 2 || cfg.d_conv > 8 {
            return Err(err(
                file,
                format!("conv kernel {} is outside the supported 2..=8", cfg.d_conv),
            ));
        }
        let w = |x: usize| x as u128;
        let padded = w(cfg.vocab_size).next_multiple_of(w(cfg.pad_vocab_size_multiple.max(1)));
        let x_proj_rows = w(cfg.dt_rank) + 2 * w(cfg.d_state);
        check_sizes(
            file,
            &[
                ("d_model", w(cfg.d_model)),
                ("n_layer", w(cfg.n_layer)),
                ("d_inner", w(cfg.d_inner)),
                ("2 · d_inner", 2 * w(cfg.d_inner)),
                ("dt_rank + 2 · d_state", x_proj_rows),
                ("the padded vocabulary", padded),
            ],
            &[
                ("in_proj", 2 * w(cfg.d_inner), w(cfg.d_model)),
                ("x_proj", x_proj_rows, w(cfg.d_inner)),
                ("dt_proj", w(cfg.d_inner), w(cfg.dt_rank)),
                ("A_log", w(cfg.d_inner), w(cfg.d_state)),
                ("the embedding", padded, w(cfg.d_model)),
            ],
        )
    }

    /// The dimensions of a published Mamba-1 checkpoint (`mamba-130m`, `mamba-370m`,
    /// `mamba-790m`, `mamba-1.4b`, `mamba-2.8b`), for benches with random weights.
    pub fn preset(name: &str) -> Option<Self> {
        let (d_model, n_layer) = match name {
            "mamba-130m" => (768, 24),
            "mamba-370m" => (1024, 48),
            "mamba-790m" => (1536, 48),
            "mamba-1.4b" => (2048, 48),
            "mamba-2.8b" => (2560, 64),
            _ => return None,
        };
        Some(Self {
            d_model,
            n_layer,
            vocab_size: 50277,
            pad_vocab_size_multiple: 8,
            d_state: 16,
            d_conv: 4,
            d_inner: 2 * d_model,
            dt_rank: d_model.div_ceil(16),
            eps: 1e-5,
            use_bias: false,
            use_conv_bias: true,
            tie_embeddings: true,
            eos_token_id: Some(0),
        })
    }

    /// Embedding rows the checkpoint should have: the vocabulary padded to the multiple.
    pub fn padded_vocab(&self) -> usize {
        self.vocab_size
            .next_multiple_of(self.pad_vocab_size_multiple.max(1))
    }
}

/// The dimensions and switches of a Mamba-2 model.
#[derive(Clone, Debug, PartialEq)]
pub struct Mamba2Config {
    /// Residual stream width (`hidden_size` / `d_model`).
    pub d_model: usize,
    /// Number of blocks.
    pub n_layer: usize,
    /// Vocabulary size as the config states it.
    pub vocab_size: usize,
    /// Embedding rows the state-spaces spelling pads the vocabulary up to a multiple of.
    pub pad_vocab_size_multiple: usize,
    /// SSM state size N (`state_size` / `d_state`).
    pub d_state: usize,
    /// Causal conv taps.
    pub d_conv: usize,
    /// Inner width, `expand · d_model` = `num_heads · head_dim`.
    pub d_inner: usize,
    /// Heads H.
    pub num_heads: usize,
    /// Channels per head P.
    pub head_dim: usize,
    /// Groups G sharing B and C; head h reads group h / (H / G).
    pub n_groups: usize,
    /// SSD chunk length Q.
    pub chunk_size: usize,
    /// Lower clamp of the step Δ (`time_step_limit[0]`).
    pub dt_min: f32,
    /// Upper clamp of the step Δ (`time_step_limit[1]`; infinite for none).
    pub dt_max: f32,
    /// RMSNorm epsilon (block norms and the gated norm).
    pub eps: f32,
    /// The gated norm normalises before gating (false in every published Mamba-2).
    pub norm_before_gate: bool,
    /// in_proj and out_proj have biases.
    pub use_bias: bool,
    /// conv1d has a bias.
    pub use_conv_bias: bool,
    /// lm_head shares the embedding's weights.
    pub tie_embeddings: bool,
    /// End-of-sequence token, where the config names one.
    pub eos_token_id: Option<u32>,
}

/// A float that JSON may spell as a number, as transformers' `{"__float__": "Infinity"}`, or as
/// the strings "inf"/"Infinity"; `null` reads as `default`.
fn json_float(file: &Path, v: Option<&Value>, what: &str, default: f64) -> Result<f64> {
    let bad = || {
        err(
            file,
            format!(
                "`{what}` is not a number: {}",
                v.map(|x| x.to_string()).unwrap_or_default()
            ),
        )
    };
    let word = |s: &str| match s.trim_start_matches(['+']).to_ascii_lowercase().as_str() {
        "inf" | "infinity" => Some(f64::INFINITY),
        "-inf" | "-infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    };
    match v {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => n.as_f64().ok_or_else(bad),
        Some(Value::String(s)) => word(s).ok_or_else(bad),
        Some(Value::Object(o)) => o
            .get("__float__")
            .and_then(Value::as_str)
            .and_then(word)
            .ok_or_else(bad),
        _ => Err(bad()),
    }
}

impl Mamba2Config {
    /// Parses either spelling (HF `Mamba2Config`, or state-spaces with `ssm_cfg.layer = "Mamba2"`).
    pub fn from_json(file: &Path, v: &Value) -> Result<Self> {
        if !v.is_object() {
            return Err(err(file, "the config is not a JSON object"));
        }
        let ssm = v.get("ssm_cfg").cloned().unwrap_or(Value::Null);
        let state_spaces = v.get("d_model").is_some() && v.get("hidden_size").is_none();
        // Fields live at the top level (HF) or under ssm_cfg (state-spaces).
        let mut m = serde_json::Map::new();
        for src in [&ssm, v] {
            if let Some(o) = src.as_object() {
                for (k, x) in o {
                    m.insert(k.clone(), x.clone());
                }
            }
        }
        let f = Value::Object(m);
        let d_model = usize_field(file, &f, &["hidden_size", "d_model"], None)?;
        let n_layer = usize_field(file, &f, &["num_hidden_layers", "n_layer"], None)?;
        let vocab_size = usize_field(file, &f, &["vocab_size"], None)?;
        let pad = if state_spaces {
            usize_field(file, &f, &["pad_vocab_size_multiple"], Some(8))?
        } else {
            1
        };
        let expand = usize_field(file, &f, &["expand"], Some(2))?;
        let d_inner = expand
            .checked_mul(d_model)
            .ok_or_else(|| err(file, "expand · d_model overflows"))?;
        let head_dim = usize_field(file, &f, &["head_dim", "headdim"], Some(64))?;
        let num_heads = match get(&f, &["num_heads"]) {
            Some(_) => usize_field(file, &f, &["num_heads"], None)?,
            None => d_inner / head_dim,
        };
        if num_heads.checked_mul(head_dim) != Some(d_inner) {
            return Err(err(
                file,
                format!("num_heads {num_heads} × head_dim {head_dim} must equal expand · hidden_size = {d_inner}"),
            ));
        }
        let n_groups = usize_field(file, &f, &["n_groups", "ngroups"], Some(1))?;
        if num_heads % n_groups != 0 {
            return Err(err(
                file,
                format!("n_groups {n_groups} does not divide num_heads {num_heads}"),
            ));
        }
        let limit = get(&f, &["time_step_limit", "dt_limit"]);
        let (lo, hi) = match limit {
            Some(Value::Array(a)) if a.len() == 2 => (
                json_float(file, a.first(), "time_step_limit[0]", 0.0)?,
                json_float(file, a.get(1), "time_step_limit[1]", f64::INFINITY)?,
            ),
            None | Some(Value::Null) => (0.0, f64::INFINITY),
            Some(x) => {
                return Err(err(
                    file,
                    format!("`time_step_limit` must be a pair, got {x}"),
                ))
            }
        };
        if lo.is_nan() || hi.is_nan() || lo > hi || lo < 0.0 {
            return Err(err(
                file,
                format!("`time_step_limit` ({lo}, {hi}) is not an interval of steps ≥ 0"),
            ));
        }
        let eps = json_float(
            file,
            get(&f, &["layer_norm_epsilon", "norm_epsilon"]),
            "layer_norm_epsilon",
            1e-5,
        )?;
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(err(
                file,
                "`layer_norm_epsilon` must be a non-negative number",
            ));
        }
        if !bool_field(file, &f, &["rms_norm", "rmsnorm"], true)? {
            return Err(err(file, "rms_norm = false (LayerNorm) is not supported"));
        }
        if let Some(act) = f.get("hidden_act").and_then(Value::as_str) {
            if act != "silu" {
                return Err(err(
                    file,
                    format!("hidden_act `{act}` is not supported (only silu)"),
                ));
            }
        }
        let cfg = Self {
            d_model,
            n_layer,
            vocab_size,
            pad_vocab_size_multiple: pad,
            d_state: usize_field(file, &f, &["state_size", "d_state"], Some(128))?,
            d_conv: usize_field(file, &f, &["conv_kernel", "d_conv"], Some(4))?,
            d_inner,
            num_heads,
            head_dim,
            n_groups,
            chunk_size: usize_field(file, &f, &["chunk_size"], Some(256))?,
            dt_min: lo as f32,
            dt_max: if hi.is_finite() {
                hi as f32
            } else {
                f32::INFINITY
            },
            eps: eps as f32,
            norm_before_gate: bool_field(file, &f, &["norm_before_gate"], false)?,
            use_bias: bool_field(file, &f, &["use_bias", "bias"], false)?,
            use_conv_bias: bool_field(file, &f, &["use_conv_bias", "conv_bias"], true)?,
            tie_embeddings: bool_field(file, &f, &["tie_word_embeddings", "tie_embeddings"], true)?,
            eos_token_id: get(&f, &["eos_token_id"])
                .and_then(Value::as_u64)
                .and_then(|x| u32::try_from(x).ok()),
        };
        cfg.validate(file)?;
        Ok(cfg)
    }

    /// Checks what every config must satisfy however it was read (config.json, GGUF
    /// metadata, code): heads × head size = inner width, groups dividing heads, a conv of
    /// 2..=8 taps, an interval of steps, and every width and weight tensor within
    /// [`MAX_WIDTH`] and [`MAX_TENSOR_ELEMENTS`], so sizes computed from it (among them
    /// [`Mamba2Config::conv_dim`] and [`Mamba2Config::d_in_proj`]) cannot overflow. `file`
    /// names the source in errors.
    pub fn validate(&self, file: &Path) -> Result<()> {
        let cfg = self;
        for (what, v) in [
            ("d_model", cfg.d_model),
            ("n_layer", cfg.n_layer),
            ("vocab_size", cfg.vocab_size),
            ("d_state", cfg.d_state),
            ("num_heads", cfg.num_heads),
            ("head_dim", cfg.head_dim),
            ("n_groups", cfg.n_groups),
            ("chunk_size", cfg.chunk_size),
        ] {
            if v == 0 {
                return Err(err(file, format!("{what} is 0")));
            }
        }
        let w = |x: usize| x as u128;
        if w(cfg.num_heads) * w(cfg.head_dim) != w(cfg.d_inner) {
            return Err(err(
                file,
                format!(
                    "num_heads {} × head_dim {} must equal the inner width {}",
                    cfg.num_heads, cfg.head_dim, cfg.d_inner
                ),
            ));
        }
        if !cfg.num_heads.is_multiple_of(cfg.n_groups) {
            return Err(err(
                file,
                format!(
                    "n_groups {} does not divide num_heads {}",
                    cfg.n_groups, cfg.num_heads
                ),
            ));
        }
        if cfg.d_conv < 2 || cfg.d_conv > 8 {
            return Err(err(
                file,
                format!("conv kernel {} is outside the supported 2..=8", cfg.d_conv),
            ));
        }
        let steps_ok = cfg.dt_min >= 0.0 && cfg.dt_min <= cfg.dt_max;
        let eps_ok = cfg.eps.is_finite() && cfg.eps >= 0.0;
        if !(steps_ok && eps_ok) {
            return Err(err(
                file,
                format!(
                    "step limits ({}, {}) or epsilon {} out of range",
                    cfg.dt_min, cfg.dt_max, cfg.eps
                ),
            ));
        }
        // Checked before `conv_dim` and `d_in_proj`, whose usize sums could overflow.
        let padded = w(cfg.vocab_size).next_multiple_of(w(cfg.pad_vocab_size_multiple.max(1)));
        let conv_dim = w(cfg.d_inner) + 2 * w(cfg.n_groups) * w(cfg.d_state);
        let d_in_proj = w(cfg.d_inner) + conv_dim + w(cfg.num_heads);
        check_sizes(
            file,
            &[
                ("d_model", w(cfg.d_model)),
                ("n_layer", w(cfg.n_layer)),
                ("d_inner", w(cfg.d_inner)),
                ("conv_dim", conv_dim),
                ("the in_proj width", d_in_proj),
                ("chunk_size", w(cfg.chunk_size)),
                ("the padded vocabulary", padded),
            ],
            &[
                ("in_proj", d_in_proj, w(cfg.d_model)),
                ("the SSM state", w(cfg.d_inner), w(cfg.d_state)),
                ("the embedding", padded, w(cfg.d_model)),
            ],
        )
    }

    /// Embedding rows the checkpoint should have: the vocabulary padded to the multiple.
    pub fn padded_vocab(&self) -> usize {
        self.vocab_size
            .next_multiple_of(self.pad_vocab_size_multiple.max(1))
    }

    /// Channels of the causal conv: x, B and C together.
    pub fn conv_dim(&self) -> usize {
        self.d_inner + 2 * self.n_groups * self.d_state
    }

    /// Output width of in_proj: z, xBC, dt.
    pub fn d_in_proj(&self) -> usize {
        self.d_inner + self.conv_dim() + self.num_heads
    }

    /// The dimensions of a published Mamba-2 checkpoint (`mamba2-130m`, `mamba2-370m`,
    /// `mamba2-780m`, `mamba2-1.3b`, `mamba2-2.7b`), for benches with random weights.
    pub fn preset(name: &str) -> Option<Self> {
        let (d_model, n_layer) = match name {
            "mamba2-130m" => (768, 24),
            "mamba2-370m" => (1024, 48),
            "mamba2-780m" => (1536, 48),
            "mamba2-1.3b" => (2048, 48),
            "mamba2-2.7b" => (2560, 64),
            _ => return None,
        };
        Some(Self {
            d_model,
            n_layer,
            vocab_size: 50277,
            pad_vocab_size_multiple: 16,
            d_state: 128,
            d_conv: 4,
            d_inner: 2 * d_model,
            num_heads: 2 * d_model / 64,
            head_dim: 64,
            n_groups: 1,
            chunk_size: 256,
            dt_min: 0.0,
            dt_max: f32::INFINITY,
            eps: 1e-5,
            norm_before_gate: false,
            use_bias: false,
            use_conv_bias: true,
            tie_embeddings: true,
            eos_token_id: Some(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f() -> &'static Path {
        Path::new("config.json")
    }

    #[test]
    fn mamba1_in_both_spellings() {
        let hf = json!({"model_type": "mamba", "hidden_size": 40, "num_hidden_layers": 3,
            "vocab_size": 250, "state_size": 16, "conv_kernel": 4, "expand": 2,
            "time_step_rank": "auto", "tie_word_embeddings": true});
        let ss = json!({"d_model": 40, "n_layer": 3, "vocab_size": 250,
            "ssm_cfg": {"d_state": 16, "d_conv": 4, "expand": 2}, "pad_vocab_size_multiple": 8});
        assert_eq!(family(f(), &hf).unwrap(), Family::Mamba1);
        assert_eq!(family(f(), &ss).unwrap(), Family::Mamba1);
        let (a, b) = (
            Mamba1Config::from_json(f(), &hf).unwrap(),
            Mamba1Config::from_json(f(), &ss).unwrap(),
        );
        assert_eq!((a.d_inner, a.dt_rank, a.padded_vocab()), (80, 3, 250));
        assert_eq!((b.d_inner, b.dt_rank, b.padded_vocab()), (80, 3, 256));
    }

    #[test]
    fn mamba2_in_both_spellings() {
        let hf = json!({"model_type": "mamba2", "hidden_size": 36, "num_hidden_layers": 2,
            "vocab_size": 150, "head_dim": 12, "num_heads": 6, "n_groups": 2, "state_size": 32,
            "time_step_limit": [0.0, {"__float__": "Infinity"}]});
        let ss = json!({"d_model": 36, "n_layer": 2, "vocab_size": 150,
            "ssm_cfg": {"layer": "Mamba2", "headdim": 12, "ngroups": 2, "d_state": 32}});
        for v in [&hf, &ss] {
            assert_eq!(family(f(), v).unwrap(), Family::Mamba2);
            let c = Mamba2Config::from_json(f(), v).unwrap();
            assert_eq!((c.d_inner, c.num_heads, c.n_groups), (72, 6, 2));
            assert_eq!((c.conv_dim(), c.d_in_proj()), (72 + 128, 72 + 200 + 6));
            assert!(c.dt_max.is_infinite());
        }
    }

    #[test]
    fn sizes_that_overflow_are_refused_before_use() {
        let m1 = |extra: Value| {
            let mut v = json!({"model_type": "mamba", "hidden_size": 32, "num_hidden_layers": 1,
                "vocab_size": 64});
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            Mamba1Config::from_json(f(), &v)
        };
        assert!(m1(json!({})).is_ok());
        for (extra, word) in [
            (
                json!({"hidden_size": 1u64 << 31, "expand": 1u64 << 31}),
                "d_inner",
            ),
            (
                json!({"hidden_size": 1u64 << 31, "intermediate_size": 1 << 20}),
                "in_proj",
            ),
            (
                json!({"vocab_size": 1u64 << 31, "hidden_size": 64}),
                "embedding",
            ),
            (json!({"state_size": 1u64 << 31}), "dt_rank + 2 · d_state"),
            (json!({"state_size": 1u64 << 32}), "state_size"),
            (json!({"conv_kernel": 1}), "conv kernel"),
        ] {
            let e = m1(extra.clone()).unwrap_err().to_string();
            assert!(e.contains(word), "{extra}: {e}");
        }
        let m2 = json!({"model_type": "mamba2", "hidden_size": 1u64 << 31, "expand": 1,
            "num_hidden_layers": 1, "vocab_size": 64, "head_dim": 1u64 << 31, "num_heads": 1,
            "n_groups": 1, "state_size": 1u64 << 31});
        let e = Mamba2Config::from_json(f(), &m2).unwrap_err().to_string();
        assert!(e.contains("conv_dim"), "{e}");
    }

    #[test]
    fn json_text_and_families() {
        assert!(parse_json(f(), b"{\"a\": 1}").is_ok());
        assert!(parse_json(f(), b"{")
            .unwrap_err()
            .to_string()
            .contains("JSON"));
        assert!(parse_json(f(), &[0xff]).is_err());
        let deep = "[".repeat(100_000);
        assert!(
            parse_json(f(), deep.as_bytes()).is_err(),
            "recursion is bounded"
        );
        assert!(family(f(), &json!({"model_type": "llama"})).is_err());
        assert!(family(f(), &json!([])).is_err());
        assert_eq!(
            family(f(), &json!({"architectures": ["Mamba2ForCausalLM"]})).unwrap(),
            Family::Mamba2
        );
    }
}
