//! Reading a Hugging Face checkpoint folder: `config.json` and `model.safetensors`, or a sharded
//! `model.safetensors.index.json` with its shards. Files are memory-mapped, headers validated
//! by the `safetensors` crate (offsets contiguous and inside the file), and tensors converted
//! to f32 on request from F32, F16 or BF16.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, Metadata};
use safetensors::SafeTensors;

use crate::bytes::FileBytes;
use crate::error::{Error, Result};

struct File {
    path: PathBuf,
    data: FileBytes,
    header_len: usize,
    meta: Metadata,
}

/// An opened checkpoint: one safetensors file or the shards of an index.
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

/// The largest `model.safetensors.index.json` read (real ones are a few hundred KiB; the
/// text is read whole, so a hostile size is refused before it is allocated).
pub const MAX_INDEX_BYTES: u64 = 64 << 20;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Validates a safetensors header: the `safetensors` crate checks the header length against
/// the file, the JSON, every tensor's element count × dtype size (with overflow checks)
/// against its offsets, that the offsets are contiguous (no overlap, no gap) and that the last
/// one is the end of the file.
fn parse_file(path: &Path, data: FileBytes) -> Result<File> {
    let (header_len, meta) = SafeTensors::read_metadata(&data).map_err(|e| Error::Checkpoint {
        file: path.to_path_buf(),
        tensor: None,
        msg: format!("not a valid safetensors file: {e}"),
    })?;
    Ok(File {
        path: path.to_path_buf(),
        data,
        header_len,
        meta,
    })
}

fn open_file(path: &Path) -> Result<File> {
    parse_file(path, FileBytes::map(path)?)
}

/// Reads a shard index (`model.safetensors.index.json`): its `weight_map` as (tensor, shard
/// file name) pairs in the file's order. A shard must be a plain file name beside the index
/// (no folder parts, no `..`), so a hostile index cannot reach outside the checkpoint folder.
/// `file` names the index in errors.
pub fn parse_index(file: &Path, text: &[u8]) -> Result<Vec<(String, String)>> {
    let bad = |msg: String| Error::Checkpoint {
        file: file.to_path_buf(),
        tensor: None,
        msg,
    };
    let v: serde_json::Value =
        serde_json::from_slice(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("no `weight_map` object".into()))?;
    let mut out = Vec::with_capacity(map.len());
    for (tensor, shard) in map {
        let shard = shard
            .as_str()
            .ok_or_else(|| bad(format!("shard of {tensor} is not a string")))?;
        let mut parts = Path::new(shard).components();
        let plain = matches!(
            (parts.next(), parts.next()),
            (Some(std::path::Component::Normal(_)), None)
        );
        if !plain || shard.contains(['/', '\\', '\0']) {
            return Err(bad(format!(
                "shard name `{shard}` is not a file name in the folder"
            )));
        }
        out.push((tensor.clone(), shard.to_string()));
    }
    Ok(out)
}

impl Checkpoint {
    /// Opens `dir/model.safetensors`, or `dir/model.safetensors.index.json` and its shards.
    /// Files are memory-mapped.
    pub fn open(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        if single.is_file() {
            Ok(Self::single(dir, open_file(&single)?))
        } else if index_path.is_file() {
            let len = std::fs::metadata(&index_path)
                .map_err(io(&index_path))?
                .len();
            if len > MAX_INDEX_BYTES {
                return Err(Error::Checkpoint {
                    file: index_path,
                    tensor: None,
                    msg: format!("{len} bytes: more than the {MAX_INDEX_BYTES} an index may have"),
                });
            }
            let text = std::fs::read(&index_path).map_err(io(&index_path))?;
            Self::sharded(dir, &index_path, &text, |shard| open_file(&dir.join(shard)))
        } else {
            Err(Error::Checkpoint {
                file: dir.to_path_buf(),
                tensor: None,
                msg: "no model.safetensors or model.safetensors.index.json in the folder".into(),
            })
        }
    }

