//! CPU twin of `shaders/embedding.wgsl`: the embedding gather.

/// `out[t, :] = table[ids[t], :]` for a `[vocab, dim]` table; returns `[ids.len(), dim]`.
/// The GPU kernel does the same one page of rows at a time; gathering every page gives this.
///
/// Panics when an id is past the table's last row (the runtime checks ids before upload).
pub fn embedding(ids: &[u32], table: &[f32], dim: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(ids.len() * dim);
    for &id in ids {
        out.extend_from_slice(&table[id as usize * dim..][..dim]);
    }
    out
}
