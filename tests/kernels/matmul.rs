//! matmul and gemv against `reference::matmul::{linear, write_rows}`.
//!
//! Tolerance: both kernels and the twin sum the same k products in f32 in different orders
//! (tiles of 16, or 64 interleaved partials then a tree), so the difference is a few ulps of
//! the partial sums: bounded by ~k·eps_f32·Σ|x·w| ≤ k·1.2e-7·k·max|x||w| in the worst case,
//! ~sqrt(k)·eps_f32·|partial sums| in practice. We allow atol = 1e-6·k·max|x|·max|w| (covers
//! cancellation, where the result is far smaller than its terms) plus rtol = 1e-5·sqrt(k).
//!
//! f16 weight storage (`matmul_f16`, `gemv_f16`): the twin is `linear` over the weights rounded
//! to f16 (`round_to_f16`). Every f16 is exactly an f32, so the kernels multiply the very values
//! the twin does and only the f32 summation order differs: the same tolerance applies. Odd k
//! exercises the +0.0 pad half at the end of each packed row.

use mamba_wgpu::kernels::gemv::Gemv;
use mamba_wgpu::kernels::matmul::{Matmul, MatmulBuffers, MatmulParams};
use mamba_wgpu::kernels::{run, Dispatch};
use mamba_wgpu::reference::matmul::{linear, round_to_f16, write_rows};
use mamba_wgpu::tensor::{pack_f16_rows, PagedMatrix, WeightDtype};
use mamba_wgpu::{ContextOptions, Error, GpuContext};

use crate::common::*;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kernel {
    Matmul,
    Gemv,
}

/// One dispatch's shape and layout, as in `MatmulParams`.
#[derive(Clone, Copy, Debug)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    x_offset: usize,
    x_stride: usize,
    y_offset: usize,
    y_stride: usize,
    bias: bool,
    bias_offset: usize,
    accumulate: bool,
}

impl Case {
    /// Contiguous x `[m, k]` and y `[m, n]`, no bias, overwrite.
    fn plain(m: usize, n: usize, k: usize) -> Self {
        Self {
            m,
            n,
            k,
            x_offset: 0,
            x_stride: k,
            y_offset: 0,
            y_stride: n,
            bias: false,
            bias_offset: 0,
            accumulate: false,
        }
    }

    fn with_bias(self, bias: bool) -> Self {
        Self { bias, ..self }
    }

    fn params(&self) -> MatmulParams {
        MatmulParams {
            m: self.m as u32,
            n: self.n as u32,
            k: self.k as u32,
            x_offset: self.x_offset as u32,
            x_stride: self.x_stride as u32,
            y_offset: self.y_offset as u32,
            y_stride: self.y_stride as u32,
            bias_offset: self.bias_offset as u32,
            flags: self.bias as u32 | (self.accumulate as u32) << 1,
            ..Default::default()
        }
    }

    /// Elements x must hold (a few spare ones past the last row, never read).
    fn x_len(&self) -> usize {
        self.x_offset + self.m.saturating_sub(1) * self.x_stride + self.k + 3
    }

    /// Elements y must hold (a few spare ones, which must stay untouched).
    fn y_len(&self) -> usize {
        self.y_offset + self.m.saturating_sub(1) * self.y_stride + self.n + 3
    }
}

fn bind(kernel: Kernel, params: &MatmulParams, b: MatmulBuffers<'_>) -> Dispatch {
    bind_as(ctx(), kernel, WeightDtype::F32, params, b)
}

fn bind_as(
    ctx: &GpuContext,
    kernel: Kernel,
    dtype: WeightDtype,
    params: &MatmulParams,
    b: MatmulBuffers<'_>,
) -> Dispatch {
    match kernel {
        Kernel::Matmul => Matmul::for_dtype(ctx, dtype).unwrap().bind(ctx, params, b),
        Kernel::Gemv => Gemv::for_dtype(ctx, dtype).unwrap().bind(ctx, params, b),
    }
}

