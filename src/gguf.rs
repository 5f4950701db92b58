//! A strict reader of GGUF files (versions 2 and 3, little-endian), the format llama.cpp's
//! converter writes: a header, typed metadata (key → value, arrays nested to any depth the
//! format allows up to [`MAX_ARRAY_DEPTH`]), tensor infos (name, dimensions, ggml type, offset),
//! then the tensor data, aligned to `general.alignment` (32 by default).
//!
//! Layout (every integer little-endian; a string is a u64 byte length then UTF-8 bytes):
//! ```text
//! "GGUF" u32 version | u64 tensor_count | u64 kv_count
//! kv_count × (string key, u32 value_type, value)          array value: u32 type, u64 count, items
//! tensor_count × (string name, u32 n_dims, n_dims × u64 ne, u32 ggml_type, u64 offset)
//! padding to the alignment, then the data section; a tensor starts at data_start + offset
//! ```
//! ggml lists dimensions fastest first (`ne[0]` is the row length), so a numpy `[rows, cols]`
//! matrix is stored as `ne = [cols, rows]`; [`TensorInfo::shape`] gives them back in row-major
//! order (`[rows, cols]`).
//!
//! The file comes from a stranger, so every count, length and offset is checked against the
//! bytes that remain, with checked arithmetic, before anything is allocated from it: a count
//! that cannot fit in the file, a string of 2^40 bytes, a tensor whose element count overflows,
//! an offset past the end, overlapping or misaligned tensors, an unknown type: each is an
//! [`Error::Checkpoint`], never a panic or a huge allocation. Metadata values are validated once
//! (UTF-8 strings, 0/1 booleans, known types) and decoded on request from the file's bytes, so
//! a hostile array costs no more memory than the file itself.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::bytes::FileBytes;
use crate::error::{Error, Result};

/// The four bytes every GGUF file starts with.
pub const MAGIC: [u8; 4] = *b"GGUF";

/// The data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// How deep arrays of arrays may nest (the walk is recursive; this bounds the stack).
pub const MAX_ARRAY_DEPTH: usize = 8;

/// Most dimensions a tensor may have (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;

/// A ggml tensor type, by its id in the file. The types mamba-wgpu converts are named
/// constants; [`GgmlType::name`] and [`GgmlType::block`] know every type gguf-py 0.19 lists,
/// so a file holding others still parses (their byte sizes are checked) and only reading such
/// a tensor is an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GgmlType(pub u32);

/// (id, name, elements per block, bytes per block), from gguf-py's `GGML_QUANT_SIZES`.
const GGML_TYPES: &[(u32, &str, u64, u64)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 40),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
    (40, "NVFP4", 64, 36),
    (41, "Q1_0", 128, 18),
];

impl GgmlType {
    /// 32-bit floats.
    pub const F32: GgmlType = GgmlType(0);
    /// IEEE half floats.
    pub const F16: GgmlType = GgmlType(1);
    /// Blocks of 32 weights: an f16 scale `d`, then 16 bytes `qs` of two 4-bit quants each;
    /// for j < 16, weight j = d · ((qs_j & 0xF) − 8) and weight j + 16 = d · ((qs_j >> 4) − 8).
    pub const Q4_0: GgmlType = GgmlType(2);
    /// Blocks of 32 weights: an f16 scale `d`, then 32 signed bytes `q`; weight = d · q.
    pub const Q8_0: GgmlType = GgmlType(8);
    /// bfloat16 (the top half of an f32).
    pub const BF16: GgmlType = GgmlType(30);

    /// Elements per [`Q8_0`](Self::Q8_0) block.
    pub const Q8_0_BLOCK: usize = 32;
    /// Bytes per [`Q8_0`](Self::Q8_0) block (2-byte scale + 32 quants).
    pub const Q8_0_BLOCK_BYTES: usize = 34;
    /// Elements per [`Q4_0`](Self::Q4_0) block.
    pub const Q4_0_BLOCK: usize = 32;
    /// Bytes per [`Q4_0`](Self::Q4_0) block (2-byte scale + 16 bytes of two quants each).
    pub const Q4_0_BLOCK_BYTES: usize = 18;

