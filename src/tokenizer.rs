//! Text to token ids and back through a Hugging Face `tokenizer.json`, or the byte-level BPE
//! vocabulary and merges inside a GGUF file (the `tokenizers` crate; behind the `tokenizer`
//! feature so that embedders who tokenize themselves stay light).

use std::path::Path;

use crate::error::{Error, Result};
use crate::gguf::Gguf;

/// The largest `tokenizer.json` read (big vocabularies make ~20 MiB; the text is read whole,
/// so a hostile size is refused before it is allocated).
pub const MAX_TOKENIZER_BYTES: u64 = 256 << 20;

/// A tokenizer loaded from a checkpoint folder's `tokenizer.json` or a GGUF file.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab", &self.inner.get_vocab_size(true))
            .finish()
    }
}

impl Tokenizer {
    /// Loads `dir/tokenizer.json`; `Ok(None)` when the folder has none.
    pub fn from_dir(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Ok(None);
        }
        let io = |e: std::io::Error| Error::Io {
            path: path.clone(),
            source: e,
        };
        let len = std::fs::metadata(&path).map_err(io)?.len();
        if len > MAX_TOKENIZER_BYTES {
            return Err(Error::Tokenizer(format!(
                "{}: {len} bytes, more than the {MAX_TOKENIZER_BYTES} a tokenizer.json may have",
                path.display()
            )));
        }
        let bytes = std::fs::read(&path).map_err(io)?;
        Self::from_bytes(&bytes)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))
            .map(Some)
    }

    /// Parses the text of a `tokenizer.json`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        // `tokenizers` panics (`expect("Helper")`) when the text inside its nested objects is
        // not valid JSON (a non-string key, invalid UTF-8 in a string, found by fuzzing): parse
        // the whole text first, so malformed JSON is an error, and build the tokenizer from
        // the parsed tree, where no syntax error can remain.
        let tree: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::Tokenizer(format!("not valid JSON: {e}")))?;
        let inner =
            guarded(|| serde_json::from_value::<tokenizers::Tokenizer>(tree).map_err(Into::into))?;
        Ok(Self { inner })
    }

    /// Token ids of `text` (no special tokens added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = guarded(|| self.inner.encode(text, false))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens skipped; ids the vocabulary lacks are skipped too.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        // With nothing left to decode, `tokenizers`' BPE decoder computes `len - 1` on an
        // empty list (a panic in debug builds): answer the empty string ourselves.
        let added = self.inner.get_added_vocabulary();
        let any = ids.iter().any(|&id| {
            self.inner
                .id_to_token(id)
                .is_some_and(|t| !added.is_special_token(&t))
        });
        if !any {
            return Ok(String::new());
        }
        guarded(|| self.inner.decode(ids, true))
    }
}

/// Runs a `tokenizers` call, turning its errors, and any panic inside it (a hostile
/// tokenizer.json may reach one of its unchecked paths), into [`Error::Tokenizer`].
fn guarded<T>(f: impl FnOnce() -> tokenizers::Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(|e| Error::Tokenizer(e.to_string())),
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(Error::Tokenizer(format!(
                "the tokenizers crate panicked on this tokenizer: {what}"
            )))
        }
    }
}

/// `tokenizer.ggml.pre` values whose pre-tokenizer is GPT-2's byte-level regex, the one
/// GPT-NeoX (Mamba's tokenizer) uses; llama.cpp's converter names GPT-NeoX's `olmo`.
const GPT2_STYLE_PRE: &[&str] = &["default", "gpt-2", "gpt2", "olmo"];

/// llama.cpp's token types (`tokenizer.ggml.token_type`): control tokens are special.
const TOKEN_TYPE_CONTROL: i64 = 3;
/// A user-defined added token (matched whole in the input, not special).
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

