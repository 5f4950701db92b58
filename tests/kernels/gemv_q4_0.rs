//! gemv_q4_0 against `reference::gemv_q4_0` (the Linear over weights dequantised from GGUF's
//! Q4_0 bytes, so the repack is checked too), over awkward shapes and layouts; the repack's and
//! the on-load quantiser's errors and layout by hand.
//!
//! Tolerance: the kernel and the twin multiply the same f32 values (d · (q − 8) is exact in
//! f32: an f16 times an integer of at most 4 bits) and differ only in the order of the f32
//! sums, as for `gemv`: atol = 1e-6·k·max|x|·max|w| plus rtol = 1e-5·sqrt(k) (see
//! tests/kernels/matmul.rs).

use mamba_wgpu::gguf::Gguf;
use mamba_wgpu::kernels::gemv_q4_0::{check_params, repack_q4_0, GemvQ4, MatmulParams};
use mamba_wgpu::reference::gemv_q4_0::{dequantize_q4_0, gemv_q4_0, quantize_q4_0};
use mamba_wgpu::reference::matmul::linear;
use mamba_wgpu::tensor::quantize_q4_0_rows;

use crate::block_gemv::{self, Case, Format};
use crate::common::*;

/// `blocks` seeded Q4_0 blocks in GGUF's layout: scales of either sign, |d| in [0.001, 0.05)
/// rounded to f16 (ggml's quantiser writes d < 0 whenever a block's largest value is positive),
/// every 7th block's scale ±0 (an all-zero block, as ggml writes for zero weights), and quant
/// bytes over the whole 0..=255 range (both nibbles 0 and 15, which ggml's quantiser writes for
/// ±max, included).
fn random_blocks(seed: u64, blocks: usize) -> Vec<u8> {
    let d = rand_vec(seed, blocks, -0.05, 0.05);
    let q = rand_vec(seed + 1, blocks * 16, 0.0, 256.0);
    let mut out = Vec::with_capacity(blocks * 18);
    for (b, &d) in d.iter().enumerate() {
        let d = match b % 7 {
            3 => 0.0,
            5 => -0.0,
            _ => d.signum() * d.abs().max(0.001),
        };
        out.extend(half::f16::from_f32(d).to_le_bytes());
        out.extend(q[b * 16..][..16].iter().map(|&v| v.floor() as u8));
    }
    out
}

/// The format as the shared check (tests/kernels/block_gemv.rs) takes it.
const FORMAT: Format = Format {
    name: "gemv_q4_0",
    twin: gemv_q4_0,
    dequantize: dequantize_q4_0,
    repack: repack_q4_0,
    check_params,
    bind: |ctx, p, b| GemvQ4::new(ctx).unwrap().bind(ctx, p, b),
};

fn check_with(c: Case, w_blocks: &[u8]) {
    block_gemv::check_with(&FORMAT, c, w_blocks)
}

fn check(c: Case) {
    let blocks = random_blocks((c.n * 7919 + c.k) as u64, c.n * c.k / 32);
    check_with(c, &blocks);
}