/// `w` `[n, k]` as the kernel of `dtype` reads it, and the values it then multiplies.
fn weight_as(dtype: WeightDtype, w: &[f32], n: usize, k: usize) -> (wgpu::Buffer, Vec<f32>) {
    match dtype {
        WeightDtype::F32 => (upload(w), w.to_vec()),
        WeightDtype::F16 => (upload(&pack_f16_rows(w, n, k)), round_to_f16(w)),
        WeightDtype::Q8_0 | WeightDtype::Q4_0 => {
            unreachable!("matmul and gemv have no block-format variant")
        }
    }
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0f32, |a, b| a.max(b.abs()))
}

/// `(atol, rtol)` for sums of k products (see the module comment).
fn tolerance(k: usize, x: &[f32], w: &[f32]) -> (f32, f32) {
    let k = k.max(1) as f32;
    (1e-6 * k * max_abs(x) * max_abs(w), 1e-5 * k.sqrt())
}

/// Runs `kernel` on random data laid out as `c` describes and compares the whole y buffer
/// (written slice and untouched rest) with the twin.
fn check(kernel: Kernel, c: Case) {
    check_as(kernel, WeightDtype::F32, c)
}

/// [`check`] with the weight stored as `dtype`.
fn check_as(kernel: Kernel, dtype: WeightDtype, c: Case) {
    let seed = (c.m * 1_000_003 + c.n * 1009 + c.k) as u64;
    let x = rand_vec(seed + 1, c.x_len(), -1.0, 1.0);
    let w = rand_vec(seed + 2, c.n * c.k, -1.0, 1.0);
    let bias = rand_vec(seed + 3, c.bias_offset + c.n + 2, -1.0, 1.0);
    // y starts non-zero so overwrite, accumulate and "left alone" are all visible.
    let y0 = rand_vec(seed + 4, c.y_len(), -1.0, 1.0);

    let (w_b, w) = weight_as(dtype, &w, c.n, c.k);
    let out = linear(
        &x,
        c.x_offset,
        c.x_stride,
        c.m,
        &w,
        c.n,
        c.k,
        c.bias.then_some(&bias[c.bias_offset..]),
    );
    let mut want = y0.clone();
    write_rows(&mut want, c.y_offset, c.y_stride, c.accumulate, &out, c.n);

    let (x_b, bias_b, y_b) = (upload(&x), upload(&bias), upload(&y0));
    let d = bind_as(
        ctx(),
        kernel,
        dtype,
        &c.params(),
        MatmulBuffers {
            x: &x_b,
            w: &w_b,
            bias: &bias_b,
            y: &y_b,
        },
    );
    run(ctx(), &[&d]).unwrap();
    let (atol, rtol) = tolerance(c.k, &x, &w);
    assert_close(
        &format!("{kernel:?} {dtype:?} {c:?}"),
        &read::<f32>(&y_b, c.y_len()),
        &want,
        atol,
        rtol,
    );
}

#[test]
fn linear_twin_matches_hand_computed() {
    // x rows [1, 2], [3, 4] taken from a wider buffer (offset 1, stride 3); w = [[1, 0], [0, 1],
    // [1, -1]] so y = [x0, x1, x0 - x1] + bias.
    let x = [9.0, 1.0, 2.0, 9.0, 3.0, 4.0];
    let w = [1.0, 0.0, 0.0, 1.0, 1.0, -1.0];
    let bias = [0.5, -0.5, 2.0];
    let out = linear(&x, 1, 3, 2, &w, 3, 2, Some(&bias));
    assert_eq!(out, vec![1.5, 1.5, 1.0, 3.5, 3.5, 1.0]);
    assert_eq!(
        linear(&x, 1, 3, 2, &w, 3, 2, None),
        vec![1.0, 2.0, -1.0, 3.0, 4.0, -1.0]
    );
    // Rows of 3 written at column 1 of a [2, 5] y, then accumulated.
    let mut y = vec![0.0; 10];
    write_rows(&mut y, 1, 5, false, &out, 3);
    assert_eq!(y, [0.0, 1.5, 1.5, 1.0, 0.0, 0.0, 3.5, 3.5, 1.0, 0.0]);
    write_rows(&mut y, 1, 5, true, &out, 3);
    assert_eq!(y, [0.0, 3.0, 3.0, 2.0, 0.0, 0.0, 7.0, 7.0, 2.0, 0.0]);
}