    fn entry(self) -> Option<&'static (u32, &'static str, u64, u64)> {
        GGML_TYPES.iter().find(|t| t.0 == self.0)
    }

    /// The type's name as ggml spells it (`"Q8_0"`), if the id is known.
    pub fn name(self) -> Option<&'static str> {
        self.entry().map(|t| t.1)
    }

    /// (elements per block, bytes per block), if the id is known.
    pub fn block(self) -> Option<(u64, u64)> {
        self.entry().map(|t| (t.2, t.3))
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "unknown ggml type {}", self.0),
        }
    }
}

/// The type tag of a metadata value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    /// u8.
    U8,
    /// i8.
    I8,
    /// u16.
    U16,
    /// i16.
    I16,
    /// u32.
    U32,
    /// i32.
    I32,
    /// f32.
    F32,
    /// bool (one byte, 0 or 1).
    Bool,
    /// UTF-8 string.
    String,
    /// Array of one element type.
    Array,
    /// u64.
    U64,
    /// i64.
    I64,
    /// f64.
    F64,
}

impl ValueType {
    fn from_u32(v: u32) -> Option<Self> {
        use ValueType::*;
        Some(match v {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// Bytes of a fixed-size value; `None` for strings and arrays.
    fn fixed_size(self) -> Option<usize> {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => Some(1),
            U16 | I16 => Some(2),
            U32 | I32 | F32 => Some(4),
            U64 | I64 | F64 => Some(8),
            String | Array => None,
        }
    }

    /// The fewest bytes a value of this type takes (a string's length prefix; an array's
    /// type and count), which bounds how many can fit in what is left of the file.
    fn min_size(self) -> usize {
        match self {
            ValueType::String => 8,
            ValueType::Array => 12,
            t => t.fixed_size().unwrap_or(1),
        }
    }
}

/// One decoded metadata value, borrowing strings and arrays from the file.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    /// u8.
    U8(u8),
    /// i8.
    I8(i8),
    /// u16.
    U16(u16),
    /// i16.
    I16(i16),
    /// u32.
    U32(u32),
    /// i32.
    I32(i32),
    /// f32.
    F32(f32),
    /// bool.
    Bool(bool),
    /// A string.
    Str(&'a str),
    /// An array.
    Array(Array<'a>),
    /// u64.
    U64(u64),
    /// i64.
    I64(i64),
    /// f64.
    F64(f64),
}

impl<'a> Value<'a> {
    /// The value's type tag.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::Str(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// Any integer type, as i128 (every GGUF integer fits).
    fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            Value::U8(v) => v as i128,
            Value::I8(v) => v as i128,
            Value::U16(v) => v as i128,
            Value::I16(v) => v as i128,
            Value::U32(v) => v as i128,
            Value::I32(v) => v as i128,
            Value::U64(v) => v as i128,
            Value::I64(v) => v as i128,
            _ => return None,
        })
    }

    /// An integer of any width that is non-negative and fits u64.
    pub fn as_u64(&self) -> Option<u64> {
        self.as_i128().and_then(|v| u64::try_from(v).ok())
    }

    /// An integer of any width that fits i64.
    pub fn as_i64(&self) -> Option<i64> {
        self.as_i128().and_then(|v| i64::try_from(v).ok())
    }

    /// An f32 or f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => None,
        }
    }

    /// A bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// A string.
    pub fn as_str(&self) -> Option<&'a str> {
        match *self {
            Value::Str(v) => Some(v),
            _ => None,
        }
    }

    /// An array.
    pub fn as_array(&self) -> Option<Array<'a>> {
        match *self {
            Value::Array(v) => Some(v),
            _ => None,
        }
    }
}

/// A metadata array: its element type, its length, and the encoded elements (validated when
/// the file was parsed), decoded on request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Array<'a> {
    elem: ValueType,
    len: usize,
    bytes: &'a [u8],
}

impl<'a> Array<'a> {
    /// The element type.
    pub fn elem_type(&self) -> ValueType {
        self.elem
    }

    /// Elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The elements in order. The bytes were validated at parse time; should a decode still
    /// fail the iterator ends early rather than panicking.
    pub fn iter(&self) -> impl Iterator<Item = Value<'a>> + 'a {
        let mut c = Cursor::new(self.bytes, 0);
        let elem = self.elem;
        (0..self.len).map_while(move |_| read_value(&mut c, elem).ok())
    }