#[test]
fn repack_puts_the_scale_and_quant_bytes_in_whole_words() {
    // d = −1.0 (f16 0xBC00); byte j = j | (15 − j) << 4, so weight j = −(j − 8) and
    // weight 16 + j = −(15 − j − 8).
    let mut block = vec![0x00, 0xBC];
    block.extend((0..16u8).map(|j| j | (15 - j) << 4));
    let words = repack_q4_0(&block, 1, 32).unwrap();
    assert_eq!(words.len(), 5);
    assert_eq!(words[0], 0xBC00);
    assert_eq!(
        words[1], 0xC3_D2_E1_F0,
        "bytes 0..3, byte 0 in the low byte"
    );
    assert_eq!(words[4], 0x0F_1E_2D_3C, "bytes 12..15");
    let want: Vec<f32> = (0..16)
        .map(|j| 8.0 - j as f32)
        .chain((0..16).map(|j| j as f32 - 7.0))
        .collect();
    assert_eq!(dequantize_q4_0(&block), want);
    // Rows that are not whole blocks, a byte count that does not match, a non-finite scale.
    assert!(repack_q4_0(&block, 1, 33).is_err());
    assert!(repack_q4_0(&block, 1, 16).is_err());
    assert!(repack_q4_0(&block[..17], 1, 32).is_err());
    assert!(repack_q4_0(&block, 2, 32).is_err());
    assert!(repack_q4_0(&block, usize::MAX, 32).is_err(), "overflow");
    for (bad, word) in [(half::f16::INFINITY, "inf"), (half::f16::NAN, "NaN")] {
        let mut b = block.repeat(3);
        b[18 * 2..18 * 2 + 2].copy_from_slice(&bad.to_le_bytes());
        let e = repack_q4_0(&b, 3, 32).unwrap_err().to_string();
        assert!(e.contains(word) && e.contains("block 2"), "{e}");
    }
    assert!(check_params(&MatmulParams {
        k: 48,
        ..Default::default()
    })
    .is_err());
}

/// (m, n, k): one row and one block; n not a multiple of the 8 outputs per group, ±1 around
/// it; m through 1, 3 (a 4-row pass with a clamped row), 4 (one pass), 5 (a 4-row pass then a
/// 1-row one), 37 (nine passes then a 1-row one); k of one block, 3 blocks, 5 blocks, and 25
/// (800: 100 units of 8 weights, more than the 64 invocations), and k = 0 (y = bias).
const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 32),
    (1, 7, 96),
    (1, 13, 800),
    (3, 9, 32),
    (3, 8, 800),
    (4, 65, 160),
    (5, 17, 96),
    (37, 13, 96),
    (37, 33, 800),
    (1, 1000, 32),
    (6, 15, 0),
];

#[test]
fn gemv_q4_0_matches_reference_on_awkward_shapes() {
    for (i, &(m, n, k)) in SHAPES.iter().enumerate() {
        check(Case {
            bias: i % 2 == 0,
            ..Case::plain(m, n, k)
        });
    }
}