/// (m, n, k): 1, odd, not multiples of 4, tile (64) and K tile (16) edges ±1, k = 0 (y = bias).
const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 7, 3),
    (3, 65, 33),
    (2, 5, 0),
    (37, 97, 36),
    (64, 64, 64),
    (63, 63, 15),
    (65, 129, 257),
    (150, 96, 48),
    (2, 1000, 17),
];

#[test]
fn matmul_matches_reference_on_awkward_shapes() {
    for (i, &(m, n, k)) in SHAPES.iter().enumerate() {
        check(
            Kernel::Matmul,
            Case::plain(m, n, k).with_bias(i.is_multiple_of(2)),
        );
    }
    check(Kernel::Matmul, Case::plain(1030, 5, 3).with_bias(true));
}

#[test]
fn gemv_matches_reference_on_awkward_shapes() {
    for (i, &(m, n, k)) in SHAPES.iter().enumerate() {
        check(
            Kernel::Gemv,
            Case::plain(m, n, k).with_bias(!i.is_multiple_of(2)),
        );
    }
    // Rows of x in passes of 4: 1, 2, 5 (a 1-row last pass), 9, 16; k around the 64 lanes.
    for &m in &[1, 2, 5, 9, 16] {
        for &(n, k) in &[(1, 1), (3, 63), (6, 64), (13, 65), (33, 200)] {
            check(
                Kernel::Gemv,
                Case::plain(m, n, k).with_bias(!m.is_multiple_of(2)),
            );
        }
    }
}

#[test]
fn both_kernels_on_a_vocab_sized_output() {
    for kernel in [Kernel::Gemv, Kernel::Matmul] {
        check(kernel, Case::plain(2, 50_280, 24).with_bias(true));
    }
}

#[test]
fn strided_x_and_column_slice_of_y_with_bias_and_accumulate() {
    for kernel in [Kernel::Matmul, Kernel::Gemv] {
        for &(m, bias, accumulate) in &[
            (1, false, false),
            (5, true, false),
            (7, false, true),
            (70, true, true),
        ] {
            // Every third row of a [*, 50] activation, a 19-column slice from column 5 (as the
            // last token of each sequence of 3); y columns 3.. of a [m, 70] output.
            check(
                kernel,
                Case {
                    m,
                    n: 33,
                    k: 19,
                    x_offset: 2 * 50 + 5,
                    x_stride: 3 * 50,
                    y_offset: 3,
                    y_stride: 70,
                    bias,
                    bias_offset: 2,
                    accumulate,
                },
            );
        }
    }
}