    /// One safetensors file held in memory; `path` names it in errors (and its parent is
    /// [`Checkpoint::dir`]). The header is validated as in [`Checkpoint::open`].
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let dir = path.parent().unwrap_or(Path::new(""));
        Ok(Self::single(
            dir,
            parse_file(path, FileBytes::Owned(bytes))?,
        ))
    }

    /// A sharded checkpoint held in memory: the index's text and a function giving the bytes
    /// of each shard it names (called once per distinct shard). `dir` names the files in
    /// errors.
    pub fn from_index_bytes(
        dir: &Path,
        index: &[u8],
        mut shard: impl FnMut(&str) -> Result<Vec<u8>>,
    ) -> Result<Self> {
        let index_path = dir.join("model.safetensors.index.json");
        Self::sharded(dir, &index_path, index, |name| {
            parse_file(&dir.join(name), FileBytes::Owned(shard(name)?))
        })
    }

    fn single(dir: &Path, f: File) -> Self {
        let index = f.meta.tensors().into_keys().map(|name| (name, 0)).collect();
        Self {
            dir: dir.to_path_buf(),
            files: vec![f],
            index,
        }
    }

    fn sharded(
        dir: &Path,
        index_path: &Path,
        text: &[u8],
        mut open: impl FnMut(&str) -> Result<File>,
    ) -> Result<Self> {
        let mut files: Vec<File> = Vec::new();
        let mut index = HashMap::new();
        let mut shard_ids: HashMap<String, usize> = HashMap::new();
        for (tensor, shard) in parse_index(index_path, text)? {
            let id = match shard_ids.get(&shard) {
                Some(&id) => id,
                None => {
                    files.push(open(&shard)?);
                    shard_ids.insert(shard.clone(), files.len() - 1);
                    files.len() - 1
                }
            };
            if files[id].meta.info(&tensor).is_none() {
                return Err(Error::tensor(
                    dir.join(&shard),
                    tensor,
                    "listed in the index but not in the shard",
                ));
            }
            index.insert(tensor, id);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            files,
            index,
        })
    }

    /// The names of every tensor, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.index.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
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
        // The offsets were validated against the file's length when it was opened; the
        // checked sums and `get` keep this read safe even so.
        let base = 8usize.checked_add(file.header_len);
        let start = base.and_then(|b| b.checked_add(info.data_offsets.0));
        let end = base.and_then(|b| b.checked_add(info.data_offsets.1));
        let bytes = start
            .zip(end)
            .and_then(|(s, e)| file.data.get(s..e))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A safetensors file of `(name, dtype, shape, bytes)` tensors, laid out in order.
    fn file(tensors: &[(&str, &str, &[usize], Vec<u8>)]) -> Vec<u8> {
        let mut hdr = serde_json::Map::new();
        let mut data = Vec::new();
        for (name, dtype, shape, bytes) in tensors {
            hdr.insert(
                name.to_string(),
                serde_json::json!({"dtype": dtype, "shape": shape,
                    "data_offsets": [data.len(), data.len() + bytes.len()]}),
            );
            data.extend_from_slice(bytes);
        }
        let h = serde_json::to_vec(&hdr).unwrap();
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend(h);
        out.extend(data);
        out
    }

    fn le<const N: usize>(v: impl IntoIterator<Item = [u8; N]>) -> Vec<u8> {
        v.into_iter().flatten().collect()
    }

    #[test]
    fn reads_every_float_dtype_and_checks_shapes() {
        let bytes = file(&[
            (
                "a",
                "F32",
                &[2, 1, 2],
                le([1.5f32, -2.0, 0.25, 8.0].map(f32::to_le_bytes)),
            ),
            (
                "b",
                "F16",
                &[3],
                le([1.0f32, -0.5, 65504.0].map(|v| half::f16::from_f32(v).to_le_bytes())),
            ),
            (
                "c",
                "BF16",
                &[1],
                le([3.0f32].map(|v| half::bf16::from_f32(v).to_le_bytes())),
            ),
            ("d", "I64", &[1], 7i64.to_le_bytes().to_vec()),
        ]);
        let ck = Checkpoint::from_bytes(Path::new("m/model.safetensors"), bytes).unwrap();
        assert_eq!(ck.names(), ["a", "b", "c", "d"]);
        // Size-1 dimensions are ignored in the comparison.
        assert_eq!(ck.f32("a", &[2, 2]).unwrap(), [1.5, -2.0, 0.25, 8.0]);
        assert_eq!(ck.f32("b", &[3, 1]).unwrap(), [1.0, -0.5, 65504.0]);
        assert_eq!(ck.f32("c", &[]).unwrap(), [3.0]);
        let e = ck.f32("a", &[4]).unwrap_err().to_string();
        assert!(
            e.contains("shape [2, 1, 2]") && e.contains("m/model.safetensors"),
            "{e}"
        );
        assert!(ck.f32("d", &[1]).unwrap_err().to_string().contains("I64"));
        assert!(ck
            .f32("e", &[1])
            .unwrap_err()
            .to_string()
            .contains("missing"));
    }

    #[test]
    fn non_finite_values_are_named() {
        let bytes = file(&[(
            "w",
            "F32",
            &[3],
            le([0.0f32, f32::NAN, 1.0].map(f32::to_le_bytes)),
        )]);
        let ck = Checkpoint::from_bytes(Path::new("model.safetensors"), bytes).unwrap();
        let e = ck.f32("w", &[3]).unwrap_err().to_string();
        assert!(
            e.contains("element 1 is NaN") && e.contains("tensor w"),
            "{e}"
        );
    }

    #[test]
    fn headers_that_lie_about_the_file_are_refused() {
        let good = file(&[("w", "F32", &[2], vec![0; 8])]);
        let p = Path::new("model.safetensors");
        assert!(Checkpoint::from_bytes(p, good.clone()).is_ok());
        for bad in [
            vec![],
            good[..7].to_vec(),
            good[..good.len() - 1].to_vec(),
            [&good[..], &[0]].concat(),
            file(&[("w", "F32", &[3], vec![0; 8])]),
            file(&[("w", "F32", &[1 << 62, 1 << 62], vec![])]),
        ] {
            let e = Checkpoint::from_bytes(p, bad).unwrap_err();
            assert!(matches!(e, Error::Checkpoint { .. }), "{e}");
        }
    }

    #[test]
    fn shard_names_stay_in_the_folder() {
        let idx = |shard: &str| {
            serde_json::to_vec(&serde_json::json!({"weight_map": {"w": shard}})).unwrap()
        };
        let f = Path::new("index.json");
        assert_eq!(
            parse_index(f, &idx("model-1.safetensors")).unwrap()[0].1,
            "model-1.safetensors"
        );
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "/etc/passwd",
            "a/b",
            "a\\b",
            "C:\\x",
            "x\0y",
        ] {
            assert!(parse_index(f, &idx(bad)).is_err(), "{bad:?} accepted");
        }
        assert!(parse_index(f, b"{\"weight_map\": {\"w\": 1}}").is_err());
        assert!(parse_index(f, b"[]").is_err());
        assert!(parse_index(f, b"{").is_err());
    }

    #[test]
    fn sharded_in_memory() {
        let shard = file(&[("w", "F32", &[1], 2.0f32.to_le_bytes().to_vec())]);
        let index = br#"{"weight_map": {"w": "s.safetensors"}}"#;
        let mut calls = 0;
        let ck = Checkpoint::from_index_bytes(Path::new("d"), index, |name| {
            calls += 1;
            assert_eq!(name, "s.safetensors");
            Ok(shard.clone())
        })
        .unwrap();
        assert_eq!((calls, ck.f32("w", &[1]).unwrap()), (1, vec![2.0]));
        assert_eq!(ck.file_of("w"), Path::new("d/s.safetensors"));
        let ghost = br#"{"weight_map": {"v": "s.safetensors"}}"#;
        let e = Checkpoint::from_index_bytes(Path::new("d"), ghost, |_| Ok(shard.clone()));
        assert!(e.unwrap_err().to_string().contains("listed in the index"));
    }
}