#[test]
fn gemv_q4_0_reads_strided_offset_rows_and_accumulates() {
    // x rows from a wider buffer at an odd offset (no vec4 alignment), y written as a column
    // slice of a wider output, bias from an offset, then accumulated.
    for (m, accumulate) in [(1, false), (3, true), (37, true)] {
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
fn gemv_q4_0_folds_past_65535_workgroups() {
    // 524,305 outputs: 65,539 groups of 8, folded to (32,770, 2).
    let c = Case::plain(1, 524_305, 32);
    assert_eq!(GemvQ4::workgroups(&c.params()), [32_770, 2, 1]);
    check(c);
}

#[test]
fn gemv_q4_0_reads_a_converted_gguf_tensor() {
    // Tensors of the Q4_0 fixture (written by gguf-py's quantizer): the kernel on their
    // repacked bytes against the Linear over what the loader widens them to.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gguf/mamba1-tiny_tied-Q4_0.gguf");
    let g = Gguf::open(&path).unwrap();
    for name in [
        "blk.0.ssm_in.weight",
        "blk.2.ssm_x.weight",
        "token_embd.weight",
    ] {
        let t = g.tensor(name).unwrap();
        let (n, k) = (t.shape[0], t.shape[1]);
        let bytes = g.tensor_bytes(name).unwrap();
        assert_eq!(dequantize_q4_0(bytes), g.tensor_f32(name).unwrap());
        for m in [1, 3, 37] {
            check_with(Case::plain(m, n, k), bytes);
        }
        // And the twin is the plain Linear over the widened tensor.
        let x = rand_vec(9, k, -1.0, 1.0);
        assert_eq!(
            gemv_q4_0(&x, 0, k, 1, bytes, n, k, None),
            linear(&x, 0, k, 1, &g.tensor_f32(name).unwrap(), n, k, None)
        );
    }
}

/// The kernel's words of GGUF Q4_0 bytes, for comparing the on-load quantiser with the twin's.
fn words_of(bytes: &[u8], rows: usize, cols: usize) -> Vec<u32> {
    repack_q4_0(bytes, rows, cols).unwrap()
}

#[test]
fn quantiser_matches_ggml_reference_by_hand() {
    // Block 0: max = −8 (the largest magnitude, negative), so d = 1 (f16 0x3c00) and
    // q = min(15, trunc(v + 8.5)): −8 → 0, 7.4 → 15, 7.6 → 16 clipped to 15, 0.5 → 9 (a half
    // rounds up), −0.5 → 8, −0.51 → 7, 0 → 8. Block 1: all zero, d = 0 / −8 = −0.0 (f16
    // 0x8000, as ggml stores it) and every q 8.
    // Block 2: max = +4, so d = −0.5: 4 → q 0 (weight 4), −4 → 16 clipped to 15 (weight −3.5).
    let mut v = vec![0.0f32; 96];
    v[..6].copy_from_slice(&[-8.0, 7.4, 7.6, 0.5, -0.5, -0.51]);
    v[16] = 0.49;
    v[64] = 4.0;
    v[65] = -4.0;
    let words = quantize_q4_0_rows(&v, 1, 96).unwrap();
    assert_eq!(words.len(), 15);
    assert_eq!(words[0], 0x3c00);
    // Byte j = q_j | q_{16 + j} << 4: q_16 = trunc(8.99) = 8, the other high nibbles 8.
    assert_eq!(
        words[1],
        u32::from_le_bytes([0x80, 0x8F, 0x8F, 0x89]),
        "bytes 0..3"
    );
    assert_eq!(words[2], u32::from_le_bytes([0x88, 0x87, 0x88, 0x88]));
    assert!(words[3..5].iter().all(|&w| w == 0x8888_8888));
    assert_eq!(words[5], 0x8000);
    assert!(words[6..10].iter().all(|&w| w == 0x8888_8888));
    assert_eq!(words[10], half::f16::from_f32(-0.5).to_bits() as u32);
    assert_eq!(words[11], u32::from_le_bytes([0x80, 0x8F, 0x88, 0x88]));
    // The twin's quantiser writes the same blocks, and they dequantise to d · (q − 8).
    let bytes = quantize_q4_0(&v);
    assert_eq!(words_of(&bytes, 1, 96), words);
    let back = dequantize_q4_0(&bytes);
    assert_eq!(&back[..6], &[-8.0, 7.0, 7.0, 1.0, 0.0, -1.0]);
    assert_eq!(back[16], 0.0);
    assert!(back[32..64].iter().all(|&w| w == 0.0));
    assert_eq!(&back[64..66], &[4.0, -3.5]);
    // Seeded values of every scale: the on-load quantiser and the twin's agree bit for bit.
    for (seed, scale) in [(1u64, 1e-3f32), (2, 0.3), (3, 40.0)] {
        let v = rand_vec(seed, 7 * 160, -scale, scale);
        let got = quantize_q4_0_rows(&v, 7, 160).unwrap();
        assert_eq!(got, words_of(&quantize_q4_0(&v), 7, 160), "scale {scale}");
    }
    // Not whole blocks, a length that does not match, or a non-finite value: errors.
    assert!(quantize_q4_0_rows(&v[..48], 1, 48).is_err());
    assert!(quantize_q4_0_rows(&v, 2, 96).is_err());
    v[7] = f32::NAN;
    assert!(quantize_q4_0_rows(&v, 1, 96).is_err());
    v[7] = f32::INFINITY;
    assert!(quantize_q4_0_rows(&v, 1, 96).is_err());
}
