//! linear_tex (texture-stored weights) against `reference::matmul::{linear, write_rows}`.
//!
//! Tolerance: as for matmul/gemv (tests/kernels/matmul.rs), the kernel and the twin sum the
//! same k products in f32 in different orders (8-column blocks), so atol = 1e-6·k·max|x|·max|w|
//! plus rtol = 1e-5·sqrt(k). f16 textures: the twin multiplies the weights rounded to f16, the
//! very values the kernel widens, so the same tolerance applies.
//!
//! Shapes: m of 1 (the single-row path), 2, 3, 5, 6 (4-row blocks with clamped rows); n not a
//! multiple of 4 or of 256 (clamped rows of w); k of 8 (one block) up to 776; textures with
//! several rows per line, rows filling lines exactly and not, and several pages (a context whose
//! texture dimension limit is tiny).

use mamba_wgpu::kernels::linear_tex::{
    ConvStepBindings, LinearTex, LinearTexBindings, LinearTexParams, Path, FLAG_BIAS, FLAG_CONV,
    FLAG_CONV_BIAS, FLAG_NORM,
};
use mamba_wgpu::kernels::{run, Dispatch};
use mamba_wgpu::reference::matmul::{linear, round_to_f16, write_rows};
use mamba_wgpu::tensor::{
    pack_f16_texels, Page, PageStorage, PagedMatrix, WeightDtype, WeightStorage,
};
use mamba_wgpu::{ContextOptions, Error, GpuContext};

use crate::common::*;

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
    accumulate: bool,
}

impl Case {
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
            accumulate: false,
        }
    }

    /// Strided x (a multiple of 4 as the kernel requires), a column slice of a wider y, bias
    /// and accumulate.
    fn strided(m: usize, n: usize, k: usize) -> Self {
        Self {
            m,
            n,
            k,
            x_offset: 8,
            x_stride: k + 4,
            y_offset: 3,
            y_stride: n + 5,
            bias: true,
            accumulate: true,
        }
    }

    /// [`Case::strided`] with x's rows 256 bytes apart (the stride rounded up to 64
    /// elements), which the x-texture pipelines' copy can take.
    fn row_aligned(m: usize, n: usize, k: usize) -> Self {
        Self {
            x_stride: (k + 4).next_multiple_of(64),
            ..Self::strided(m, n, k)
        }
    }

    fn x_len(&self) -> usize {
        self.x_offset + self.m.saturating_sub(1) * self.x_stride + self.k + 4
    }

    fn y_len(&self) -> usize {
        self.y_offset + self.m.saturating_sub(1) * self.y_stride + self.n + 3
    }
}

/// Runs `kernel` once per texture page of `pm`, as the model records a paged product:
/// `params(page)` with the page's `rows_per_line` filled in and checked, bound to
/// `bindings(view)`.
fn run_pages<'a>(
    gpu: &GpuContext,
    kernel: &LinearTex,
    pm: &'a PagedMatrix,
    params: impl Fn(&Page) -> LinearTexParams,
    bindings: impl Fn(&'a wgpu::TextureView) -> LinearTexBindings<'a>,
) {
    let dispatches: Vec<Dispatch> = pm
        .pages
        .iter()
        .map(|p| {
            let PageStorage::Texture {
                view,
                rows_per_line,
                ..
            } = &p.storage
            else {
                panic!("buffer page");
            };
            let params = LinearTexParams {
                rows_per_line: *rows_per_line as u32,
                ..params(p)
            };
            LinearTex::check(&params).unwrap();
            kernel.bind(gpu, &params, bindings(view))
        })
        .collect();
    run(gpu, &dispatches.iter().collect::<Vec<_>>()).unwrap();
}

/// Runs `c` with w stored as `dtype` in textures on `gpu` (one dispatch per page) and compares
/// the whole y buffer with the twin. Returns the page count.
fn check_on(gpu: &GpuContext, dtype: WeightDtype, c: Case) -> usize {
    // Both lane variants where the device has subgroups (lavapipe, which CI uses, does), each
    // in both workgroup sizes.
    for narrow in [true, false] {
        if gpu.features().subgroup {
            check_variant(gpu, dtype, false, true, narrow, c);
        }
    }
    check_variant(gpu, dtype, false, false, true, c);
    check_variant(gpu, dtype, false, false, false, c)
}

