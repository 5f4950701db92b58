//! gemv_q8_0 against `reference::gemv_q8_0` (the Linear over weights dequantised from GGUF's
//! Q8_0 bytes, so the repack is checked too), over awkward shapes and layouts.
//!
//! Tolerance: the kernel and the twin multiply the same f32 values (d · q is exact in f32: an
//! f16 times an integer below 2^8) and differ only in the order of the f32 sums, as for
//! `gemv`: atol = 1e-6·k·max|x|·max|w| plus rtol = 1e-5·sqrt(k) (see tests/kernels/matmul.rs).

use mamba_wgpu::gguf::Gguf;
use mamba_wgpu::kernels::gemv_q8_0::{check_params, repack_q8_0, GemvQ8, MatmulParams};
use mamba_wgpu::reference::gemv_q8_0::{dequantize_q8_0, gemv_q8_0};
use mamba_wgpu::reference::matmul::linear;

use crate::block_gemv::{self, Case, Format};
use crate::common::*;

/// `blocks` seeded Q8_0 blocks in GGUF's layout: scales in [0.001, 0.05) rounded to f16, quants
/// over the whole i8 range (-128 included, which ggml's quantizer never writes but the format
/// allows: it checks the sign extension).
fn random_blocks(seed: u64, blocks: usize) -> Vec<u8> {
    let d = rand_vec(seed, blocks, 0.001, 0.05);
    let q = rand_vec(seed + 1, blocks * 32, -128.0, 128.0);
    let mut out = Vec::with_capacity(blocks * 34);
    for (b, &d) in d.iter().enumerate() {
        out.extend(half::f16::from_f32(d).to_le_bytes());
        out.extend(q[b * 32..][..32].iter().map(|&v| (v.floor() as i8) as u8));
    }
    out
}

/// The format as the shared check (tests/kernels/block_gemv.rs) takes it.
const FORMAT: Format = Format {
    name: "gemv_q8_0",
    twin: gemv_q8_0,
    dequantize: dequantize_q8_0,
    repack: repack_q8_0,
    check_params,
    bind: |ctx, p, b| GemvQ8::new(ctx).unwrap().bind(ctx, p, b),
};

fn check_with(c: Case, w_blocks: &[u8]) {
    block_gemv::check_with(&FORMAT, c, w_blocks)
}

fn check(c: Case) {
    let blocks = random_blocks((c.n * 7919 + c.k) as u64, c.n * c.k / 32);
    check_with(c, &blocks);
}

#[test]
fn repack_puts_the_scale_and_quants_in_whole_words() {
    // d = 1.0 (f16 0x3C00), q_j = j − 16: bytes 0xF0 .. 0x0F.
    let mut block = vec![0x00, 0x3C];
    block.extend((0..32).map(|j| (j as i8 - 16) as u8));
    let words = repack_q8_0(&block, 1, 32).unwrap();
    assert_eq!(words.len(), 9);
    assert_eq!(words[0], 0x3C00);
    assert_eq!(
        words[1], 0xF3F2_F1F0,
        "quants 0..3 (−16..−13), quant 0 in the low byte"
    );
    assert_eq!(words[5], 0x0302_0100, "quants 16..19 (0..3)");
    assert_eq!(words[8], 0x0F0E_0D0C);
    assert_eq!(
        dequantize_q8_0(&block),
        (0..32).map(|j| j as f32 - 16.0).collect::<Vec<_>>()
    );
    // Rows that are not whole blocks, a byte count that does not match, a non-finite scale.
    assert!(repack_q8_0(&block, 1, 33).is_err());
    assert!(repack_q8_0(&block[..33], 1, 32).is_err());
    assert!(repack_q8_0(&block, 2, 32).is_err());
    let mut inf = block.clone();
    inf[..2].copy_from_slice(&half::f16::INFINITY.to_le_bytes());
    assert!(repack_q8_0(&inf, 1, 32)
        .unwrap_err()
        .to_string()
        .contains("inf"));
    assert!(check_params(&MatmulParams {
        k: 48,
        ..Default::default()
    })
    .is_err());
}

/// (m, n, k): one row and one block; n not a multiple of the 8 outputs per group, ±1 around
/// it; m through 1, 4 (one pass), 5 (a 4-row pass then a 1-row one), 17; k of one block, of
/// more quant words than the 64 invocations (k = 288: 72 words), and k = 0 (y = bias).
const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 32),
    (1, 7, 64),
    (2, 9, 96),
    (3, 8, 32),
    (4, 65, 160),
    (5, 13, 288),
    (17, 33, 128),
    (1, 1000, 32),
    (6, 15, 0),
];