#[test]
fn paged_weight_equals_unsplit_product() {
    // w [97, 36] split after row 43 (not a multiple of the tile or of 8): two dispatches, the
    // second with y_offset and bias_offset moved to its first output column.
    let (n, k, split) = (97usize, 36usize, 43usize);
    for (kernel, m) in [(Kernel::Gemv, 5usize), (Kernel::Matmul, 37)] {
        let base = Case {
            m,
            n,
            k,
            x_offset: 1,
            x_stride: k + 2,
            y_offset: 4,
            y_stride: n + 6,
            bias: true,
            bias_offset: 0,
            accumulate: false,
        };
        let x = rand_vec(11, base.x_len(), -1.0, 1.0);
        let w = rand_vec(12, n * k, -1.0, 1.0);
        let bias = rand_vec(13, n, -1.0, 1.0);
        let y0 = vec![0.0; base.y_len()];
        let (x_b, bias_b) = (upload(&x), upload(&bias));
        let (w_b, w0_b, w1_b) = (upload(&w), upload(&w[..split * k]), upload(&w[split * k..]));
        let (y_b, y_paged_b) = (upload(&y0), upload(&y0));
        let whole = bind(
            kernel,
            &base.params(),
            MatmulBuffers {
                x: &x_b,
                w: &w_b,
                bias: &bias_b,
                y: &y_b,
            },
        );
        let page0 = Case { n: split, ..base };
        let page1 = Case {
            n: n - split,
            y_offset: base.y_offset + split,
            bias_offset: split,
            ..base
        };
        let p0 = bind(
            kernel,
            &page0.params(),
            MatmulBuffers {
                x: &x_b,
                w: &w0_b,
                bias: &bias_b,
                y: &y_paged_b,
            },
        );
        let p1 = bind(
            kernel,
            &page1.params(),
            MatmulBuffers {
                x: &x_b,
                w: &w1_b,
                bias: &bias_b,
                y: &y_paged_b,
            },
        );
        run(ctx(), &[&whole, &p0, &p1]).unwrap();
        let got_whole = read::<f32>(&y_b, base.y_len());
        let got_paged = read::<f32>(&y_paged_b, base.y_len());
        // Each output is the same sum in the same order whichever page holds its row.
        assert_eq!(got_paged, got_whole, "{kernel:?}: paged vs whole");
        let mut want = y0.clone();
        let out = linear(&x, base.x_offset, base.x_stride, m, &w, n, k, Some(&bias));
        write_rows(&mut want, base.y_offset, base.y_stride, false, &out, n);
        let (atol, rtol) = tolerance(k, &x, &w);
        assert_close(&format!("{kernel:?} paged"), &got_paged, &want, atol, rtol);
    }
}

#[test]
fn gemv_folds_past_65535_workgroups() {
    // 8 outputs per group: n = 8·65,538 + 1 needs 65,539 groups (the last with one real row),
    // folded into (32,770, 2) with one spare group; k = 2 keeps w at 4 MiB.
    let c = Case::plain(2, 8 * 65_538 + 1, 2).with_bias(true);
    assert_eq!(Gemv::workgroups(&c.params()), [32_770, 2, 1]);
    check(Kernel::Gemv, c);
}

#[test]
fn matmul_reads_its_tile_from_a_folded_grid() {
    // A real fold needs 65,536 tiles, ~20 s on lavapipe; the shader cannot tell a fold of
    // 65,536 tiles from this one: 5 × 2 tiles dispatched as (4, 3), tile = x + 4y, 2 spare.
    let ctx = ctx();
    let c = Case::plain(300, 70, 20).with_bias(true);
    let x = rand_vec(21, c.x_len(), -1.0, 1.0);
    let w = rand_vec(22, c.n * c.k, -1.0, 1.0);
    let bias = rand_vec(23, c.n, -1.0, 1.0);
    let (x_b, w_b, bias_b, y_b) = (upload(&x), upload(&w), upload(&bias), zeros(c.y_len()));
    let info = mamba_wgpu::kernels::matmul::INFO;
    let pipeline = ctx
        .pipeline(info.label, info.source, info.bindings)
        .unwrap();
    let d = Dispatch::new(
        ctx,
        &pipeline,
        &c.params(),
        &[&x_b, &w_b, &bias_b, &y_b],
        [4, 3, 1],
    );
    run(ctx, &[&d]).unwrap();
    let mut want = vec![0.0; c.y_len()];
    let out = linear(&x, 0, c.k, c.m, &w, c.n, c.k, Some(&bias));
    write_rows(&mut want, 0, c.n, false, &out, c.n);
    let (atol, rtol) = tolerance(c.k, &x, &w);
    assert_close(
        "matmul folded",
        &read::<f32>(&y_b, c.y_len()),
        &want,
        atol,
        rtol,
    );
    // And the geometry folds where it must: 1 × 65,537 tiles.
    let big = Case::plain(64 * 65_536 + 1, 1, 1);
    assert_eq!(Matmul::workgroups(&big.params()), [32_769, 2, 1]);
}