/// The all-rows pipeline of a variant, its x-texture twin where the case's x rows can be
/// copied into a texture (what the model takes for prefill products on CPU adapters) and, for
/// one row of x (`m` = 1), its one-row twin (what the model takes for decode products), each
/// with a name for messages.
fn kernels(
    gpu: &GpuContext,
    dtype: WeightDtype,
    native: bool,
    subgroup: bool,
    narrow: bool,
    (m, k, x_stride): (usize, usize, usize),
) -> Vec<(LinearTex, &'static str)> {
    let mut v = vec![(
        LinearTex::variant(gpu, dtype, native, subgroup, narrow).unwrap(),
        "all rows",
    )];
    if LinearTex::supports_x_texture(gpu, k as u32, x_stride as u32, m as u32) {
        let xt = LinearTex::variant_with_path(gpu, dtype, native, subgroup, narrow, Path::XTexture)
            .unwrap();
        assert!(xt.reads_x_texture() && !xt.is_one_row());
        v.push((xt, "x texture"));
    }
    if m == 1 {
        let one = LinearTex::variant_with_path(gpu, dtype, native, subgroup, narrow, Path::OneRow)
            .unwrap();
        assert!(one.is_one_row());
        v.push((one, "one row"));
    }
    v
}

/// [`check_on`] with the unpack2x16float variant when `native` (f16 only), sharing x across
/// subgroup lanes when `subgroup`, in workgroups of 8 invocations when `narrow` (64 if not).
fn check_variant(
    gpu: &GpuContext,
    dtype: WeightDtype,
    native: bool,
    subgroup: bool,
    narrow: bool,
    c: Case,
) -> usize {
    let seed = (c.m * 1_000_003 + c.n * 1009 + c.k) as u64 + 77;
    let x = rand_vec(seed + 1, c.x_len(), -1.0, 1.0);
    let w = rand_vec(seed + 2, c.n * c.k, -1.0, 1.0);
    let bias = rand_vec(seed + 3, c.n, -1.0, 1.0);
    let y0 = rand_vec(seed + 4, c.y_len(), -1.0, 1.0);
    let pm = PagedMatrix::from_slice_stored(gpu, "w", &w, c.n, c.k, dtype, WeightStorage::Texture)
        .unwrap();
    assert!(pm.is_texture(), "{c:?}: expected texture pages");
    let w_eff = match dtype {
        WeightDtype::F32 => w.clone(),
        WeightDtype::F16 => round_to_f16(&w),
        WeightDtype::Q8_0 | WeightDtype::Q4_0 => {
            unreachable!("block formats are never stored in textures")
        }
    };
    let out = linear(
        &x,
        c.x_offset,
        c.x_stride,
        c.m,
        &w_eff,
        c.n,
        c.k,
        c.bias.then_some(&bias[..]),
    );
    let mut want = y0.clone();
    write_rows(&mut want, c.y_offset, c.y_stride, c.accumulate, &out, c.n);

    for (kernel, path) in kernels(gpu, dtype, native, subgroup, narrow, (c.m, c.k, c.x_stride)) {
        let up = |v: &[f32]| gpu.storage_buffer_init("test", v).unwrap();
        let (x_b, bias_b, y_b) = (up(&x), up(&bias), up(&y0));
        let unused_rw = up(&[0.0]);
        let x_tex = kernel
            .reads_x_texture()
            .then(|| LinearTex::x_texture(gpu, c.k as u32, c.m as u32).unwrap());
        run_pages(
            gpu,
            &kernel,
            &pm,
            |p| LinearTexParams {
                m: c.m as u32,
                n: p.rows as u32,
                k: c.k as u32,
                x_offset: c.x_offset as u32,
                x_stride: c.x_stride as u32,
                y_offset: (c.y_offset + p.row_start) as u32,
                y_stride: c.y_stride as u32,
                bias_offset: p.row_start as u32,
                flags: c.bias as u32 | (c.accumulate as u32) << 1,
                ..Default::default()
            },
            |view| LinearTexBindings {
                x: &x_b,
                w: view,
                bias: &bias_b,
                y: &y_b,
                conv: ConvStepBindings::unused(&x_b, &unused_rw),
                norm: &x_b,
                x_texture: x_tex.as_ref(),
            },
        );
        let got: Vec<f32> = gpu.read_buffer(&y_b, 0, c.y_len()).unwrap();
        let max = |v: &[f32]| v.iter().fold(0.0f32, |a, b| a.max(b.abs()));
        let kf = c.k as f32;
        assert_close(
            &format!("linear_tex {dtype:?} native {native} subgroup {subgroup} narrow {narrow} {path} {c:?}"),
            &got,
            &want,
            1e-6 * kf * max(&x) * max(&w_eff),
            1e-5 * kf.sqrt(),
        );
    }
    pm.pages.len()
}