    /// Every element as a string (an array of strings).
    pub fn strings(&self) -> Option<Vec<&'a str>> {
        if self.elem != ValueType::String {
            return None;
        }
        let v: Vec<&'a str> = self.iter().filter_map(|v| v.as_str()).collect();
        (v.len() == self.len).then_some(v)
    }

    /// Every element as i64 (an array of any integer type whose values fit).
    pub fn ints(&self) -> Option<Vec<i64>> {
        let v: Vec<i64> = self.iter().map_while(|v| v.as_i64()).collect();
        (v.len() == self.len).then_some(v)
    }

    /// Every element as f64 (an array of f32 or f64).
    pub fn floats(&self) -> Option<Vec<f64>> {
        let v: Vec<f64> = self.iter().map_while(|v| v.as_f64()).collect();
        (v.len() == self.len).then_some(v)
    }
}

/// One tensor's entry in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name (`blk.0.ssm_in.weight`).
    pub name: String,
    /// Dimensions in row-major order, slowest first: ggml's `ne` reversed.
    pub shape: Vec<usize>,
    /// Storage type.
    pub dtype: GgmlType,
    /// The tensor's bytes within the file (absolute offsets).
    pub range: Range<usize>,
}

impl TensorInfo {
    /// Elements (the product of the dimensions, checked at parse time).
    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }
}

struct Kv {
    key: String,
    ty: ValueType,
    /// The value's bytes (after the type tag).
    range: Range<usize>,
}

/// A parsed GGUF file: header, metadata, tensor infos, and its bytes.
pub struct Gguf {
    path: PathBuf,
    data: FileBytes,
    version: u32,
    alignment: u64,
    data_start: usize,
    kvs: Vec<Kv>,
    kv_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl fmt::Debug for Gguf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gguf")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata", &self.kvs.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// Reads little-endian values from a byte slice, every read bounds-checked.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

/// Why a read failed; turned into an [`Error`] naming the file by the caller.
type Fail = String;

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8], pos: usize) -> Self {
        Self { bytes, pos }
    }

    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: u64, what: &str) -> std::result::Result<&'a [u8], Fail> {
        let rem = self.remaining();
        let n = usize::try_from(n)
            .ok()
            .filter(|&n| n <= rem)
            .ok_or_else(|| {
                format!(
                    "truncated: {what} at byte {} needs {n} bytes but only {rem} are left (past the end of the file)",
                    self.pos
                )
            })?;
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> std::result::Result<[u8; N], Fail> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> std::result::Result<u32, Fail> {
        self.array::<4>(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> std::result::Result<u64, Fail> {
        self.array::<8>(what).map(u64::from_le_bytes)
    }

    /// A length-prefixed UTF-8 string; the length is checked against the bytes left before
    /// anything is read.
    fn string(&mut self, what: &str) -> std::result::Result<&'a str, Fail> {
        let at = self.pos;
        let len = self.u64(what)?;
        if len > self.remaining() as u64 {
            return Err(format!(
                "{what}: a string of {len} bytes at byte {at} runs past the end of the file ({} bytes left)",
                self.remaining()
            ));
        }
        let s = self.take(len, what)?;
        std::str::from_utf8(s).map_err(|e| format!("{what} at byte {at} is not UTF-8: {e}"))
    }

    /// A count of items that each take at least `min_size` bytes: it must fit in what is left
    /// of the file, which bounds any allocation sized by it.
    fn count(&mut self, what: &str, min_size: usize) -> std::result::Result<usize, Fail> {
        let at = self.pos;
        let n = self.u64(what)?;
        let fits = (self.remaining() / min_size.max(1)) as u64;
        if n > fits {
            return Err(format!(
                "{what} {n} at byte {at} cannot fit in the {} bytes left (each takes at least {min_size})",
                self.remaining()
            ));
        }
        usize::try_from(n).map_err(|_| format!("{what} {n} overflows usize"))
    }
}

fn value_type(c: &mut Cursor<'_>, what: &str) -> std::result::Result<ValueType, Fail> {
    let at = c.pos;
    let t = c.u32(what)?;
    ValueType::from_u32(t).ok_or_else(|| format!("{what} at byte {at}: unknown value type {t}"))
}