#[test]
fn f16_packing_and_rounding_twins_match_hand_computed() {
    // Row [1, -2, 0.5]: halves 0x3C00, 0xC000, 0x3800, then the +0.0 pad of an odd row.
    assert_eq!(
        pack_f16_rows(&[1.0, -2.0, 0.5, 3.0, 0.0, -0.25], 2, 3),
        vec![0xC000_3C00, 0x0000_3800, 0x0000_4200, 0x0000_B400]
    );
    // f16 has 10 significand bits: near 1 the step is 2^-10, ties go to the even significand.
    let r = round_to_f16(&[
        1.0 + 2f32.powi(-11),
        1.0 + 3.0 * 2f32.powi(-11),
        1e-8,
        65519.0,
    ]);
    assert_eq!(r, vec![1.0, 1.0 + 2f32.powi(-9), 0.0, 65504.0]);
    assert_eq!(WeightDtype::F16.row_words(7), 4);
    assert_eq!(WeightDtype::F32.row_words(7), 7);
}

#[test]
fn f16_weights_are_widened_exactly() {
    // k = 1 and x = 1 make y the widened weight itself: normals, subnormals (down to 2^-24),
    // signed zeros, the largest f16 and values that round. Both kernels must give the twin's
    // rounded value bit for bit.
    let w = [
        1.0,
        -1.5,
        0.1,
        -3.0e-5,
        6.0e-8,
        2f32.powi(-24),
        -2f32.powi(-14),
        6.1e-5,
        0.0,
        -0.0,
        65504.0,
        -65519.0,
        1234.567,
        -0.3333,
        7.0,
    ];
    let n = w.len();
    let want = round_to_f16(&w);
    for kernel in [Kernel::Matmul, Kernel::Gemv] {
        let c = Case::plain(1, n, 1);
        let (w_b, _) = weight_as(WeightDtype::F16, &w, n, 1);
        let (x_b, y_b) = (upload(&[1.0f32]), zeros(n));
        let d = bind_as(
            ctx(),
            kernel,
            WeightDtype::F16,
            &c.params(),
            MatmulBuffers {
                x: &x_b,
                w: &w_b,
                bias: &x_b,
                y: &y_b,
            },
        );
        run(ctx(), &[&d]).unwrap();
        // Compared as f32 values: exact, except that the sum 0 + (-0.0) is +0.0 (as in the twin).
        assert_eq!(read::<f32>(&y_b, n), want, "{kernel:?}");
    }
}

#[test]
fn f16_matmul_and_gemv_match_reference_on_awkward_shapes() {
    for kernel in [Kernel::Matmul, Kernel::Gemv] {
        for (i, &(m, n, k)) in SHAPES.iter().enumerate() {
            check_as(
                kernel,
                WeightDtype::F16,
                Case::plain(m, n, k).with_bias(i.is_multiple_of(2)),
            );
        }
    }
    check_as(
        Kernel::Matmul,
        WeightDtype::F16,
        Case::plain(1030, 5, 3).with_bias(true),
    );
    // Rows of x in passes of 4 (1, 2, 5, 9, 16) and k around the 64 lanes, which now walk
    // 2-value words: 63 and 65 end on a pad half, 128 and 129 fill exactly 64 and 65 words.
    for &m in &[1, 2, 5, 9, 16] {
        for &(n, k) in &[
            (1, 1),
            (3, 63),
            (6, 64),
            (13, 65),
            (9, 128),
            (10, 129),
            (33, 200),
        ] {
            check_as(
                Kernel::Gemv,
                WeightDtype::F16,
                Case::plain(m, n, k).with_bias(!m.is_multiple_of(2)),
            );
        }
    }
}

#[test]
fn f16_kernels_on_a_vocab_sized_output_with_strided_x_and_accumulate() {
    for kernel in [Kernel::Gemv, Kernel::Matmul] {
        check_as(
            kernel,
            WeightDtype::F16,
            Case::plain(2, 50_280, 25).with_bias(true),
        );
        for &(m, bias, accumulate) in &[(1, false, false), (5, true, false), (70, true, true)] {
            check_as(
                kernel,
                WeightDtype::F16,
                Case {
                    m,
                    n: 33,
                    k: 19,
                    x_offset: 2 * 50 + 5,
                    x_stride: 3 * 50,
                    y_offset: 3,
                    y_stride: 70,
                    bias,
                    bias_offset: 2,
                    accumulate,
                },
            );
        }
    }
}

