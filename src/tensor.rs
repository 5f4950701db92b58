//! GPU tensors: f32 storage buffers with their shapes, and row-paged weight matrices (f32, or f16
//! packed two halves per u32) for weights larger than one storage binding (the f32 embedding of
//! mamba-130m is 154 MB against lavapipe's and WebGPU's default 128 MiB binding limit).

use crate::context::GpuContext;
use crate::error::{Error, Result};

/// A contiguous f32 tensor in one storage buffer, row-major.
#[derive(Debug)]
pub struct GpuTensor {
    /// The buffer (at least one element, since zero-sized bindings are invalid).
    pub buffer: wgpu::Buffer,
    /// The shape.
    pub shape: Vec<usize>,
}

impl GpuTensor {
    /// Uploads `data` with `shape`.
    pub fn from_slice(
        ctx: &GpuContext,
        label: &str,
        data: &[f32],
        shape: &[usize],
    ) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::Shape(format!(
                "{label}: {} values for shape {shape:?}",
                data.len()
            )));
        }
        Ok(Self {
            buffer: ctx.storage_buffer_init(label, data)?,
            shape: shape.to_vec(),
        })
    }

    /// A zeroed tensor.
    pub fn zeros(ctx: &GpuContext, label: &str, shape: &[usize]) -> Result<Self> {
        let n: usize = shape.iter().product();
        Ok(Self {
            buffer: ctx.storage_buffer(label, n)?,
            shape: shape.to_vec(),
        })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How a [`PagedMatrix`] stores its values on the GPU. Activations, states and sums stay f32
/// whatever this says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WeightDtype {
    /// One f32 per value: row `r` of a page is words `r·cols .. (r + 1)·cols`.
    #[default]
    F32,
    /// IEEE binary16, rounded to nearest even from f32 on upload, two values per u32 word:
    /// row `r` of a page is words `r·w .. (r + 1)·w` with `w = ceil(cols / 2)`, word `j` holding
    /// column `2j` in its low 16 bits and column `2j + 1` in its high 16 bits (what WGSL's
    /// `unpack2x16float` returns as `.x` and `.y`). When `cols` is odd the last word's high half
    /// is +0.0, so every row starts on a word and a kernel may multiply the pad by anything
    /// finite. Needs no shader feature: kernels read u32 words and unpack them.
    F16,
}

impl WeightDtype {
    /// u32 words of one row of `cols` values.
    pub fn row_words(self, cols: usize) -> usize {
        match self {
            WeightDtype::F32 => cols,
            WeightDtype::F16 => cols.div_ceil(2),
        }
    }

    /// The name used in options and reports (`f32`, `f16`).
    pub fn name(self) -> &'static str {
        match self {
            WeightDtype::F32 => "f32",
            WeightDtype::F16 => "f16",
        }
    }
}

impl std::str::FromStr for WeightDtype {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(WeightDtype::F32),
            "f16" => Ok(WeightDtype::F16),
            other => Err(Error::InvalidInput(format!(
                "unknown weight dtype `{other}` (f32 or f16)"
            ))),
        }
    }
}

/// Packs a row-major `[rows, cols]` f32 matrix into the [`WeightDtype::F16`] layout: each value
/// rounded to the nearest f16 (ties to even), two per u32 word, each row padded to a whole
/// word with +0.0. Values that overflow f16 (|v| > 65504) become ±Inf; callers check.
pub fn pack_f16_rows(data: &[f32], rows: usize, cols: usize) -> Vec<u32> {
    let words = WeightDtype::F16.row_words(cols);
    let mut out = Vec::with_capacity(rows * words);
    for row in data.chunks_exact(cols.max(1)).take(rows) {
        for pair in row.chunks(2) {
            let lo = half::f16::from_f32(pair[0]).to_bits() as u32;
            let hi = pair
                .get(1)
                .map_or(0, |&v| half::f16::from_f32(v).to_bits() as u32);
            out.push(lo | hi << 16);
        }
    }
    out
}