/// Checks one value of type `ty` at the cursor and moves past it: lengths and counts against
/// the bytes left, strings UTF-8, booleans 0 or 1, array element types known, nesting bounded.
fn skip_value(c: &mut Cursor<'_>, ty: ValueType, depth: usize) -> std::result::Result<(), Fail> {
    match ty {
        ValueType::String => c.string("string value").map(|_| ()),
        ValueType::Bool => match c.take(1, "bool value")?[0] {
            0 | 1 => Ok(()),
            b => Err(format!(
                "bool value at byte {} is {b}, not 0 or 1",
                c.pos - 1
            )),
        },
        ValueType::Array => {
            if depth >= MAX_ARRAY_DEPTH {
                return Err(format!(
                    "arrays nested more than {MAX_ARRAY_DEPTH} deep at byte {}",
                    c.pos
                ));
            }
            let elem = value_type(c, "array element type")?;
            let n = c.count("array count", elem.min_size())?;
            match elem.fixed_size() {
                Some(1) if elem == ValueType::Bool => {
                    let s = c.take(n as u64, "bool array")?;
                    if let Some(i) = s.iter().position(|&b| b > 1) {
                        return Err(format!("bool array element {i} is {}, not 0 or 1", s[i]));
                    }
                }
                // n · size ≤ the bytes left, since n ≤ left / size.
                Some(size) => {
                    c.take((n * size) as u64, "array elements")?;
                }
                None => {
                    for _ in 0..n {
                        skip_value(c, elem, depth + 1)?;
                    }
                }
            }
            Ok(())
        }
        t => c
            .take(t.fixed_size().unwrap_or(0) as u64, "value")
            .map(|_| ()),
    }
}

/// Decodes one value (already validated by [`skip_value`]).
fn read_value<'a>(c: &mut Cursor<'a>, ty: ValueType) -> std::result::Result<Value<'a>, Fail> {
    Ok(match ty {
        ValueType::U8 => Value::U8(c.array::<1>("u8")?[0]),
        ValueType::I8 => Value::I8(c.array::<1>("i8")?[0] as i8),
        ValueType::U16 => Value::U16(u16::from_le_bytes(c.array("u16")?)),
        ValueType::I16 => Value::I16(i16::from_le_bytes(c.array("i16")?)),
        ValueType::U32 => Value::U32(c.u32("u32")?),
        ValueType::I32 => Value::I32(i32::from_le_bytes(c.array("i32")?)),
        ValueType::F32 => Value::F32(f32::from_le_bytes(c.array("f32")?)),
        ValueType::Bool => Value::Bool(c.array::<1>("bool")?[0] != 0),
        ValueType::String => Value::Str(c.string("string")?),
        ValueType::U64 => Value::U64(c.u64("u64")?),
        ValueType::I64 => Value::I64(i64::from_le_bytes(c.array("i64")?)),
        ValueType::F64 => Value::F64(f64::from_le_bytes(c.array("f64")?)),
        ValueType::Array => {
            let start = c.pos;
            let elem = value_type(c, "array element type")?;
            let len = c.count("array count", elem.min_size())?;
            let body = c.pos;
            // Re-walk to find the end (cheap: validated already, and only on request).
            c.pos = start;
            skip_value(c, ValueType::Array, 0)?;
            Value::Array(Array {
                elem,
                len,
                bytes: &c.bytes[body..c.pos],
            })
        }
    })
}

