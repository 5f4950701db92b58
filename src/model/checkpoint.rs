//! Reading a Hugging Face checkpoint folder: `config.json` and `model.safetensors`, or a sharded
//! `model.safetensors.index.json` with its shards. Files are memory-mapped, headers validated
//! by the `safetensors` crate (offsets contiguous and inside the file), and tensors converted
//! to f32 on request from F32, F16 or BF16.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, Metadata};
use safetensors::SafeTensors;

use crate::error::{Error, Result};

struct File {
    path: PathBuf,
    map: memmap2::Mmap,
    header_len: usize,
    meta: Metadata,
}

/// An opened checkpoint folder.
pub struct Checkpoint {
    dir: PathBuf,
    files: Vec<File>,
    /// Tensor name to the index of the file that holds it.
    index: HashMap<String, usize>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("dir", &self.dir)
            .field("tensors", &self.index.len())
            .finish()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn open_file(path: &Path) -> Result<File> {
    let f = std::fs::File::open(path).map_err(io(path))?;
    // SAFETY: the map is read-only and private to this process; the checkpoint must not be
    // truncated by another process while it is loaded (the same contract as every
    // memory-mapped model loader). All reads go through bounds validated below.
    let map = unsafe { memmap2::Mmap::map(&f) }.map_err(io(path))?;
    let (header_len, meta) = SafeTensors::read_metadata(&map).map_err(|e| Error::Checkpoint {
        file: path.to_path_buf(),
        tensor: None,
        msg: format!("not a valid safetensors file: {e}"),
    })?;
    Ok(File {
        path: path.to_path_buf(),
        map,
        header_len,
        meta,
    })
}

impl Checkpoint {
    /// Opens `dir/model.safetensors`, or `dir/model.safetensors.index.json` and its shards.
    pub fn open(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let mut files = Vec::new();
        let mut index = HashMap::new();
        if single.is_file() {
            let f = open_file(&single)?;
            for name in f.meta.tensors().keys() {
                index.insert(name.clone(), 0);
            }
            files.push(f);
        } else if index_path.is_file() {
            let text = std::fs::read_to_string(&index_path).map_err(io(&index_path))?;
            let bad = |msg: String| Error::Checkpoint {
                file: index_path.clone(),
                tensor: None,
                msg,
            };
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| bad("no `weight_map` object".into()))?;
            let mut shard_ids: HashMap<String, usize> = HashMap::new();
            for (tensor, shard) in map {
                let shard = shard
                    .as_str()
                    .ok_or_else(|| bad(format!("shard of {tensor} is not a string")))?;
                // Shards are plain file names beside the index; refuse paths that leave the folder.
                if shard.contains('/') || shard.contains('\\') || shard == ".." || shard.is_empty()
                {
                    return Err(bad(format!(
                        "shard name `{shard}` is not a file name in the folder"
                    )));
                }
                let id = match shard_ids.get(shard) {
                    Some(&id) => id,
                    None => {
                        files.push(open_file(&dir.join(shard))?);
                        shard_ids.insert(shard.to_string(), files.len() - 1);
                        files.len() - 1
                    }
                };
                if files[id].meta.info(tensor).is_none() {
                    return Err(Error::tensor(
                        dir.join(shard),
                        tensor,
                        "listed in the index but not in the shard",
                    ));
                }
                index.insert(tensor.clone(), id);
            }
        } else {
            return Err(Error::Checkpoint {
                file: dir.to_path_buf(),
                tensor: None,
                msg: "no model.safetensors or model.safetensors.index.json in the folder".into(),
            });
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            files,
            index,
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the checkpoint holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The file a tensor is (or would be) read from, for error messages.
    pub fn file_of(&self, name: &str) -> PathBuf {
        match self.index.get(name) {
            Some(&i) => self.files[i].path.clone(),
            None if self.files.len() == 1 => self.files[0].path.clone(),
            None => self.dir.join("model.safetensors.index.json"),
        }
    }

    /// The shape of a tensor.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        let &i = self
            .index
            .get(name)
            .ok_or_else(|| Error::tensor(self.file_of(name), name, "missing tensor"))?;
        Ok(self.files[i]
            .meta
            .info(name)
            .map(|t| t.shape.clone())
            .unwrap_or_default())
    }

    /// Reads a tensor as f32, checking that its shape is `shape` (size-1 dimensions are
    /// ignored in the comparison, so `[d, 1, k]` matches `[d, k]`), and that every value is
    /// finite.
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let &i = self
            .index
            .get(name)
            .ok_or_else(|| Error::tensor(self.file_of(name), name, "missing tensor"))?;
        let file = &self.files[i];
        let info = file
            .meta
            .info(name)
            .ok_or_else(|| Error::tensor(&file.path, name, "missing tensor"))?;
        let squeeze = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
        if squeeze(&info.shape) != squeeze(shape) {
            return Err(Error::tensor(
                &file.path,
                name,
                format!("shape {:?} but the config implies {:?}", info.shape, shape),
            ));
        }
        let start = 8 + file.header_len + info.data_offsets.0;
        let end = 8 + file.header_len + info.data_offsets.1;
        let bytes = file
            .map
            .get(start..end)
            .ok_or_else(|| Error::tensor(&file.path, name, "data lies past the end of the file"))?;
        let out: Vec<f32> = match info.dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(Error::tensor(
                    &file.path,
                    name,
                    format!("dtype {other:?} is not supported (F32, F16, BF16)"),
                ));
            }
        };
        if let Some(pos) = out.iter().position(|v| !v.is_finite()) {
            return Err(Error::tensor(
                &file.path,
                name,
                format!("element {pos} is {} (weights must be finite)", out[pos]),
            ));
        }
        Ok(out)
    }
}