#[test]
fn gemv_q8_0_matches_reference_on_awkward_shapes() {
    for (i, &(m, n, k)) in SHAPES.iter().enumerate() {
        check(Case {
            bias: i % 2 == 0,
            ..Case::plain(m, n, k)
        });
    }
}

#[test]
fn gemv_q8_0_reads_strided_offset_rows_and_accumulates() {
    // x rows from a wider buffer at an odd offset (no vec4 alignment), y written as a column
    // slice of a wider output, bias from an offset, then accumulated.
    for (m, accumulate) in [(1, false), (3, true), (6, true)] {
        check(Case {
            m,
            n: 21,
            k: 96,
            x_offset: 5,
            x_stride: 101,
            y_offset: 3,
            y_stride: 40,
            bias: true,
            bias_offset: 7,
            accumulate,
        });
    }
}

#[test]
fn gemv_q8_0_folds_past_65535_workgroups() {
    // 524,305 outputs: 65,539 groups of 8, folded to (32,770, 2).
    let c = Case::plain(1, 524_305, 32);
    assert_eq!(GemvQ8::workgroups(&c.params()), [32_770, 2, 1]);
    check(c);
}

#[test]
fn gemv_q8_0_reads_a_converted_gguf_tensor() {
    // blk.0.ssm_in.weight of the Q8_0 fixture ([128, 32], written by gguf-py's quantizer):
    // the kernel on its repacked bytes against the Linear over what the loader widens it to.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gguf/mamba1-tiny_tied-Q8_0.gguf");
    let g = Gguf::open(&path).unwrap();
    for name in [
        "blk.0.ssm_in.weight",
        "blk.2.ssm_x.weight",
        "token_embd.weight",
    ] {
        let t = g.tensor(name).unwrap();
        let (n, k) = (t.shape[0], t.shape[1]);
        let bytes = g.tensor_bytes(name).unwrap();
        assert_eq!(dequantize_q8_0(bytes), g.tensor_f32(name).unwrap());
        check_with(Case::plain(3, n, k), bytes);
        // And the twin is the plain Linear over the widened tensor.
        let x = rand_vec(9, k, -1.0, 1.0);
        assert_eq!(
            gemv_q8_0(&x, 0, k, 1, bytes, n, k, None),
            linear(&x, 0, k, 1, &g.tensor_f32(name).unwrap(), n, k, None)
        );
    }
}

#[test]
fn quantiser_matches_ggml_reference_by_hand() {
    use mamba_wgpu::tensor::quantize_q8_0_rows;
    // Block 0: max|v| = 127, so d = 1 (f16 0x3c00) and q = v rounded half away from zero
    // (63.5 -> 64, -0.5 -> -1). Block 1: all zero, d = 0 and q = 0.
    let mut v = vec![0.0f32; 64];
    v[..5].copy_from_slice(&[127.0, -127.0, 63.5, -0.5, 2.4]);
    let words = quantize_q8_0_rows(&v, 1, 64).unwrap();
    assert_eq!(words.len(), 18);
    assert_eq!(words[0], 0x3c00);
    assert_eq!(
        words[1],
        u32::from_le_bytes([127, (-127i8) as u8, 64, (-1i8) as u8])
    );
    assert_eq!(words[2], 2);
    assert!(words[3..9].iter().all(|&w| w == 0));
    assert_eq!(words[9], 0);
    assert!(words[10..].iter().all(|&w| w == 0));
    // The kernel's dequantisation of those words gives d·q.
    let bytes: Vec<u8> = words
        .chunks(9)
        .flat_map(|b| {
            let mut out = (b[0] as u16).to_le_bytes().to_vec();
            out.extend(b[1..].iter().flat_map(|w| w.to_le_bytes()));
            out
        })
        .collect();
    let back = dequantize_q8_0(&bytes);
    assert_eq!(&back[..5], &[127.0, -127.0, 64.0, -1.0, 2.0]);
    // Not whole blocks, or a non-finite value: errors.
    assert!(quantize_q8_0_rows(&v[..48], 1, 48).is_err());
    v[7] = f32::NAN;
    assert!(quantize_q8_0_rows(&v, 1, 64).is_err());
}
