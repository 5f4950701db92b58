//! Mamba-2 end to end against transformers' fixtures (tests/fixtures/mamba2, made by
//! scripts/gen_fixtures.py): logits of a full forward, greedy tokens, and the runtime's own
//! equalities (prefill-then-decode, chunked, continued, batched).
//!
//! Greedy tokens are compared with the reference's *uncached* generation (a full forward per
//! step): transformers skips the time_step_limit clamp in its cached decode step, so with a
//! finite limit its cached tokens drift from its own full forward; this runtime clamps in
//! both paths.

mod common;

use common::fixtures::{assert_logits, cases, fixture_dir, max_diff};
use common::shared;
use mamba_wgpu::{Model, SessionOptions};

const FIXTURES: &[&str] = &[
    "g1_small",
    "groups2_hd12",
    "groups3_chunk64",
    "state_spaces",
];

fn load(name: &str) -> Model {
    Model::load(shared().clone(), &fixture_dir("mamba2", name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn logits_match_transformers_on_every_fixture() {
    for name in FIXTURES {
        let m = load(name);
        for (k, c) in cases("mamba2", name).iter().enumerate() {
            let mut s = m
                .session(&SessionOptions {
                    batch: c.batch,
                    all_logits: true,
                    ..Default::default()
                })
                .unwrap();
            let got = s.logits(&c.refs()).unwrap();
            assert_logits(
                &format!("{name} case {k} (B={}, L={})", c.batch, c.len),
                &got,
                &c.logits,
            );
        }
    }
}

#[test]
fn greedy_tokens_match_transformers_full_forward_generation() {
    for name in FIXTURES {
        let m = load(name);
        for (k, c) in cases("mamba2", name).iter().enumerate() {
            let mut s = m
                .session(&SessionOptions {
                    batch: c.batch,
                    ..Default::default()
                })
                .unwrap();
            let mut got: Vec<Vec<u32>> = vec![Vec::new(); c.batch];
            for (b, t) in s.prefill(&c.refs()).unwrap().into_iter().enumerate() {
                got[b].push(t);
            }
            for _ in 1..c.greedy[0].len() {
                for (b, t) in s.decode().unwrap().into_iter().enumerate() {
                    got[b].push(t);
                }
            }
            assert_eq!(got, c.greedy, "{name} case {k}: greedy tokens");
        }
    }
}

#[test]
fn prefill_then_decode_equals_one_long_prefill() {
    for name in ["g1_small", "groups2_hd12", "groups3_chunk64"] {
        let m = load(name);
        let c = cases("mamba2", name)
            .into_iter()
            .max_by_key(|c| c.len * 10 + c.batch)
            .unwrap();
        let v = m.vocab();
        for split in [1usize, 2, 9] {
            let mut s = m
                .session(&SessionOptions {
                    batch: c.batch,
                    all_logits: true,
                    ..Default::default()
                })
                .unwrap();
            let head: Vec<&[u32]> = c.ids.iter().map(|r| &r[..split]).collect();
            s.logits(&head).unwrap();
            for t in split..c.len.min(split + 10) {
                let tokens: Vec<u32> = c.ids.iter().map(|r| r[t]).collect();
                let got = s.decode_logits(&tokens).unwrap();
                let want: Vec<f32> = (0..c.batch)
                    .flat_map(|b| c.logits[(b * c.len + t) * v..(b * c.len + t + 1) * v].to_vec())
                    .collect();
                let (d, scale) = max_diff(&got, &want);
                assert!(
                    d <= 1e-4 * scale,
                    "{name}: split {split}, decoded position {t}: max |Δlogit| {d:e}"
                );
            }
        }
    }
}

#[test]
fn chunked_and_continued_prefill_equal_one_prefill() {
    for name in ["g1_small", "groups3_chunk64"] {
        let m = load(name);
        let c = cases("mamba2", name)
            .into_iter()
            .filter(|c| c.batch == 1)
            .max_by_key(|c| c.len)
            .unwrap();
        let v = m.vocab();
        // Session chunks that are shorter than, not a multiple of, and longer than the SSD chunk.
        for chunk in [1usize, 5, 8, 24, 64, 100] {
            let mut s = m
                .session(&SessionOptions {
                    max_chunk_tokens: chunk,
                    all_logits: true,
                    ..Default::default()
                })
                .unwrap();
            let got = s.logits(&c.refs()).unwrap();
            assert_logits(
                &format!("{name}: session chunks of {chunk}"),
                &got,
                &c.logits,
            );
        }
        // A prompt continuing a cached state equals one prefill over the concatenation.
        let mut s = m
            .session(&SessionOptions {
                all_logits: true,
                ..Default::default()
            })
            .unwrap();
        let cut = c.len / 3;
        let a = s.logits(&[&c.ids[0][..cut]]).unwrap();
        let b = s.logits(&[&c.ids[0][cut..]]).unwrap();
        let joined: Vec<f32> = a.into_iter().chain(b).collect();
        assert_logits(
            &format!("{name}: continued at {cut}"),
            &joined,
            &c.logits[..c.len * v],
        );
    }
}

#[test]
fn batched_runs_equal_single_runs() {
    for name in ["g1_small", "groups2_hd12", "groups3_chunk64"] {
        let m = load(name);
        let c = cases("mamba2", name)
            .into_iter()
            .find(|c| c.batch > 1)
            .unwrap();
        let v = m.vocab();
        let mut s = m
            .session(&SessionOptions {
                batch: c.batch,
                all_logits: true,
                ..Default::default()
            })
            .unwrap();
        let batched = s.logits(&c.refs()).unwrap();
        for b in 0..c.batch {
            let mut one = m
                .session(&SessionOptions {
                    all_logits: true,
                    ..Default::default()
                })
                .unwrap();
            let single = one.logits(&[&c.ids[b]]).unwrap();
            let (d, scale) = max_diff(&batched[b * c.len * v..(b + 1) * c.len * v], &single);
            assert!(
                d <= 1e-6 * scale.max(1.0),
                "{name}: sequence {b} batched vs alone differs by {d:e}"
            );
        }
    }
}