const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 8),
    (1, 5, 16),
    (1, 257, 48),
    (2, 3, 24),
    (3, 7, 8),
    (4, 256, 64),
    (5, 300, 40),
    (6, 33, 776),
    (17, 129, 96),
    // Around the 16 rows of x a workgroup takes (4 groups of 4, partial groups skipped).
    (15, 64, 32),
    (16, 260, 56),
    (31, 70, 8),
    (33, 5, 136),
    // Around the 32 outputs of a narrow workgroup (x_proj-like n of 80).
    (1, 31, 24),
    (1, 33, 16),
    (1, 80, 96),
    (7, 65, 16),
];

#[test]
fn texture_linear_matches_reference_on_awkward_shapes() {
    for dtype in [WeightDtype::F32, WeightDtype::F16] {
        for &(m, n, k) in SHAPES {
            check_on(ctx(), dtype, Case::plain(m, n, k));
            check_on(ctx(), dtype, Case::strided(m, n, k));
            check_on(ctx(), dtype, Case::row_aligned(m, n, k));
        }
    }
}

#[test]
fn unpack_f16_variant_matches_reference_where_the_device_has_it() {
    if !ctx().features().f16_unpack {
        // The integer-widening variant runs instead (tested above); lavapipe, which CI uses,
        // has it, so this path is exercised there.
        assert!(LinearTex::variant(ctx(), WeightDtype::F16, true, false, true).is_err());
        return;
    }
    let subgroup = ctx().features().subgroup;
    for (i, &(m, n, k)) in SHAPES.iter().enumerate() {
        let narrow = i % 2 == 0;
        check_variant(
            ctx(),
            WeightDtype::F16,
            true,
            subgroup,
            narrow,
            Case::plain(m, n, k),
        );
        check_variant(
            ctx(),
            WeightDtype::F16,
            true,
            false,
            !narrow,
            Case::strided(m, n, k),
        );
    }
    // Subnormal and extreme halves are converted exactly: w is diagonal, x all ones, so
    // y[r] is w[r][r] as the kernel widened it (one column per row covers every texel lane).
    let vals = [
        6.0e-8f32,
        -6.1e-5,
        3.0e-5,
        65504.0,
        -65504.0,
        1.0,
        -0.0,
        0.099975586,
    ];
    let mut w = vec![0.0f32; 64];
    for (r, v) in vals.iter().enumerate() {
        w[r * 8 + r] = *v;
    }
    let pm = PagedMatrix::from_slice_stored(
        ctx(),
        "w",
        &w,
        8,
        8,
        WeightDtype::F16,
        WeightStorage::Texture,
    )
    .unwrap();
    let PageStorage::Texture {
        view,
        rows_per_line,
        ..
    } = &pm.pages[0].storage
    else {
        panic!("buffer page");
    };
    let (x_b, y_b) = (upload(&[1.0f32; 8]), zeros(8));
    let params = LinearTexParams {
        m: 1,
        n: 8,
        k: 8,
        x_stride: 8,
        y_stride: 8,
        rows_per_line: *rows_per_line as u32,
        ..Default::default()
    };
    let d = LinearTex::variant(ctx(), WeightDtype::F16, true, false, false)
        .unwrap()
        .bind(
            ctx(),
            &params,
            LinearTexBindings {
                x: &x_b,
                w: view,
                bias: &x_b,
                y: &y_b,
                conv: ConvStepBindings::unused(&x_b, &zeros(1)),
                norm: &x_b,
                x_texture: None,
            },
        );
    run(ctx(), &[&d]).unwrap();
    assert_eq!(read::<f32>(&y_b, 8), round_to_f16(&vals));
}

