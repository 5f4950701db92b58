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
    /// ggml's Q8_0: blocks of 32 values sharing an f16 scale `d`, each value `d · q` with `q`
    /// a signed byte, 9 u32 words per block (the scale's bits, then the 32 bytes): see
    /// [`crate::kernels::gemv_q8_0`]. 1.125 bytes per value. Rows must be whole blocks
    /// (`cols % 32 == 0`). A GGUF file's Q8_0 tensors are uploaded as they are; other sources
    /// are quantised on load as ggml does (`d = max|v| / 127`, `q = round(v / d)`). Read by a
    /// kernel that dequantises as it goes (storage buffers only).
    Q8_0,
    /// ggml's Q4_0: blocks of 32 values sharing an f16 scale `d`, each value `d · (q − 8)` with
    /// `q` a 4-bit unsigned quant, 5 u32 words per block (the scale's bits, then the 16 bytes of
    /// two quants each): see [`crate::kernels::gemv_q4_0`]. 0.625 bytes per value. Rows must be
    /// whole blocks (`cols % 32 == 0`). A GGUF file's Q4_0 tensors are uploaded as they are;
    /// other sources are quantised on load as ggml does (`d = max / −8` with `max` the value of
    /// largest magnitude, sign kept; `q = min(15, trunc(v / d + 8.5))`). Read by a kernel that
    /// dequantises as it goes (storage buffers only).
    Q4_0,
}

impl WeightDtype {
    /// Whether values are stored in 32-value blocks with a shared scale (Q8_0, Q4_0): rows must
    /// be whole blocks, and only storage buffers hold them.
    pub fn is_blocks(self) -> bool {
        matches!(self, WeightDtype::Q8_0 | WeightDtype::Q4_0)
    }

    /// u32 words of one row of `cols` values.
    pub fn row_words(self, cols: usize) -> usize {
        match self {
            WeightDtype::F32 => cols,
            WeightDtype::F16 => cols.div_ceil(2),
            WeightDtype::Q8_0 => cols.div_ceil(32) * 9,
            WeightDtype::Q4_0 => cols.div_ceil(32) * 5,
        }
    }

    /// The name used in options and reports (`f32`, `f16`, `q8_0`, `q4_0`).
    pub fn name(self) -> &'static str {
        match self {
            WeightDtype::F32 => "f32",
            WeightDtype::F16 => "f16",
            WeightDtype::Q8_0 => "q8_0",
            WeightDtype::Q4_0 => "q4_0",
        }
    }
}

impl std::str::FromStr for WeightDtype {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(WeightDtype::F32),
            "f16" => Ok(WeightDtype::F16),
            "q8_0" => Ok(WeightDtype::Q8_0),
            "q4_0" => Ok(WeightDtype::Q4_0),
            other => Err(Error::InvalidInput(format!(
                "unknown weight dtype `{other}` (f32, f16, q8_0 or q4_0)"
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

/// Where the pages of a [`PagedMatrix`] live. Kernels are written once against a weight
/// accessor; the storage picks which variant runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WeightStorage {
    /// Textures where the device reads them faster ([`GpuContext::prefers_texture_weights`]:
    /// CPU adapters such as lavapipe) and the matrix qualifies, storage buffers otherwise.
    #[default]
    Auto,
    /// Storage buffers: the portable path, and the fast one on GPUs.
    Buffer,
    /// 2-D textures wherever the matrix qualifies (columns a multiple of 8, one row within the
    /// texture width), storage buffers for the rest.
    Texture,
}

impl WeightStorage {
    /// Whether a matrix of `cols` columns stored as `dtype` goes into textures on `ctx`.
    pub fn uses_texture(self, ctx: &GpuContext, cols: usize, dtype: WeightDtype) -> bool {
        match self {
            WeightStorage::Buffer => false,
            WeightStorage::Texture => PagedMatrix::texture_fits(ctx, cols, dtype),
            WeightStorage::Auto => {
                ctx.prefers_texture_weights() && PagedMatrix::texture_fits(ctx, cols, dtype)
            }
        }
    }

    /// The name used in options and reports (`auto`, `buffer`, `texture`).
    pub fn name(self) -> &'static str {
        match self {
            WeightStorage::Auto => "auto",
            WeightStorage::Buffer => "buffer",
            WeightStorage::Texture => "texture",
        }
    }
}

impl std::str::FromStr for WeightStorage {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(WeightStorage::Auto),
            "buffer" => Ok(WeightStorage::Buffer),
            "texture" => Ok(WeightStorage::Texture),
            other => Err(Error::InvalidInput(format!(
                "unknown weight storage `{other}` (auto, buffer or texture)"
            ))),
        }
    }
}