impl Gguf {
    /// Parses a GGUF file held in memory (the bytes are copied). Errors name the file
    /// `<memory>`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Gguf> {
        Self::parse(Path::new("<memory>"), FileBytes::Owned(bytes.to_vec()))
    }

    /// Parses a GGUF file held in memory, naming it `path` in errors.
    pub fn from_vec(path: &Path, bytes: Vec<u8>) -> Result<Gguf> {
        Self::parse(path, FileBytes::Owned(bytes))
    }

    /// Memory-maps and parses a file.
    pub fn open(path: &Path) -> Result<Gguf> {
        Self::parse(path, FileBytes::map(path)?)
    }

    fn parse(path: &Path, data: FileBytes) -> Result<Gguf> {
        let bad = |msg: String| Error::Checkpoint {
            file: path.to_path_buf(),
            tensor: None,
            msg,
        };
        let mut c = Cursor::new(&data, 0);
        let magic = c.array::<4>("magic").map_err(bad)?;
        if magic != MAGIC {
            return Err(bad(format!(
                "bad magic {magic:02x?}: not a GGUF file (it starts with \"GGUF\")"
            )));
        }
        let version = c.u32("version").map_err(bad)?;
        match version {
            2 | 3 => {}
            1 => {
                return Err(bad(
                    "GGUF version 1 (32-bit counts) is not supported (versions 2 and 3 are)".into(),
                ))
            }
            v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
                return Err(bad(format!(
                    "a big-endian GGUF (version {}) is not supported",
                    v.swap_bytes()
                )))
            }
            v => {
                return Err(bad(format!(
                    "unsupported GGUF version {v} (versions 2 and 3 are supported)"
                )))
            }
        }
        // A tensor info takes at least 8 (name length) + 4 (n_dims) + 8 (one dim) + 4 (type)
        // + 8 (offset) bytes; a key-value pair 8 (key length) + 4 (type) + 1 (value).
        let tensor_count = c.u64("tensor count").map_err(bad)?;
        let kv_count = c.u64("metadata count").map_err(bad)?;
        let fits = |n: u64, min: u64| n <= (c.remaining() as u64) / min;
        if !fits(tensor_count, 32) {
            return Err(bad(format!(
                "tensor count {tensor_count} cannot fit in the {} bytes left",
                c.remaining()
            )));
        }
        if !fits(kv_count, 13) {
            return Err(bad(format!(
                "metadata count {kv_count} cannot fit in the {} bytes left",
                c.remaining()
            )));
        }
        let (tensor_count, kv_count) = (tensor_count as usize, kv_count as usize);

        let mut kvs = Vec::with_capacity(kv_count);
        let mut kv_index = HashMap::with_capacity(kv_count);
        for i in 0..kv_count {
            let key = c
                .string("metadata key")
                .map_err(|m| bad(format!("metadata {i}: {m}")))?;
            let ty = value_type(&mut c, "value type")
                .map_err(|m| bad(format!("metadata `{key}`: {m}")))?;
            let start = c.pos;
            skip_value(&mut c, ty, 0).map_err(|m| bad(format!("metadata `{key}`: {m}")))?;
            if kv_index.insert(key.to_string(), kvs.len()).is_some() {
                return Err(bad(format!("metadata key `{key}` appears twice")));
            }
            kvs.push(Kv {
                key: key.to_string(),
                ty,
                range: start..c.pos,
            });
        }

        let alignment = match kv_index.get("general.alignment").map(|&i| &kvs[i]) {
            None => DEFAULT_ALIGNMENT,
            Some(kv) if kv.ty == ValueType::U32 => {
                let a = u32::from_le_bytes(
                    data[kv.range.clone()]
                        .try_into()
                        .map_err(|_| bad("general.alignment: not 4 bytes".into()))?,
                );
                if a == 0 || !a.is_power_of_two() {
                    return Err(bad(format!("general.alignment {a} is not a power of two")));
                }
                a as u64
            }
            Some(kv) => {
                return Err(bad(format!(
                    "general.alignment must be a u32, found {:?}",
                    kv.ty
                )))
            }
        };

        let mut infos = Vec::with_capacity(tensor_count);
        for i in 0..tensor_count {
            let name = c
                .string("tensor name")
                .map_err(|m| bad(format!("tensor {i}: {m}")))?
                .to_string();
            let tbad = |m: String| Error::tensor(path, name.clone(), m);
            let n_dims = c.u32("dimension count").map_err(tbad)? as usize;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(tbad(format!(
                    "{n_dims} dimensions (a tensor has 1 to {MAX_DIMS})"
                )));
            }
            let mut ne = [0u64; MAX_DIMS];
            for d in ne.iter_mut().take(n_dims) {
                *d = c.u64("dimension").map_err(tbad)?;
            }
            let ne = &ne[..n_dims];
            if let Some(j) = ne.iter().position(|&d| d == 0) {
                return Err(tbad(format!("dimension {j} is zero (ne = {ne:?})")));
            }
            let dtype = GgmlType(c.u32("tensor type").map_err(tbad)?);
            let offset = c.u64("tensor offset").map_err(tbad)?;
            let (block, block_bytes) = dtype
                .block()
                .ok_or_else(|| tbad(format!("{dtype} (not a type this reader knows)")))?;
            let elements = ne
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .filter(|&n| n <= i64::MAX as u64)
                .ok_or_else(|| tbad(format!("element count of ne = {ne:?} overflows")))?;
            if ne[0] % block != 0 {
                return Err(tbad(format!(
                    "row length {} is not a multiple of the {dtype} block of {block}",
                    ne[0]
                )));
            }
            let bytes = (elements / block)
                .checked_mul(block_bytes)
                .ok_or_else(|| tbad(format!("byte size of ne = {ne:?} overflows")))?;
            if offset % alignment != 0 {
                return Err(tbad(format!(
                    "offset {offset} is not aligned to {alignment} bytes"
                )));
            }
            let shape = ne
                .iter()
                .rev()
                .map(|&d| usize::try_from(d))
                .collect::<std::result::Result<Vec<usize>, _>>()
                .map_err(|_| tbad(format!("dimensions {ne:?} overflow usize")))?;
            infos.push((name, shape, dtype, offset, bytes));
        }

        let data_start = (c.pos as u64)
            .checked_next_multiple_of(alignment)
            .ok_or_else(|| bad("data section start overflows".into()))?;
        let len = data.len() as u64;
        let mut tensors = Vec::with_capacity(infos.len());
        let mut tensor_index = HashMap::with_capacity(infos.len());
        for (name, shape, dtype, offset, bytes) in infos {
            let end = data_start
                .checked_add(offset)
                .and_then(|s| s.checked_add(bytes))
                .filter(|&e| e <= len)
                .ok_or_else(|| {
                    Error::tensor(
                        path,
                        name.clone(),
                        format!(
                            "{bytes} bytes at data offset {offset} lie past the end of the file ({len} bytes, data from {data_start})"
                        ),
                    )
                })?;
            let start = (end - bytes) as usize;
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(Error::tensor(path, name, "appears twice"));
            }
            tensors.push(TensorInfo {
                name,
                shape,
                dtype,
                range: start..end as usize,
            });
        }
        let mut order: Vec<usize> = (0..tensors.len()).collect();
        order.sort_by_key(|&i| (tensors[i].range.start, tensors[i].range.end));
        for w in order.windows(2) {
            let (a, b) = (&tensors[w[0]], &tensors[w[1]]);
            if b.range.start < a.range.end {
                return Err(Error::tensor(
                    path,
                    b.name.clone(),
                    format!(
                        "bytes {:?} overlap tensor {} at {:?}",
                        b.range, a.name, a.range
                    ),
                ));
            }
        }
        Ok(Gguf {
            path: path.to_path_buf(),
            version,
            alignment,
            data_start: data_start as usize,
            kvs,
            kv_index,
            tensors,
            tensor_index,
            data,
        })
    }

    /// The file (or `<memory>`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The data alignment (`general.alignment`, or 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Where the data section starts in the file.
    pub fn data_start(&self) -> usize {
        self.data_start
    }

    /// Metadata keys in file order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.kvs.iter().map(|kv| kv.key.as_str())
    }

    /// Whether the metadata holds `key`.
    pub fn contains_key(&self, key: &str) -> bool {
        self.kv_index.contains_key(key)
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<Value<'_>> {
        let kv = &self.kvs[*self.kv_index.get(key)?];
        let mut c = Cursor::new(&self.data[..kv.range.end], kv.range.start);
        read_value(&mut c, kv.ty).ok()
    }

    fn err(&self, msg: String) -> Error {
        Error::Checkpoint {
            file: self.path.clone(),
            tensor: None,
            msg,
        }
    }

    fn typed<'s, T>(
        &'s self,
        key: &str,
        what: &str,
        f: impl FnOnce(&Value<'s>) -> Option<T>,
    ) -> Result<T> {
        let v = self
            .get(key)
            .ok_or_else(|| self.err(format!("missing metadata key `{key}`")))?;
        f(&v).ok_or_else(|| {
            self.err(format!(
                "metadata `{key}` should be {what}, found {:?}",
                v.value_type()
            ))
        })
    }

    /// `key` as a u32 (any integer type whose value fits).
    pub fn u32(&self, key: &str) -> Result<u32> {
        self.typed(key, "an integer that fits u32", |v| {
            v.as_u64().and_then(|x| u32::try_from(x).ok())
        })
    }

    /// `key` as a u64 (any non-negative integer).
    pub fn u64(&self, key: &str) -> Result<u64> {
        self.typed(key, "a non-negative integer", Value::as_u64)
    }

    /// `key` as an f32 (an f32, or an f64 within f32's range).
    pub fn f32(&self, key: &str) -> Result<f32> {
        self.typed(key, "a float", |v| {
            v.as_f64()
                .filter(|x| !x.is_finite() || x.abs() <= f32::MAX as f64)
                .map(|x| x as f32)
        })
    }

    /// `key` as a bool.
    pub fn bool(&self, key: &str) -> Result<bool> {
        self.typed(key, "a bool", Value::as_bool)
    }

    /// `key` as a string.
    pub fn str(&self, key: &str) -> Result<&str> {
        self.typed(key, "a string", Value::as_str)
    }

    /// `key` as an array.
    pub fn array(&self, key: &str) -> Result<Array<'_>> {
        self.typed(key, "an array", Value::as_array)
    }

    /// `key` as an array of strings.
    pub fn str_array(&self, key: &str) -> Result<Vec<&str>> {
        self.typed(key, "an array of strings", |v| {
            v.as_array().and_then(|a| a.strings())
        })
    }

    /// Every tensor, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor named `name`, if present.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.tensor(name)
            .ok_or_else(|| Error::tensor(&self.path, name, "missing tensor"))
    }

    /// A tensor's bytes as stored.
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        let t = self.info(name)?;
        // The range was checked against the file's length at parse time; `get` keeps this
        // read safe even so.
        self.data
            .get(t.range.clone())
            .ok_or_else(|| Error::tensor(&self.path, name, "data lies past the end of the file"))
    }

    /// A tensor converted to f32 (row-major, [`TensorInfo::shape`]) from F32, F16, BF16, Q8_0
    /// or Q4_0; every value must be finite (a Q8_0 or Q4_0 block's scale as well).
    pub fn tensor_f32(&self, name: &str) -> Result<Vec<f32>> {
        let t = self.info(name)?;
        let bytes = self.tensor_bytes(name)?;
        let out: Vec<f32> = match t.dtype {
            GgmlType::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            GgmlType::F16 => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            GgmlType::BF16 => bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            GgmlType::Q8_0 => {
                let mut out = Vec::with_capacity(t.elements());
                for (b, block) in bytes.chunks_exact(GgmlType::Q8_0_BLOCK_BYTES).enumerate() {
                    let d = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
                    if !d.is_finite() {
                        return Err(Error::tensor(
                            &self.path,
                            name,
                            format!("Q8_0 block {b} has scale {d} (weights must be finite)"),
                        ));
                    }
                    out.extend(block[2..].iter().map(|&q| d * (q as i8) as f32));
                }
                out
            }
            GgmlType::Q4_0 => {
                let mut out = Vec::with_capacity(t.elements());
                for (b, block) in bytes.chunks_exact(GgmlType::Q4_0_BLOCK_BYTES).enumerate() {
                    let d = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
                    if !d.is_finite() {
                        return Err(Error::tensor(
                            &self.path,
                            name,
                            format!("Q4_0 block {b} has scale {d} (weights must be finite)"),
                        ));
                    }
                    // Byte j holds weight j in its low nibble and weight j + 16 in its high
                    // one, each offset by 8.
                    let qs = &block[2..];
                    out.extend(qs.iter().map(|&q| d * ((q & 0xF) as i32 - 8) as f32));
                    out.extend(qs.iter().map(|&q| d * ((q >> 4) as i32 - 8) as f32));
                }
                out
            }
            other => {
                return Err(Error::tensor(
                    &self.path,
                    name,
                    format!("type {other} is not supported (F32, F16, BF16, Q8_0, Q4_0 are)"),
                ))
            }
        };
        if let Some(pos) = out.iter().position(|v| !v.is_finite()) {
            return Err(Error::tensor(
                &self.path,
                name,
                format!("element {pos} is {} (weights must be finite)", out[pos]),
            ));
        }
        Ok(out)
    }
}