#[test]
fn texture_linear_on_a_vocab_sized_output() {
    for dtype in [WeightDtype::F32, WeightDtype::F16] {
        check_on(ctx(), dtype, Case::plain(1, 5003, 64));
        check_on(ctx(), dtype, Case::strided(3, 2051, 32));
    }
}

#[test]
fn texture_pages_and_lines_under_a_small_dimension_limit() {
    // 16 texels per side: k = 24 is 6 f32 texels per row (2 rows per 12-texel line, 32 rows
    // per page) or 3 f16 texels (5 rows per 15-texel line, 80 rows per page).
    let small = GpuContext::with_options(&ContextOptions {
        texture_dimension_limit: Some(16),
        ..Default::default()
    })
    .unwrap();
    for (dtype, n, pages) in [
        (WeightDtype::F32, 70, 3),
        (WeightDtype::F32, 64, 2),
        (WeightDtype::F16, 161, 3),
        (WeightDtype::F16, 7, 1),
    ] {
        for m in [1, 5] {
            assert_eq!(check_on(&small, dtype, Case::strided(m, n, 24)), pages);
        }
    }
    // A row wider than a line (k = 72: 18 f32 texels) cannot be a texture: buffers instead.
    let w = vec![0.5; 3 * 72];
    let pm = PagedMatrix::from_slice_stored(
        &small,
        "w",
        &w,
        3,
        72,
        WeightDtype::F32,
        WeightStorage::Texture,
    )
    .unwrap();
    assert!(!pm.is_texture());
    // As f16 it is 9 texels and fits.
    let pm = PagedMatrix::from_slice_stored(
        &small,
        "w",
        &w,
        3,
        72,
        WeightDtype::F16,
        WeightStorage::Texture,
    )
    .unwrap();
    assert!(pm.is_texture());
}