impl Tokenizer {
    /// Builds the tokenizer a GGUF file carries: a byte-level BPE (`tokenizer.ggml.model` =
    /// `gpt2`, as the converter writes for GPT-NeoX-style tokenizers) from
    /// `tokenizer.ggml.tokens` (id = position) and `tokenizer.ggml.merges` (`"left right"`,
    /// highest priority first), with GPT-2's byte-level pre-tokenizer (no prefix space) and
    /// decoder. Control tokens (`tokenizer.ggml.token_type` 3) become special tokens (matched
    /// whole in the input, skipped by [`Tokenizer::decode`]); user-defined ones (4) added
    /// tokens. No normalizer, as llama.cpp applies none.
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let err = |m: String| Error::Tokenizer(format!("{}: {m}", g.path().display()));
        let model = g
            .str("tokenizer.ggml.model")
            .map_err(|e| err(e.to_string()))?;
        if model != "gpt2" {
            return Err(err(format!(
                "tokenizer.ggml.model `{model}` is not supported (only gpt2, byte-level BPE)"
            )));
        }
        if g.contains_key("tokenizer.ggml.pre") {
            let pre = g
                .str("tokenizer.ggml.pre")
                .map_err(|e| err(e.to_string()))?;
            if !GPT2_STYLE_PRE.contains(&pre) {
                return Err(err(format!(
                    "tokenizer.ggml.pre `{pre}` is not supported (GPT-2 style: {})",
                    GPT2_STYLE_PRE.join(", ")
                )));
            }
        }
        let tokens = g
            .str_array("tokenizer.ggml.tokens")
            .map_err(|e| err(e.to_string()))?;
        if tokens.len() > u32::MAX as usize {
            return Err(err(format!("{} tokens do not fit u32 ids", tokens.len())));
        }
        let mut vocab = tokenizers::models::bpe::Vocab::default();
        for (id, t) in tokens.iter().enumerate() {
            if vocab.insert(t.to_string(), id as u32).is_some() {
                return Err(err(format!(
                    "token {id} `{t}` appears twice in the vocabulary"
                )));
            }
        }
        let merges = if g.contains_key("tokenizer.ggml.merges") {
            g.str_array("tokenizer.ggml.merges")
                .map_err(|e| err(e.to_string()))?
        } else {
            Vec::new()
        };
        let merges = merges
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let (a, b) = m
                    .split_once(' ')
                    .filter(|(a, b)| !a.is_empty() && !b.is_empty() && !b.contains(' '))
                    .ok_or_else(|| err(format!("merge {i} `{m}` is not two tokens")))?;
                for t in [a, b] {
                    if !vocab.contains_key(t) {
                        return Err(err(format!(
                            "merge {i} `{m}`: `{t}` is not in the vocabulary"
                        )));
                    }
                }
                Ok((a.to_string(), b.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let types = if g.contains_key("tokenizer.ggml.token_type") {
            let a = g
                .array("tokenizer.ggml.token_type")
                .map_err(|e| err(e.to_string()))?;
            let t = a
                .ints()
                .ok_or_else(|| err("tokenizer.ggml.token_type is not an integer array".into()))?;
            if t.len() != tokens.len() {
                return Err(err(format!(
                    "{} token types for {} tokens",
                    t.len(),
                    tokens.len()
                )));
            }
            t
        } else {
            Vec::new()
        };
        let bpe = tokenizers::models::bpe::BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| err(format!("BPE: {e}")))?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        let byte_level = tokenizers::pre_tokenizers::byte_level::ByteLevel::new(false, true, true);
        inner
            .with_pre_tokenizer(Some(byte_level))
            .with_decoder(Some(byte_level))
            .with_post_processor(Some(byte_level));
        let added = |kind: i64, special: bool| -> Vec<tokenizers::AddedToken> {
            types
                .iter()
                .zip(&tokens)
                .filter(|(&t, _)| t == kind)
                .map(|(_, tok)| tokenizers::AddedToken::from(tok.to_string(), special))
                .collect()
        };
        inner.add_special_tokens(&added(TOKEN_TYPE_CONTROL, true));
        inner.add_tokens(&added(TOKEN_TYPE_USER_DEFINED, false));
        Ok(Self { inner })
    }

    /// The tokenizer of a model path as [`Model::load`](crate::Model::load) takes it: a
    /// checkpoint folder's `tokenizer.json`, or the vocabulary inside a `.gguf` file.
    /// `Ok(None)` when there is none.
    pub fn for_model(path: &Path) -> Result<Option<Self>> {
        if crate::model::gguf::is_gguf(path) {
            let g = Gguf::open(path)?;
            if !g.contains_key("tokenizer.ggml.tokens") {
                return Ok(None);
            }
            return Self::from_gguf(&g).map(Some);
        }
        Self::from_dir(path)
    }

    /// Tokens in the vocabulary, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
