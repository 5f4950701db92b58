//! GPU tensors: f32 storage buffers with their shapes, and row-paged matrices for weights larger
//! than one storage binding (the f32 embedding of mamba-130m is 154 MB against lavapipe's and
//! WebGPU's default 128 MiB binding limit).

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

/// One page of a [`PagedMatrix`]: rows `row_start .. row_start + rows`.
#[derive(Debug)]
pub struct Page {
    /// `[rows, cols]` f32.
    pub buffer: wgpu::Buffer,
    /// First row of the matrix held here.
    pub row_start: usize,
    /// Rows held here.
    pub rows: usize,
}

/// A `[rows, cols]` f32 matrix stored as pages of whole rows, each page within the device's
/// storage binding limit. Kernels that read it run one dispatch per page.
#[derive(Debug)]
pub struct PagedMatrix {
    /// The pages, in row order.
    pub pages: Vec<Page>,
    /// Rows (output features, or vocabulary entries).
    pub rows: usize,
    /// Columns (input features).
    pub cols: usize,
}

impl PagedMatrix {
    /// Uploads a row-major `[rows, cols]` matrix, split into as few pages as the binding limit allows.
    pub fn from_slice(
        ctx: &GpuContext,
        label: &str,
        data: &[f32],
        rows: usize,
        cols: usize,
    ) -> Result<Self> {
        if rows.checked_mul(cols) != Some(data.len()) || rows == 0 || cols == 0 {
            return Err(Error::Shape(format!(
                "{label}: {} values for [{rows}, {cols}]",
                data.len()
            )));
        }
        let row_bytes = cols as u64 * 4;
        let limit = ctx.storage_binding_limit();
        if row_bytes > limit {
            return Err(Error::LimitExceeded {
                what: format!("one row of {label}"),
                needed: row_bytes,
                limit,
            });
        }
        let rows_per_page = ((limit / row_bytes) as usize).min(rows);
        let mut pages = Vec::new();
        let mut start = 0;
        while start < rows {
            let n = rows_per_page.min(rows - start);
            let buffer = ctx.storage_buffer_init(label, &data[start * cols..(start + n) * cols])?;
            pages.push(Page {
                buffer,
                row_start: start,
                rows: n,
            });
            start += n;
        }
        Ok(Self { pages, rows, cols })
    }

    /// Bytes of weight data.
    pub fn bytes(&self) -> u64 {
        (self.rows * self.cols * 4) as u64
    }
}