#[test]
fn texture_storage_needs_whole_blocks_and_aligned_x() {
    // k not a multiple of 8: buffers.
    let w = vec![0.25; 2 * 12];
    let pm = PagedMatrix::from_slice_stored(
        ctx(),
        "w",
        &w,
        2,
        12,
        WeightDtype::F32,
        WeightStorage::Texture,
    )
    .unwrap();
    assert!(!pm.is_texture());
    assert!(!LinearTex::supports(12, 12));
    assert!(!LinearTex::supports(16, 18));
    assert!(LinearTex::supports(16, 20));
    for bad in [
        LinearTexParams {
            k: 12,
            rows_per_line: 1,
            ..Default::default()
        },
        LinearTexParams {
            k: 16,
            x_stride: 18,
            rows_per_line: 1,
            ..Default::default()
        },
        LinearTexParams {
            k: 16,
            x_offset: 2,
            rows_per_line: 1,
            ..Default::default()
        },
        LinearTexParams {
            k: 16,
            ..Default::default()
        },
    ] {
        assert!(
            matches!(LinearTex::check(&bad), Err(Error::Shape(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn f16_texel_packing_matches_hand_computed() {
    let v: Vec<f32> = vec![1.0, 2.0, -0.5, 0.0, 65504.0, -2.0, 0.099975586, 6.0e-8];
    let h = |x: f32| half::f16::from_f32(x).to_bits() as u32;
    let want: Vec<u32> = (0..4).map(|j| h(v[j]) | h(v[4 + j]) << 16).collect();
    assert_eq!(pack_f16_texels(&v), want);
    // 1.0 = 0x3c00 low, 65504 = 0x7bff high.
    assert_eq!(want[0], 0x7bff_3c00);
}

#[test]
fn texture_workgroups_fold_past_65535_rows_of_x() {
    let p = LinearTexParams {
        m: mamba_wgpu::kernels::linear_tex::ROWS_PER_GROUP * 70_000,
        n: 300,
        k: 8,
        ..Default::default()
    };
    let [x, y, z] = LinearTex::workgroups(&p);
    assert_eq!(x, 2);
    assert!(y <= 65_535 && z >= 2 && y * z >= 70_000, "{y} {z}");
    assert_eq!(LinearTex::workgroups(&LinearTexParams { m: 0, ..p })[0], 0);
    // Narrow workgroups: 32 outputs each, the same rows of x.
    assert_eq!(LinearTex::workgroups_narrow(&p), [10, y, z]);
    let one = LinearTexParams { m: 1, n: 80, ..p };
    assert_eq!(LinearTex::workgroups_narrow(&one), [3, 1, 1]);
    assert_eq!(LinearTex::workgroups(&one), [1, 1, 1]);
}

/// The conv step fused after the product (decode): `m` sequences of one token, the product's
/// columns `start .. start + channels` fed to a K-tap conv whose state and output are checked
/// against `reference::conv1d` with `len` = 1, run on the twin's product. Every page of `w`
/// is one dispatch with its own `col_base`, as the model records it.
#[allow(clippy::too_many_arguments)]
fn check_conv(
    gpu: &GpuContext,
    dtype: WeightDtype,
    subgroup: bool,
    narrow: bool,
    (m, n, k): (usize, usize, usize),
    (start, channels, kernel): (usize, usize, usize),
    with_bias: bool,
) -> usize {
    let what = format!(
        "conv {dtype:?} subgroup {subgroup} narrow {narrow} m {m} n {n} k {k} start {start} channels {channels} K {kernel} bias {with_bias}"
    );
    let seed = (m * 7919 + n * 104_729 + k * 31 + start * 7 + channels + kernel) as u64;
    let x = rand_vec(seed, m * k, -1.0, 1.0);
    let w = rand_vec(seed + 1, n * k, -1.0, 1.0);
    let cw = rand_vec(seed + 2, channels * kernel, -0.5, 0.5);
    let cb = rand_vec(seed + 3, channels, -0.5, 0.5);
    let state0 = rand_vec(seed + 4, m * channels * (kernel - 1), -1.0, 1.0);
    let pm =
        PagedMatrix::from_slice_stored(gpu, "w", &w, n, k, dtype, WeightStorage::Texture).unwrap();
    assert!(pm.is_texture(), "{what}: expected texture pages");
    let w_eff = match dtype {
        WeightDtype::F16 => round_to_f16(&w),
        _ => w.clone(),
    };
    let prod = linear(&x, 0, k, m, &w_eff, n, k, None);
    // The conv's input of sequence b is the product's row b, columns start .. start + channels.
    let u: Vec<f32> = (0..m)
        .flat_map(|b| prod[b * n + start..][..channels].to_vec())
        .collect();
    let mut want_state = state0.clone();
    let want_out = mamba_wgpu::reference::conv1d::conv1d(
        &u,
        &cw,
        with_bias.then_some(&cb[..]),
        &mut want_state,
        mamba_wgpu::reference::conv1d::Conv1dShape {
            batch: m,
            len: 1,
            channels,
            kernel,
        },
    );

    for (tex, path) in kernels(gpu, dtype, false, subgroup, narrow, (m, k, k)) {
        let up = |v: &[f32]| gpu.storage_buffer_init("test", v).unwrap();
        let x_tex = tex
            .reads_x_texture()
            .then(|| LinearTex::x_texture(gpu, k as u32, m as u32).unwrap());
        let (x_b, y_b, cw_b, cb_b) = (up(&x), up(&vec![0.0; m * n]), up(&cw), up(&cb));
        let (state_b, out_b) = (up(&state0), up(&vec![f32::NAN; m * channels + 3]));
        run_pages(
            gpu,
            &tex,
            &pm,
            |p| LinearTexParams {
                m: m as u32,
                n: p.rows as u32,
                k: k as u32,
                x_stride: k as u32,
                y_offset: p.row_start as u32,
                y_stride: n as u32,
                flags: FLAG_CONV | if with_bias { FLAG_CONV_BIAS } else { 0 },
                col_base: p.row_start as u32,
                conv_start: start as u32,
                conv_channels: channels as u32,
                conv_kernel: kernel as u32,
                conv_out_stride: channels as u32,
                ..Default::default()
            },
            |view| LinearTexBindings {
                x: &x_b,
                w: view,
                bias: &x_b,
                y: &y_b,
                conv: ConvStepBindings {
                    weight: &cw_b,
                    bias: &cb_b,
                    state: &state_b,
                    out: &out_b,
                },
                norm: &x_b,
                x_texture: x_tex.as_ref(),
            },
        );
        let tol = 1e-6 * k as f32;
        assert_close(
            &format!("{what} {path}: product"),
            &gpu.read_buffer::<f32>(&y_b, 0, m * n).unwrap(),
            &prod,
            tol,
            1e-5,
        );
        // The conv sums K products of values within the product's tolerance.
        let got_out: Vec<f32> = gpu.read_buffer(&out_b, 0, m * channels + 3).unwrap();
        assert_close(
            &format!("{what} {path}: conv out"),
            &got_out[..m * channels],
            &want_out,
            tol * kernel as f32,
            1e-5,
        );
        assert!(
            got_out[m * channels..].iter().all(|v| v.is_nan()),
            "{what} {path}: wrote past the output"
        );
        assert_close(
            &format!("{what} {path}: conv state"),
            &gpu.read_buffer::<f32>(&state_b, 0, state0.len()).unwrap(),
            &want_state,
            tol,
            1e-5,
        );
    }
    pm.pages.len()
}

#[test]
fn conv_step_fuses_after_the_product() {
    // Mamba-1's layout (x channels first), Mamba-2's (channels after a z block, and a dt
    // block after them), one sequence and several, K of 4, 2 and 1, with and without bias,
    // channel counts that are not multiples of 4 or of a workgroup's 32 outputs.
    let cases = [
        ((1, 96, 24), (0, 48, 4), true),
        ((3, 70, 16), (0, 35, 4), false),
        ((2, 100, 32), (20, 61, 4), true),
        ((1, 40, 8), (8, 30, 2), true),
        ((4, 33, 8), (1, 31, 1), false),
        // x rows 256 bytes apart: the x-texture pipelines too (batched decode on CPUs).
        ((3, 70, 64), (5, 41, 4), true),
    ];
    for (i, &(shape, conv, bias)) in cases.iter().enumerate() {
        for dtype in [WeightDtype::F32, WeightDtype::F16] {
            let narrow = i % 2 == 0;
            if ctx().features().subgroup {
                check_conv(ctx(), dtype, true, narrow, shape, conv, bias);
            }
            check_conv(ctx(), dtype, false, !narrow, shape, conv, bias);
        }
    }
    // Several texture pages (a 16-texel limit: 2 f32 rows of k = 24 per line, 32 per page),
    // the conv channels straddling the page boundaries.
    let small = GpuContext::with_options(&ContextOptions {
        texture_dimension_limit: Some(16),
        ..Default::default()
    })
    .unwrap();
    let pages = check_conv(
        &small,
        WeightDtype::F32,
        false,
        true,
        (2, 90, 24),
        (10, 70, 4),
        true,
    );
    assert_eq!(pages, 3);
    // More than 8 taps is refused.
    let bad = LinearTexParams {
        k: 8,
        rows_per_line: 1,
        flags: FLAG_CONV,
        conv_kernel: 9,
        ..Default::default()
    };
    assert!(matches!(LinearTex::check(&bad), Err(Error::Shape(_))));
}

/// The RMSNorm fused in front of a one-row product against `reference::rmsnorm` then the
/// twin's product (with bias), on every variant the device has.
fn check_norm(
    gpu: &GpuContext,
    dtype: WeightDtype,
    subgroup: bool,
    narrow: bool,
    n: usize,
    k: usize,
) {
    let what = format!("norm {dtype:?} subgroup {subgroup} narrow {narrow} n {n} k {k}");
    let seed = (n * 1009 + k) as u64 + 5;
    let x = rand_vec(seed, k, -2.0, 2.0);
    let g = rand_vec(seed + 1, k, 0.5, 1.5);
    let w = rand_vec(seed + 2, n * k, -1.0, 1.0);
    let bias = rand_vec(seed + 3, n, -1.0, 1.0);
    let eps = 1e-5;
    let mut residual = x.clone();
    let normed = mamba_wgpu::reference::rmsnorm(&mut residual, None, &g, k, eps);
    let w_eff = match dtype {
        WeightDtype::F16 => round_to_f16(&w),
        _ => w.clone(),
    };
    let want = linear(&normed, 0, k, 1, &w_eff, n, k, Some(&bias));
    let pm =
        PagedMatrix::from_slice_stored(gpu, "w", &w, n, k, dtype, WeightStorage::Texture).unwrap();
    for (kernel, path) in kernels(gpu, dtype, false, subgroup, narrow, (1, k, k)) {
        let up = |v: &[f32]| gpu.storage_buffer_init("test", v).unwrap();
        let x_tex = kernel
            .reads_x_texture()
            .then(|| LinearTex::x_texture(gpu, k as u32, 1).unwrap());
        let (x_b, g_b, bias_b, y_b, rw) =
            (up(&x), up(&g), up(&bias), up(&vec![0.0; n]), up(&[0.0]));
        run_pages(
            gpu,
            &kernel,
            &pm,
            |p| LinearTexParams {
                m: 1,
                n: p.rows as u32,
                k: k as u32,
                x_stride: k as u32,
                y_offset: p.row_start as u32,
                y_stride: n as u32,
                bias_offset: p.row_start as u32,
                flags: FLAG_BIAS | FLAG_NORM,
                col_base: p.row_start as u32,
                norm_eps: eps,
                ..Default::default()
            },
            |view| LinearTexBindings {
                x: &x_b,
                w: view,
                bias: &bias_b,
                y: &y_b,
                conv: ConvStepBindings::unused(&x_b, &rw),
                norm: &g_b,
                x_texture: x_tex.as_ref(),
            },
        );
        let got: Vec<f32> = gpu.read_buffer(&y_b, 0, n).unwrap();
        // The twin normalises first and sums after; the kernel sums x·g·w and scales last: the
        // same products in another order, plus the mean square's own rounding (relative ~k·2^-24).
        let max = |v: &[f32]| v.iter().fold(0.0f32, |a, b| a.max(b.abs()));
        assert_close(
            &format!("{what} {path}"),
            &got,
            &want,
            1e-6 * k as f32 * max(&normed) * max(&w_eff),
            1e-5 * (k as f32).sqrt(),
        );
    }
}

#[test]
fn rmsnorm_fuses_in_front_of_a_one_row_product() {
    // k of one block, around the 8 shared vec4s (32 columns per shared load of 4 blocks),
    // and mamba-130m's 768; n around the narrow workgroup's 32 outputs.
    for &(n, k) in &[(5, 8), (33, 24), (64, 40), (70, 136), (31, 768)] {
        for dtype in [WeightDtype::F32, WeightDtype::F16] {
            for narrow in [true, false] {
                if ctx().features().subgroup {
                    check_norm(ctx(), dtype, true, narrow, n, k);
                }
                check_norm(ctx(), dtype, false, narrow, n, k);
            }
        }
    }
    // More than one row is refused (only the one-row path has the norm).
    let bad = LinearTexParams {
        m: 2,
        k: 8,
        rows_per_line: 1,
        flags: FLAG_NORM,
        ..Default::default()
    };
    assert!(matches!(LinearTex::check(&bad), Err(Error::Shape(_))));
    // The one-row pipelines take one row of x and say so for two; the all-rows ones take both.
    let two = LinearTexParams { flags: 0, ..bad };
    let one_row =
        LinearTex::variant_with_path(ctx(), WeightDtype::F32, false, false, true, Path::OneRow)
            .unwrap();
    let all_rows = LinearTex::variant(ctx(), WeightDtype::F32, false, false, true).unwrap();
    assert!(matches!(one_row.check_rows(&two), Err(Error::Shape(_))));
    assert!(one_row.check_rows(&LinearTexParams { m: 1, ..two }).is_ok());
    assert!(all_rows.check_rows(&two).is_ok());
}
