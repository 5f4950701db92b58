//! embedding against `reference::embedding`. A gather copies values, so the comparison is
//! exact, bit for bit (the table holds -0, a subnormal, infinities and a NaN with a payload).

use mamba_wgpu::kernels::embedding::{
    Embedding, EmbeddingBuffers, EmbeddingParams, COLUMNS_PER_WORKGROUP,
};
use mamba_wgpu::kernels::run;
use mamba_wgpu::reference::embedding::embedding;

use crate::common::*;

/// Marks out elements no page wrote.
const OUT_FILL: u32 = 0xDEAD_BEEF;

fn table(seed: u64, vocab: usize, dim: usize) -> Vec<f32> {
    let mut t = rand_vec(seed, vocab * dim, -1.0, 1.0);
    let specials = [
        -0.0,
        1e-40,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::from_bits(0x7FC0_1234),
    ];
    for (i, v) in specials.iter().enumerate() {
        if let Some(e) = t.get_mut(i * 3) {
            *e = *v;
        }
    }
    t
}

/// Gathers `ids` from `table` (`[vocab, dim]`) split into pages at `splits` (row indices), one
/// dispatch per page into the same out, all recorded in one pass; returns out's bits.
fn gpu_embedding(ids: &[u32], table: &[f32], dim: usize, splits: &[usize]) -> Vec<u32> {
    let ctx = ctx();
    let vocab = table.len() / dim;
    let ids_b = upload(ids);
    let out_b = upload(&vec![OUT_FILL; ids.len() * dim]);
    let k = Embedding::new(ctx).unwrap();
    let mut bounds = vec![0];
    bounds.extend_from_slice(splits);
    bounds.push(vocab);
    let pages: Vec<_> = bounds
        .windows(2)
        .map(|r| {
            let page = upload(&table[r[0] * dim..r[1] * dim]);
            let params = EmbeddingParams {
                tokens: ids.len() as u32,
                dim: dim as u32,
                row_start: r[0] as u32,
                rows: (r[1] - r[0]) as u32,
            };
            (page, params)
        })
        .collect();
    let dispatches: Vec<_> = pages
        .iter()
        .map(|(page, params)| {
            k.bind(
                ctx,
                params,
                EmbeddingBuffers {
                    ids: &ids_b,
                    table: page,
                    out: &out_b,
                },
            )
        })
        .collect();
    run(ctx, &dispatches.iter().collect::<Vec<_>>()).unwrap();
    read::<u32>(&out_b, ids.len() * dim)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Ids with repeats and the first and last rows.
fn ids(seed: u64, tokens: usize, vocab: usize) -> Vec<u32> {
    let mut ids: Vec<u32> = rand_vec(seed, tokens, 0.0, vocab as f32)
        .iter()
        .map(|&u| (u as u32).min(vocab as u32 - 1))
        .collect();
    let n = ids.len();
    for (i, id) in [0, vocab - 1, 0, 1, vocab - 1].into_iter().enumerate() {
        if i < n {
            ids[n - 1 - i] = id.min(vocab - 1) as u32;
        }
    }
    ids
}

#[test]
fn embedding_twin_matches_hand_computed_case() {
    let table = [0.0, 1.0, 10.0, 11.0, 20.0, 21.0];
    let out = embedding(&[2, 0, 2], &table, 2);
    assert_eq!(out, [20.0, 21.0, 0.0, 1.0, 20.0, 21.0]);
}

#[test]
fn embedding_matches_reference_on_awkward_shapes() {
    let chunk = COLUMNS_PER_WORKGROUP as usize;
    for &(vocab, dim, tokens) in &[
        (1, 1, 1),
        (2, 1, 5),
        (50, 7, 13),
        (37, 63, 4),
        (37, 64, 9),
        (37, 65, 1),
        (20, chunk - 1, 6),
        (20, chunk, 6),
        (20, chunk + 1, 6),
        (11, 768, 33),
        (5, 1000, 3),
    ] {
        let t = table(vocab as u64 + dim as u64, vocab, dim);
        let ids = ids(dim as u64, tokens, vocab);
        let want = bits(&embedding(&ids, &t, dim));
        let got = gpu_embedding(&ids, &t, dim, &[]);
        assert_eq!(
            got, want,
            "embedding vocab {vocab} dim {dim} tokens {tokens}"
        );
    }
}

#[test]
fn embedding_paged_table_equals_unpaged() {
    for &(vocab, dim, tokens, splits) in &[
        (10, 7, 30, &[5][..]),
        (10, 257, 17, &[1, 9][..]),
        (50, 64, 40, &[13, 14][..]),
        (50, 3, 200, &[20, 35][..]),
    ] {
        let t = table(vocab as u64 * 3 + dim as u64, vocab, dim);
        let ids = ids(tokens as u64, tokens, vocab);
        let want = bits(&embedding(&ids, &t, dim));
        let got = gpu_embedding(&ids, &t, dim, splits);
        assert_eq!(got, want, "paged vocab {vocab} dim {dim} splits {splits:?}");
    }

    // One page alone writes exactly its tokens and leaves the others untouched.
    let (vocab, dim) = (10, 5);
    let t = table(3, vocab, dim);
    let ids = [0u32, 4, 5, 9, 7, 4, 3];
    let ctx = ctx();
    let ids_b = upload(&ids);
    let out_b = upload(&vec![OUT_FILL; ids.len() * dim]);
    let page_b = upload(&t[4 * dim..8 * dim]);
    let params = EmbeddingParams {
        tokens: ids.len() as u32,
        dim: dim as u32,
        row_start: 4,
        rows: 4,
    };
    let d = Embedding::new(ctx).unwrap().bind(
        ctx,
        &params,
        EmbeddingBuffers {
            ids: &ids_b,
            table: &page_b,
            out: &out_b,
        },
    );
    run(ctx, &[&d]).unwrap();
    let got = read::<u32>(&out_b, ids.len() * dim);
    for (tok, &id) in ids.iter().enumerate() {
        let row = &got[tok * dim..(tok + 1) * dim];
        if (4..8).contains(&id) {
            assert_eq!(
                row,
                bits(&t[id as usize * dim..][..dim]),
                "token {tok} id {id}"
            );
        } else {
            assert!(
                row.iter().all(|&v| v == OUT_FILL),
                "token {tok} id {id} written"
            );
        }
    }
}

#[test]
fn embedding_folds_more_than_65535_workgroups() {
    // dim 1: one workgroup per token, 70,000 > 65,535 groups, so the dispatch is folded.
    let (vocab, dim, tokens) = (1000, 1, 70_000);
    let t = table(9, vocab, dim);
    let ids = ids(10, tokens, vocab);
    let want = bits(&embedding(&ids, &t, dim));
    let got = gpu_embedding(&ids, &t, dim, &[400]);
    assert_eq!(got, want, "embedding of {tokens} tokens");
}