/// The GPU object holding one page.
#[derive(Debug)]
pub enum PageStorage {
    /// `[rows, row_words]` u32 words in the matrix's [`WeightDtype`] layout (f32 values for
    /// [`WeightDtype::F32`]).
    Buffer(wgpu::Buffer),
    /// A 2-D texture, rgba32float (4 f32 per texel) for [`WeightDtype::F32`] or rgba32uint
    /// (8 f16 per texel: word j of texel i holds column 8i + j in its low half and 8i + 4 + j
    /// in its high half) for [`WeightDtype::F16`]. Row r of the page is the `cols / 4` or
    /// `cols / 8` texels from ((r % rows_per_line) · texels per row, r / rows_per_line): a row
    /// never straddles two lines.
    Texture {
        /// The texture.
        texture: wgpu::Texture,
        /// A view of all of it.
        view: wgpu::TextureView,
        /// Rows per line of the texture.
        rows_per_line: usize,
    },
}

/// One page of a [`PagedMatrix`]: rows `row_start .. row_start + rows`.
#[derive(Debug)]
pub struct Page {
    /// Where the rows live.
    pub storage: PageStorage,
    /// First row of the matrix held here.
    pub row_start: usize,
    /// Rows held here.
    pub rows: usize,
}

impl Page {
    /// The storage buffer, when the page lives in one.
    pub fn buffer(&self) -> Option<&wgpu::Buffer> {
        match &self.storage {
            PageStorage::Buffer(b) => Some(b),
            PageStorage::Texture { .. } => None,
        }
    }
}