#[test]
fn f16_paged_matrix_respects_the_binding_limit_and_equals_the_unsplit_product() {
    // w [97, 101]: 51 words (204 bytes) per packed row. A 9,996-byte binding limit holds 49
    // packed rows (it would hold 24 f32 rows), so the matrix splits into pages of 49 and 48
    // rows, one dispatch each with y_offset and bias_offset at the page's first row.
    let (n, k, row_bytes) = (97usize, 101usize, 204u64);
    let small = GpuContext::with_options(&ContextOptions {
        storage_binding_limit: Some(49 * row_bytes),
        ..Default::default()
    })
    .unwrap();
    let w = rand_vec(31, n * k, -1.0, 1.0);
    let pm = PagedMatrix::from_slice_as(&small, "w", &w, n, k, WeightDtype::F16).unwrap();
    let rows: Vec<(usize, usize)> = pm.pages.iter().map(|p| (p.row_start, p.rows)).collect();
    assert_eq!(rows, vec![(0, 49), (49, 48)]);
    assert!(pm
        .pages
        .iter()
        .all(|p| p.buffer().unwrap().size() <= 49 * row_bytes));
    assert_eq!(pm.bytes(), n as u64 * row_bytes);
    let f32_pages = PagedMatrix::from_slice(&small, "w32", &w, n, k)
        .unwrap()
        .pages
        .len();
    assert_eq!(f32_pages, 5);

    let wr = round_to_f16(&w);
    // x and y stay under the small limit too: 20 rows of matmul, 5 of gemv.
    for (kernel, m) in [(Kernel::Gemv, 5usize), (Kernel::Matmul, 20)] {
        let base = Case {
            m,
            n,
            k,
            x_offset: 1,
            x_stride: k + 2,
            y_offset: 4,
            y_stride: n + 6,
            bias: true,
            bias_offset: 0,
            accumulate: false,
        };
        let x = rand_vec(32, base.x_len(), -1.0, 1.0);
        let bias = rand_vec(33, n, -1.0, 1.0);
        let up = |v: &[f32]| small.storage_buffer_init("test", v).unwrap();
        let (x_b, bias_b, y_b) = (up(&x), up(&bias), up(&vec![0.0; base.y_len()]));
        let dispatches: Vec<Dispatch> = pm
            .pages
            .iter()
            .map(|p| {
                let c = Case {
                    n: p.rows,
                    y_offset: base.y_offset + p.row_start,
                    bias_offset: p.row_start,
                    ..base
                };
                let b = MatmulBuffers {
                    x: &x_b,
                    w: p.buffer().unwrap(),
                    bias: &bias_b,
                    y: &y_b,
                };
                bind_as(&small, kernel, WeightDtype::F16, &c.params(), b)
            })
            .collect();
        run(&small, &dispatches.iter().collect::<Vec<_>>()).unwrap();
        let got: Vec<f32> = small.read_buffer(&y_b, 0, base.y_len()).unwrap();
        let mut want = vec![0.0; base.y_len()];
        let out = linear(&x, base.x_offset, base.x_stride, m, &wr, n, k, Some(&bias));
        write_rows(&mut want, base.y_offset, base.y_stride, false, &out, n);
        let (atol, rtol) = tolerance(k, &x, &wr);
        assert_close(&format!("{kernel:?} f16 paged"), &got, &want, atol, rtol);
    }
}

#[test]
fn f16_storage_refuses_values_beyond_its_range() {
    let ok = PagedMatrix::from_slice_as(ctx(), "w", &[65519.0, -1.0], 1, 2, WeightDtype::F16);
    assert!(ok.is_ok(), "65519 rounds to 65504");
    match PagedMatrix::from_slice_as(ctx(), "w", &[1.0, -65520.0], 2, 1, WeightDtype::F16) {
        Err(Error::InvalidInput(msg)) => assert!(msg.contains("[1, 0]"), "{msg}"),
        other => panic!("expected an f16 range error, got {other:?}"),
    }
}
