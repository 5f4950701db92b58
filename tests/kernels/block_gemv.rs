//! Shared by the tests of the GEMVs over ggml's block formats (gemv_q8_0, gemv_q4_0): the
//! call layouts and the comparison with a format's twin. Each format's file brings its
//! kernel, repack, twin and its own block generator and hand-made cases.
//!
//! Tolerance: the kernel and the twin multiply the same f32 values (a scale times a small
//! integer is exact in f32) and differ only in the order of the f32 sums, as for `gemv`:
//! atol = 1e-6·k·max|x|·max|w| plus rtol = 1e-5·sqrt(k) (see tests/kernels/matmul.rs).

use mamba_wgpu::error::Result;
use mamba_wgpu::kernels::matmul::{MatmulBuffers, MatmulParams};
use mamba_wgpu::kernels::{run, Dispatch};
use mamba_wgpu::reference::matmul::write_rows;
use mamba_wgpu::GpuContext;

use crate::common::*;

/// One call's layout: x rows with an offset and stride, y a column slice of wider rows,
/// optional bias (with an offset) and accumulation.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub x_offset: usize,
    pub x_stride: usize,
    pub y_offset: usize,
    pub y_stride: usize,
    pub bias: bool,
    pub bias_offset: usize,
    pub accumulate: bool,
}

impl Case {
    pub fn plain(m: usize, n: usize, k: usize) -> Self {
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

    pub fn params(&self) -> MatmulParams {
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

    pub fn x_len(&self) -> usize {
        self.x_offset + self.m.saturating_sub(1) * self.x_stride + self.k + 3
    }

    pub fn y_len(&self) -> usize {
        self.y_offset + self.m.saturating_sub(1) * self.y_stride + self.n + 3
    }
}

/// The twin's signature: (x, x_offset, x_stride, m, GGUF blocks, n, k, bias) -> `[m, n]`.
pub type Twin = fn(&[f32], usize, usize, usize, &[u8], usize, usize, Option<&[f32]>) -> Vec<f32>;

/// What the shared check needs of one block format.
pub struct Format {
    pub name: &'static str,
    pub twin: Twin,
    pub dequantize: fn(&[u8]) -> Vec<f32>,
    pub repack: fn(&[u8], usize, usize) -> Result<Vec<u32>>,
    pub check_params: fn(&MatmulParams) -> Result<()>,
    pub bind: fn(&GpuContext, &MatmulParams, MatmulBuffers<'_>) -> Dispatch,
}

pub fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0f32, |a, b| a.max(b.abs()))
}

/// Runs the format's kernel on `w_blocks` (GGUF bytes of an `[n, k]` matrix) and random x,
/// bias and y laid out as `c` says, and compares the whole y buffer with the twin.
pub fn check_with(f: &Format, c: Case, w_blocks: &[u8]) {
    let seed = (c.m * 1_000_003 + c.n * 1009 + c.k) as u64;
    let x = rand_vec(seed + 1, c.x_len(), -1.0, 1.0);
    let bias = rand_vec(seed + 3, c.bias_offset + c.n + 2, -1.0, 1.0);
    let y0 = rand_vec(seed + 4, c.y_len(), -1.0, 1.0);
    let out = (f.twin)(
        &x,
        c.x_offset,
        c.x_stride,
        c.m,
        w_blocks,
        c.n,
        c.k,
        c.bias.then_some(&bias[c.bias_offset..]),
    );
    let mut want = y0.clone();
    write_rows(&mut want, c.y_offset, c.y_stride, c.accumulate, &out, c.n);

    (f.check_params)(&c.params()).unwrap();
    let words = (f.repack)(w_blocks, c.n, c.k).unwrap();
    // A zero-sized binding is invalid: k = 0 still binds one word.
    let w_b = upload(if words.is_empty() {
        &[0u32][..]
    } else {
        &words
    });
    let (x_b, bias_b, y_b) = (upload(&x), upload(&bias), upload(&y0));
    let d = (f.bind)(
        ctx(),
        &c.params(),
        MatmulBuffers {
            x: &x_b,
            w: &w_b,
            bias: &bias_b,
            y: &y_b,
        },
    );
    run(ctx(), &[&d]).unwrap();
    let w = (f.dequantize)(w_blocks);
    let (atol, rtol) = (
        1e-6 * c.k.max(1) as f32 * max_abs(&x) * max_abs(&w),
        1e-5 * (c.k.max(1) as f32).sqrt(),
    );
    assert_close(
        &format!("{} {c:?}", f.name),
        &read::<f32>(&y_b, c.y_len()),
        &want,
        atol,
        rtol,
    );
}