/// A `[rows, cols]` weight matrix stored as pages of whole rows, each page within the device's
/// storage binding limit (buffers) or texture dimension limit (textures), in f32 or packed f16
/// (see [`WeightDtype`] and [`PageStorage`] for the layouts). Kernels that read it run one
/// dispatch per page.
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
    /// Uploads a row-major `[rows, cols]` f32 matrix into storage buffers, split into as few
    /// pages as the binding limit allows.
    pub fn from_slice(
        ctx: &GpuContext,
        label: &str,
        data: &[f32],
        rows: usize,
        cols: usize,
    ) -> Result<Self> {
        Self::from_slice_as(ctx, label, data, rows, cols, WeightDtype::F32)
    }

    /// Uploads a row-major `[rows, cols]` f32 matrix into storage buffers as `dtype` (see
    /// [`PagedMatrix::from_slice_stored`]).
    pub fn from_slice_as(
        ctx: &GpuContext,
        label: &str,
        data: &[f32],
        rows: usize,
        cols: usize,
        dtype: WeightDtype,
    ) -> Result<Self> {
        Self::from_slice_stored(ctx, label, data, rows, cols, dtype, WeightStorage::Buffer)
    }

    /// Whether a matrix of `cols` columns can live in textures on `ctx`: whole 8-column blocks
    /// (what the texture kernels read at a time) and one row within the texture width.
    pub fn texture_fits(ctx: &GpuContext, cols: usize, dtype: WeightDtype) -> bool {
        // Bound as read-only storage textures (see BindingKind::TextureFloat).
        ctx.limits().max_storage_textures_per_shader_stage >= 1
            && !dtype.is_blocks()
            && cols > 0
            && cols.is_multiple_of(8)
            && texels_per_row(cols, dtype) <= ctx.texture_dimension_limit() as usize
    }

    /// Uploads a row-major `[rows, cols]` f32 matrix stored as `dtype` (rounded to f16 on the
    /// CPU for [`WeightDtype::F16`]) in `storage` (resolved against the device and the shape;
    /// see [`WeightStorage`]), split into as few pages of whole rows as the device's limits
    /// allow. Fails if a value does not fit f16 (|v| > 65504 would become Inf).
    pub fn from_slice_stored(
        ctx: &GpuContext,
        label: &str,
        data: &[f32],
        rows: usize,
        cols: usize,
        dtype: WeightDtype,
        storage: WeightStorage,
    ) -> Result<Self> {
        if rows.checked_mul(cols) != Some(data.len()) || rows == 0 || cols == 0 {
            return Err(Error::Shape(format!(
                "{label}: {} values for [{rows}, {cols}]",
                data.len()
            )));
        }
        if dtype.is_blocks() && !cols.is_multiple_of(32) {
            return Err(Error::Shape(format!(
                "{label}: {} storage needs rows of whole 32-value blocks, got {cols} columns",
                dtype.name()
            )));
        }
        if dtype == WeightDtype::F16 {
            if let Some(i) = data.iter().position(|v| v.abs() >= F16_OVERFLOW) {
                return Err(Error::InvalidInput(format!(
                    "{label}: value {} at [{}, {}] does not fit f16 weight storage (|v| ≤ 65504); load it as f32",
                    data[i],
                    i / cols,
                    i % cols
                )));
            }
        }
        let pages = if storage.uses_texture(ctx, cols, dtype) {
            texture_pages(ctx, label, data, rows, cols, dtype)?
        } else {
            buffer_pages(ctx, label, data, rows, cols, dtype)?
        };
        Ok(Self {
            pages,
            rows,
            cols,
            dtype,
        })
    }

    /// Uploads a `[rows, cols]` matrix already in the Q8_0 words of
    /// [`crate::kernels::gemv_q8_0::repack_q8_0`] (a GGUF file's Q8_0 tensor, uploaded without
    /// widening), paged to the binding limit.
    pub fn from_q8_0_words(
        ctx: &GpuContext,
        label: &str,
        words: &[u32],
        rows: usize,
        cols: usize,
    ) -> Result<Self> {
        Self::from_block_words(ctx, label, words, rows, cols, WeightDtype::Q8_0)
    }

    /// Uploads a `[rows, cols]` matrix already in the Q4_0 words of
    /// [`crate::kernels::gemv_q4_0::repack_q4_0`] (a GGUF file's Q4_0 tensor, uploaded without
    /// widening), paged to the binding limit.
    pub fn from_q4_0_words(
        ctx: &GpuContext,
        label: &str,
        words: &[u32],
        rows: usize,
        cols: usize,
    ) -> Result<Self> {
        Self::from_block_words(ctx, label, words, rows, cols, WeightDtype::Q4_0)
    }

    /// [`PagedMatrix::from_q8_0_words`] and [`PagedMatrix::from_q4_0_words`]: `words` in the
    /// layout of `dtype`, a block format.
    fn from_block_words(
        ctx: &GpuContext,
        label: &str,
        words: &[u32],
        rows: usize,
        cols: usize,
        dtype: WeightDtype,
    ) -> Result<Self> {
        let row_words = dtype.row_words(cols);
        if rows == 0
            || !dtype.is_blocks()
            || !cols.is_multiple_of(32)
            || rows.checked_mul(row_words) != Some(words.len())
        {
            return Err(Error::Shape(format!(
                "{label}: {} {} words for [{rows}, {cols}]",
                words.len(),
                dtype.name()
            )));
        }
        let row_bytes = row_words as u64 * 4;
        let limit = ctx.storage_binding_limit();
        if row_bytes > limit {
            return Err(Error::LimitExceeded {
                what: format!("one row of {label}"),
                needed: row_bytes,
                limit,
            });
        }
        Ok(Self {
            pages: words_to_pages(ctx, label, words, rows, row_words)?,
            rows,
            cols,
            dtype,
        })
    }

    /// Whether the pages are textures.
    pub fn is_texture(&self) -> bool {
        matches!(
            self.pages.first().map(|p| &p.storage),
            Some(PageStorage::Texture { .. })
        )
    }

    /// Bytes of weight data (padding within rows included).
    pub fn bytes(&self) -> u64 {
        if self.is_texture() {
            (self.rows * texels_per_row(self.cols, self.dtype) * 16) as u64
        } else {
            (self.rows * self.dtype.row_words(self.cols) * 4) as u64
        }
    }
}

/// Texels of one texture-stored row (cols a multiple of 8).
fn texels_per_row(cols: usize, dtype: WeightDtype) -> usize {
    match dtype {
        WeightDtype::F32 => cols / 4,
        WeightDtype::F16 => cols / 8,
        // Never stored in textures (`texture_fits` is false); the blocks' 16-byte count.
        WeightDtype::Q8_0 | WeightDtype::Q4_0 => dtype.row_words(cols).div_ceil(4),
    }
}