/// One page of a [`PagedMatrix`]: rows `row_start .. row_start + rows`.
#[derive(Debug)]
pub struct Page {
    /// `[rows, row_words]` u32 words in the matrix's [`WeightDtype`] layout (f32 values for
    /// [`WeightDtype::F32`]).
    pub buffer: wgpu::Buffer,
    /// First row of the matrix held here.
    pub row_start: usize,
    /// Rows held here.
    pub rows: usize,
}

/// A `[rows, cols]` weight matrix stored as pages of whole rows, each page within the device's
/// storage binding limit, in f32 or packed f16 (see [`WeightDtype`] for the row layout).
/// Kernels that read it run one dispatch per page.
#[derive(Debug)]
pub struct PagedMatrix {
    /// The pages, in row order.
    pub pages: Vec<Page>,
    /// Rows (output features, or vocabulary entries).
    pub rows: usize,
    /// Columns (input features): logical values per row, before any f16 padding.
    pub cols: usize,
    /// How the values are stored.
    pub dtype: WeightDtype,
}

impl PagedMatrix {
    /// Uploads a row-major `[rows, cols]` f32 matrix, split into as few pages as the binding
    /// limit allows.
    pub fn from_slice(
        ctx: &GpuContext,
        label: &str,
        data: &[f32],
        rows: usize,
        cols: usize,
    ) -> Result<Self> {
        Self::from_slice_as(ctx, label, data, rows, cols, WeightDtype::F32)
    }

    /// Uploads a row-major `[rows, cols]` f32 matrix stored as `dtype` (rounded to f16 on the
    /// CPU for [`WeightDtype::F16`]), split into as few pages of whole rows as the binding limit
    /// allows. Fails if a value does not fit f16 (|v| > 65504 would become Inf).
    pub fn from_slice_as(
        ctx: &GpuContext,
        label: &str,
        data: &[f32],
        rows: usize,
        cols: usize,
        dtype: WeightDtype,
    ) -> Result<Self> {
        if rows.checked_mul(cols) != Some(data.len()) || rows == 0 || cols == 0 {
            return Err(Error::Shape(format!(
                "{label}: {} values for [{rows}, {cols}]",
                data.len()
            )));
        }
        let words = dtype.row_words(cols);
        let row_bytes = words as u64 * 4;
        let limit = ctx.storage_binding_limit();
        if row_bytes > limit {
            return Err(Error::LimitExceeded {
                what: format!("one row of {label}"),
                needed: row_bytes,
                limit,
            });
        }
        let packed;
        let data: &[u32] = match dtype {
            WeightDtype::F32 => bytemuck::cast_slice(data),
            WeightDtype::F16 => {
                if let Some(i) = data.iter().position(|v| v.abs() >= F16_OVERFLOW) {
                    return Err(Error::InvalidInput(format!(
                        "{label}: value {} at [{}, {}] does not fit f16 weight storage (|v| ≤ 65504); load it as f32",
                        data[i],
                        i / cols,
                        i % cols
                    )));
                }
                packed = pack_f16_rows(data, rows, cols);
                &packed
            }
        };
        let rows_per_page = ((limit / row_bytes) as usize).min(rows);
        let mut pages = Vec::new();
        let mut start = 0;
        while start < rows {
            let n = rows_per_page.min(rows - start);
            let buffer =
                ctx.storage_buffer_init(label, &data[start * words..(start + n) * words])?;
            pages.push(Page {
                buffer,
                row_start: start,
                rows: n,
            });
            start += n;
        }
        Ok(Self {
            pages,
            rows,
            cols,
            dtype,
        })
    }

    /// Bytes of weight data (padding included).
    pub fn bytes(&self) -> u64 {
        (self.rows * self.dtype.row_words(self.cols) * 4) as u64
    }
}

/// The smallest |v| that rounds to Inf in f16: halfway between the largest finite f16, 65504,
/// and the next step of 32 (the tie goes to the even significand, which is Inf).
const F16_OVERFLOW: f32 = 65520.0;
