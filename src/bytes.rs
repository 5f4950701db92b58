//! The bytes of a model file, memory-mapped or owned: the one place the crate maps files (and
//! so its one `unsafe` block), shared by the safetensors and GGUF readers.

use std::path::Path;

use crate::error::{Error, Result};

/// A file's bytes: memory-mapped from disk, or owned (files parsed from memory, and Miri,
/// which cannot map files). Derefs to `[u8]`.
pub(crate) enum FileBytes {
    Map(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl FileBytes {
    /// Memory-maps `path` read-only.
    pub(crate) fn map(path: &Path) -> Result<Self> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let f = std::fs::File::open(path).map_err(io)?;
        // SAFETY: `Mmap::map` is unsafe because the mapped file may change underneath the
        // map. The map is read-only and private to this process, and the contract (the same as
        // every memory-mapped model loader's) is that the file is not modified or truncated
        // while it is loaded: a truncation would make reads fault (SIGBUS) rather than return
        // stale bytes. Every read goes through slices bounds-checked against the map's length.
        let map = unsafe { memmap2::Mmap::map(&f) }.map_err(io)?;
        Ok(FileBytes::Map(map))
    }
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Map(m) => m,
            FileBytes::Owned(v) => v,
        }
    }
}