fn buffer_pages(
    ctx: &GpuContext,
    label: &str,
    data: &[f32],
    rows: usize,
    cols: usize,
    dtype: WeightDtype,
) -> Result<Vec<Page>> {
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
            packed = pack_f16_rows(data, rows, cols);
            &packed
        }
        WeightDtype::Q8_0 => {
            packed = quantize_q8_0_rows(data, rows, cols)?;
            &packed
        }
        WeightDtype::Q4_0 => {
            packed = quantize_q4_0_rows(data, rows, cols)?;
            &packed
        }
    };
    words_to_pages(ctx, label, data, rows, words)
}

/// Pages of whole rows of `words` u32 words each, as many rows per page as the binding limit
/// allows (the caller checked that one row fits).
fn words_to_pages(
    ctx: &GpuContext,
    label: &str,
    data: &[u32],
    rows: usize,
    words: usize,
) -> Result<Vec<Page>> {
    let row_bytes = words as u64 * 4;
    let limit = ctx.storage_binding_limit();
    let rows_per_page = ((limit / row_bytes) as usize).min(rows);
    let mut pages = Vec::new();
    let mut start = 0;
    while start < rows {
        let n = rows_per_page.min(rows - start);
        let buffer = ctx.storage_buffer_init(label, &data[start * words..(start + n) * words])?;
        pages.push(Page {
            storage: PageStorage::Buffer(buffer),
            row_start: start,
            rows: n,
        });
        start += n;
    }
    Ok(pages)
}

/// Pages of at most `rows_per_line × limit` rows, each a texture `rows_per_line × tpr` texels
/// wide (`tpr` texels per row, `rows_per_line = limit / tpr`) and one line per
/// `rows_per_line` rows; the last line is zero-padded.
fn texture_pages(
    ctx: &GpuContext,
    label: &str,
    data: &[f32],
    rows: usize,
    cols: usize,
    dtype: WeightDtype,
) -> Result<Vec<Page>> {
    let limit = ctx.texture_dimension_limit() as usize;
    let tpr = texels_per_row(cols, dtype);
    let rows_per_line = (limit / tpr).min(rows);
    let rows_per_page = rows_per_line * limit;
    let format = match dtype {
        WeightDtype::F32 => wgpu::TextureFormat::Rgba32Float,
        WeightDtype::F16 | WeightDtype::Q8_0 | WeightDtype::Q4_0 => wgpu::TextureFormat::Rgba32Uint,
    };
    let words_of = |rows: &[f32]| -> Vec<u32> {
        match dtype {
            WeightDtype::F32 => bytemuck::cast_slice(rows).to_vec(),
            WeightDtype::F16 => pack_f16_texels(rows),
            WeightDtype::Q8_0 | WeightDtype::Q4_0 => {
                unreachable!("block formats are never stored in textures")
            }
        }
    };
    let mut pages = Vec::new();
    let mut start = 0;
    while start < rows {
        let n = rows_per_page.min(rows - start);
        let width = (rows_per_line * tpr) as u32;
        let height = n.div_ceil(rows_per_line) as u32;
        let mut words = words_of(&data[start * cols..(start + n) * cols]);
        words.resize(width as usize * height as usize * 4, 0);
        let size = wgpu::Extent3d {
            width,
            height,
            depth_or_array_layers: 1,
        };
        let texture = ctx.storage_texture(label, format, width, height);
        ctx.queue().write_texture(
            wgpu::TexelCopyTextureInfo {
                texture: &texture,
                mip_level: 0,
                origin: wgpu::Origin3d::ZERO,
                aspect: wgpu::TextureAspect::All,
            },
            bytemuck::cast_slice(&words),
            wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(width * 16),
                rows_per_image: Some(height),
            },
            size,
        );
        let view = texture.create_view(&wgpu::TextureViewDescriptor::default());
        pages.push(Page {
            storage: PageStorage::Texture {
                texture,
                view,
                rows_per_line,
            },
            row_start: start,
            rows: n,
        });
        start += n;
    }
    Ok(pages)
}

/// Quantises a row-major `[rows, cols]` f32 matrix (`cols % 32 == 0`) to Q8_0 as ggml's
/// reference quantiser does, in the kernel's words: per block of 32, `d = max|v| / 127` stored
/// as f16, `q = round(v / d)` (ties away from zero) with the f32 `d`, so `|v − f16(d)·q|` is at
/// most half a step plus d's own rounding. A non-finite value is an error.
pub fn quantize_q8_0_rows(data: &[f32], rows: usize, cols: usize) -> Result<Vec<u32>> {
    if !cols.is_multiple_of(32) || rows.checked_mul(cols) != Some(data.len()) {
        return Err(Error::Shape(format!(
            "Q8_0: {} values for [{rows}, {cols}] (columns must be whole blocks of 32)",
            data.len()
        )));
    }
    let mut out = Vec::with_capacity(data.len() / 32 * 9);
    for (i, block) in data.chunks_exact(32).enumerate() {
        if let Some(j) = block.iter().position(|v| !v.is_finite()) {
            return Err(Error::InvalidInput(format!(
                "value {} at [{}, {}] cannot be quantised",
                block[j],
                (i * 32 + j) / cols,
                (i * 32 + j) % cols
            )));
        }
        let amax = block.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.push(half::f16::from_f32(d).to_bits() as u32);
        for q in block.chunks_exact(4) {
            let b = |v: f32| ((v * id).round() as i32 as i8) as u8;
            out.push(u32::from_le_bytes([b(q[0]), b(q[1]), b(q[2]), b(q[3])]));
        }
    }
    Ok(out)
}

/// Quantises a row-major `[rows, cols]` f32 matrix (`cols % 32 == 0`) to Q4_0 as ggml's
/// reference quantiser (`quantize_row_q4_0_ref`) does, in the kernel's words: per block of 32,
/// `max` the value of largest magnitude with its sign (the first such), `d = max / −8` stored
/// as f16, `q = min(15, trunc(v / d + 8.5))` computed as `v · (1/d) + 8.5` with the f32 `d`
/// (`max` itself gets q = 0, i.e. −8·d). `|v − f16(d)·(q − 8)|` is at most half a step `|d|/2`
/// plus 8·|d − f16(d)|, except on the side opposite `max`, where v / d in (7.5, 8] clips to
/// q = 15 and errs by up to a whole step. A non-finite value is an error.
pub fn quantize_q4_0_rows(data: &[f32], rows: usize, cols: usize) -> Result<Vec<u32>> {
    if !cols.is_multiple_of(32) || rows.checked_mul(cols) != Some(data.len()) {
        return Err(Error::Shape(format!(
            "Q4_0: {} values for [{rows}, {cols}] (columns must be whole blocks of 32)",
            data.len()
        )));
    }
    let mut out = Vec::with_capacity(data.len() / 32 * 5);
    for (i, block) in data.chunks_exact(32).enumerate() {
        if let Some(j) = block.iter().position(|v| !v.is_finite()) {
            return Err(Error::InvalidInput(format!(
                "value {} at [{}, {}] cannot be quantised",
                block[j],
                (i * 32 + j) / cols,
                (i * 32 + j) % cols
            )));
        }
        // The first value of largest magnitude, sign kept (ggml compares with `<`).
        let max = block
            .iter()
            .fold(0.0f32, |m, &v| if m.abs() < v.abs() { v } else { m });
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.push(half::f16::from_f32(d).to_bits() as u32);
        // v · id lies in [−8, 8], so the sum is never negative; −max gives 16, clipped to 15.
        let q = |v: f32| ((v * id + 8.5) as u32).min(15);
        // Byte j holds quant j (low nibble) and quant 16 + j (high nibble).
        for t in 0..4 {
            let byte = |j: usize| q(block[j]) | q(block[16 + j]) << 4;
            out.push(
                byte(4 * t) | byte(4 * t + 1) << 8 | byte(4 * t + 2) << 16 | byte(4 * t + 3) << 24,
            );
        }
    }
    Ok(out)
}

/// Packs rows of f32 (their length a multiple of 8) into the f16 texel layout of
/// [`PageStorage::Texture`]: for each 8 values, 4 words, word `j` = `f16(v[j]) | f16(v[4 + j]) << 16`.
pub fn pack_f16_texels(data: &[f32]) -> Vec<u32> {
    let h = |v: f32| half::f16::from_f32(v).to_bits() as u32;
    data.chunks_exact(8)
        .flat_map(|b| (0..4).map(move |j| h(b[j]) | h(b[4 + j]) << 16))
        .collect()
}

/// The smallest |v| that rounds to Inf in f16: halfway between the largest finite f16, 65504,
/// and the next step of 32 (the tie goes to the even significand, which is Inf).
const F16_OVERFLOW: f32 = 65520.0;
