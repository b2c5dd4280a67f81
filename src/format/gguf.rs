//! GGUF v3 reader: the header, metadata and tensor table are parsed and checked
//! once; tensor data stays in the memory mapping and is handed out as slices.
//!
//! File layout (all little-endian):
//!
//! ```text
//! magic "GGUF" | version u32 | tensor_count u64 | kv_count u64
//! kv_count × (key: string, value_type u32, value)
//! tensor_count × (name: string, n_dims u32, ne[n_dims] u64, type u32, offset u64)
//! padding to general.alignment
//! tensor data (each tensor at data_start + offset, offset a multiple of the alignment)
//! string = len u64 + UTF-8 bytes; array = elem_type u32 + count u64 + elems
//! ```
//!
//! The file is untrusted: every count, length and offset is checked against the
//! bytes that are actually there before it is used or allocated for.

use super::MetaValue;
use crate::quant::GgmlType;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// GGUF's magic number, "GGUF" read as a little-endian u32.
pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
/// Alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Most dimensions a tensor may have (ggml's GGML_MAX_DIMS).
pub const MAX_DIMS: u32 = 4;
/// Arrays nested deeper than this are refused (real files nest none).
const MAX_ARRAY_DEPTH: u32 = 4;

/// What is wrong with a GGUF file. Displayed with the file's path.
#[derive(Debug)]
pub struct GgufError {
    pub path: PathBuf,
    pub kind: GgufErrorKind,
}

#[derive(Debug)]
pub enum GgufErrorKind {
    Io(std::io::Error),
    /// The file ends inside the header, metadata or tensor table.
    Truncated {
        what: String,
        offset: u64,
        need: u64,
        have: u64,
    },
    BadMagic([u8; 4]),
    UnsupportedVersion(u32),
    BadUtf8 {
        what: String,
    },
    UnknownValueType {
        key: String,
        type_id: u32,
    },
    MixedArray {
        key: String,
    },
    ArrayTooDeep {
        key: String,
    },
    DuplicateKey(String),
    BadAlignment(String),
    TooManyDims {
        tensor: String,
        n_dims: u32,
    },
    UnknownTensorType {
        tensor: String,
        type_id: u32,
    },
    /// Dimensions whose product (or byte size) overflows 64 bits, or a zero dimension.
    BadDims {
        tensor: String,
        dims: Vec<u64>,
        why: &'static str,
    },
    DuplicateTensor(String),
    MisalignedTensor {
        tensor: String,
        offset: u64,
        alignment: u64,
    },
    TensorPastEof {
        tensor: String,
        offset: u64,
        size: u64,
        data_len: u64,
    },
}

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.path.display())?;
        match &self.kind {
            GgufErrorKind::Io(e) => write!(f, "{e}"),
            GgufErrorKind::Truncated { what, offset, need, have } => write!(
                f,
                "truncated: {what} at byte {offset} needs {need} bytes, only {have} left"
            ),
            GgufErrorKind::BadMagic(m) => write!(f, "not a GGUF file (magic {m:02x?}, expected \"GGUF\")"),
            GgufErrorKind::UnsupportedVersion(v) => {
                write!(f, "unsupported GGUF version {v} (this reader takes versions 2 and 3)")
            }
            GgufErrorKind::BadUtf8 { what } => write!(f, "{what} is not valid UTF-8"),
            GgufErrorKind::UnknownValueType { key, type_id } => {
                write!(f, "metadata key '{key}': unknown value type {type_id}")
            }
            GgufErrorKind::MixedArray { key } => write!(f, "metadata key '{key}': array elements of mixed types"),
            GgufErrorKind::ArrayTooDeep { key } => write!(f, "metadata key '{key}': arrays nested too deep"),
            GgufErrorKind::DuplicateKey(k) => write!(f, "metadata key '{k}' appears twice"),
            GgufErrorKind::BadAlignment(why) => write!(f, "general.alignment: {why}"),
            GgufErrorKind::TooManyDims { tensor, n_dims } => {
                write!(f, "tensor '{tensor}': {n_dims} dimensions (at most {MAX_DIMS})")
            }
            GgufErrorKind::UnknownTensorType { tensor, type_id } => {
                write!(f, "tensor '{tensor}': unknown or unsupported type id {type_id}")
            }
            GgufErrorKind::BadDims { tensor, dims, why } => write!(f, "tensor '{tensor}': dimensions {dims:?} {why}"),
            GgufErrorKind::DuplicateTensor(t) => write!(f, "tensor '{t}' appears twice"),
            GgufErrorKind::MisalignedTensor { tensor, offset, alignment } => write!(
                f,
                "tensor '{tensor}': data offset {offset} is not a multiple of the alignment {alignment}"
            ),
            GgufErrorKind::TensorPastEof { tensor, offset, size, data_len } => write!(
                f,
                "tensor '{tensor}': data [{offset}, {offset}+{size}) runs past the end of the data section ({data_len} bytes)"
            ),
        }
    }
}

impl std::error::Error for GgufError {}

/// One entry of the tensor table.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF order: `dims[0]` is the innermost (contiguous) dimension. A Hugging Face
    /// weight of shape (out, in) has `dims = [in, out]`.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset from the start of the data section.
    pub offset: u64,
    /// Bytes of data (checked: fits in the file).
    pub size: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
    /// Length of a row (the innermost dimension).
    pub fn row_len(&self) -> usize {
        self.dims[0] as usize
    }
    /// Number of rows (product of the outer dimensions).
    pub fn n_rows(&self) -> usize {
        self.dims[1..].iter().product::<u64>() as usize
    }
    /// The shape in row-major (PyTorch / numpy) order, outermost first.
    pub fn shape(&self) -> Vec<u64> {
        self.dims.iter().rev().copied().collect()
    }
}

enum Bytes {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mmap(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// A parsed, validated GGUF file whose tensor data is read in place.
pub struct GgufFile {
    path: PathBuf,
    bytes: Bytes,
    pub version: u32,
    /// Metadata in file order.
    meta: Vec<(String, MetaValue)>,
    meta_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    pub alignment: u64,
    /// Offset of the data section in the file.
    pub data_start: u64,
}

impl GgufFile {
    /// Memory-maps and parses `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref().to_path_buf();
        let io = |e: std::io::Error| GgufError {
            path: path.clone(),
            kind: GgufErrorKind::Io(e),
        };
        let file = std::fs::File::open(&path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if meta.is_dir() {
            return Err(io(std::io::Error::other("is a directory, not a file")));
        }
        let bytes = if meta.len() == 0 {
            Bytes::Owned(Vec::new())
        } else {
            // SAFETY: the mapping is read-only and private to this process. Like every
            // memory-mapped model loader we rely on the file not being truncated or
            // rewritten while it is open; all offsets are checked against its length.
            Bytes::Mmap(unsafe { memmap2::Mmap::map(&file) }.map_err(io)?)
        };
        Self::parse(path, bytes)
    }

    /// Parses a GGUF image held in memory (tests, fuzzing, small files).
    pub fn from_bytes(name: impl Into<PathBuf>, data: Vec<u8>) -> Result<GgufFile, GgufError> {
        Self::parse(name.into(), Bytes::Owned(data))
    }

    fn parse(path: PathBuf, bytes: Bytes) -> Result<GgufFile, GgufError> {
        let parsed = {
            let mut r = Reader {
                buf: bytes.as_slice(),
                pos: 0,
            };
            parse_layout(&mut r)
        };
        match parsed {
            Ok(l) => {
                let meta_index = l
                    .meta
                    .iter()
                    .enumerate()
                    .map(|(i, (k, _))| (k.clone(), i))
                    .collect();
                let tensor_index = l
                    .tensors
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (t.name.clone(), i))
                    .collect();
                Ok(GgufFile {
                    path,
                    bytes,
                    version: l.version,
                    meta: l.meta,
                    meta_index,
                    tensors: l.tensors,
                    tensor_index,
                    alignment: l.alignment,
                    data_start: l.data_start,
                })
            }
            Err(kind) => Err(GgufError { path, kind }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Total size of the file in bytes.
    pub fn file_size(&self) -> u64 {
        self.bytes.as_slice().len() as u64
    }

    /// The whole file image (for tools that copy it).
    pub fn raw(&self) -> &[u8] {
        self.bytes.as_slice()
    }

    /// Metadata entries in file order.
    pub fn metadata(&self) -> &[(String, MetaValue)] {
        &self.meta
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.meta_index.get(key).map(|&i| &self.meta[i].1)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(MetaValue::as_str)
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(MetaValue::as_u64)
    }

    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(MetaValue::as_f64)
    }

    /// Tensor table in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The bytes of a tensor of this file (bounds were checked at parse time).
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let start = (self.data_start + t.offset) as usize;
        &self.bytes.as_slice()[start..start + t.size as usize]
    }

    /// A tensor's values converted to f32.
    pub fn tensor_f32(&self, t: &TensorInfo) -> Vec<f32> {
        let mut out = vec![0f32; t.n_elements() as usize];
        crate::quant::dequantize(t.ty, self.tensor_data(t), &mut out);
        out
    }

    /// An error about this file (for semantic checks made by callers).
    pub fn error(&self, kind: GgufErrorKind) -> GgufError {
        GgufError {
            path: self.path.clone(),
            kind,
        }
    }
}

struct Layout {
    version: u32,
    meta: Vec<(String, MetaValue)>,
    tensors: Vec<TensorInfo>,
    alignment: u64,
    data_start: u64,
}

/// A bounds-checked cursor over the file.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8], GgufErrorKind> {
        if n > self.remaining() {
            return Err(GgufErrorKind::Truncated {
                what: what(),
                offset: self.pos as u64,
                need: n,
                have: self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(
        &mut self,
        what: &dyn Fn() -> String,
    ) -> Result<[u8; N], GgufErrorKind> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, GgufErrorKind> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, GgufErrorKind> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, GgufErrorKind> {
        let len = self.u64(&|| format!("length of {}", what()))?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufErrorKind::BadUtf8 { what: what() })
    }
}

/// Smallest encoded size of one value of a type, so that an array count can be
/// checked against the bytes left before anything is allocated.
fn min_value_size(type_id: u32) -> Option<u64> {
    Some(match type_id {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 => 8,  // string: its u64 length
        9 => 12, // array: elem type + count
        10..=12 => 8,
        _ => return None,
    })
}

fn read_value(
    r: &mut Reader,
    key: &str,
    type_id: u32,
    depth: u32,
) -> Result<MetaValue, GgufErrorKind> {
    let what = || format!("value of metadata key '{key}'");
    Ok(match type_id {
        0 => MetaValue::U8(r.array::<1>(&what)?[0]),
        1 => MetaValue::I8(r.array::<1>(&what)?[0] as i8),
        2 => MetaValue::U16(u16::from_le_bytes(r.array(&what)?)),
        3 => MetaValue::I16(i16::from_le_bytes(r.array(&what)?)),
        4 => MetaValue::U32(u32::from_le_bytes(r.array(&what)?)),
        5 => MetaValue::I32(i32::from_le_bytes(r.array(&what)?)),
        6 => MetaValue::F32(f32::from_le_bytes(r.array(&what)?)),
        7 => MetaValue::Bool(r.array::<1>(&what)?[0] != 0),
        8 => MetaValue::String(r.string(&what)?),
        9 => {
            if depth >= MAX_ARRAY_DEPTH {
                return Err(GgufErrorKind::ArrayTooDeep {
                    key: key.to_string(),
                });
            }
            let elem = r.u32(&what)?;
            let count = r.u64(&what)?;
            let min = min_value_size(elem).ok_or_else(|| GgufErrorKind::UnknownValueType {
                key: key.to_string(),
                type_id: elem,
            })?;
            // A hostile count cannot make us allocate more than the file could hold.
            let need = count.saturating_mul(min);
            if need > r.remaining() {
                return Err(GgufErrorKind::Truncated {
                    what: format!("array of {count} elements for metadata key '{key}'"),
                    offset: r.pos as u64,
                    need,
                    have: r.remaining(),
                });
            }
            let mut items = Vec::with_capacity(count as usize);
            for _ in 0..count {
                items.push(read_value(r, key, elem, depth + 1)?);
            }
            MetaValue::Array(items)
        }
        10 => MetaValue::U64(u64::from_le_bytes(r.array(&what)?)),
        11 => MetaValue::I64(i64::from_le_bytes(r.array(&what)?)),
        12 => MetaValue::F64(f64::from_le_bytes(r.array(&what)?)),
        _ => {
            return Err(GgufErrorKind::UnknownValueType {
                key: key.to_string(),
                type_id,
            })
        }
    })
}

fn parse_layout(r: &mut Reader) -> Result<Layout, GgufErrorKind> {
    let magic: [u8; 4] = r.array(&|| "magic".into())?;
    if &magic != GGUF_MAGIC {
        return Err(GgufErrorKind::BadMagic(magic));
    }
    let version = r.u32(&|| "version".into())?;
    if version != 2 && version != 3 {
        return Err(GgufErrorKind::UnsupportedVersion(version));
    }
    let n_tensors = r.u64(&|| "tensor count".into())?;
    let n_kv = r.u64(&|| "metadata count".into())?;

    // Each metadata entry takes at least 12 bytes (key length + type), each
    // tensor entry at least 24; refuse counts the file cannot hold.
    let need = n_kv
        .saturating_mul(12)
        .saturating_add(n_tensors.saturating_mul(24));
    if need > r.remaining() {
        return Err(GgufErrorKind::Truncated {
            what: format!("{n_kv} metadata entries and {n_tensors} tensor entries"),
            offset: r.pos as u64,
            need,
            have: r.remaining(),
        });
    }

    let mut meta: Vec<(String, MetaValue)> = Vec::with_capacity(n_kv as usize);
    let mut seen = HashMap::new();
    for i in 0..n_kv {
        let key = r.string(&|| format!("key of metadata entry {i}"))?;
        let type_id = r.u32(&|| format!("type of metadata key '{key}'"))?;
        let value = read_value(r, &key, type_id, 0)?;
        if let MetaValue::Array(items) = &value {
            if items.iter().any(|v| v.type_id() != items[0].type_id()) {
                return Err(GgufErrorKind::MixedArray { key });
            }
        }
        if seen.insert(key.clone(), ()).is_some() {
            return Err(GgufErrorKind::DuplicateKey(key));
        }
        meta.push((key, value));
    }

    let alignment = match meta.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, v)) => match v {
            MetaValue::U32(a) if *a > 0 && a.is_power_of_two() => *a as u64,
            MetaValue::U32(a) => {
                return Err(GgufErrorKind::BadAlignment(format!(
                    "{a} is not a power of two"
                )))
            }
            other => {
                return Err(GgufErrorKind::BadAlignment(format!(
                    "must be a u32, found {other:?}"
                )))
            }
        },
    };

    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut names = HashMap::new();
    for i in 0..n_tensors {
        let name = r.string(&|| format!("name of tensor {i}"))?;
        let n_dims = r.u32(&|| format!("dimension count of tensor '{name}'"))?;
        if n_dims > MAX_DIMS {
            return Err(GgufErrorKind::TooManyDims {
                tensor: name,
                n_dims,
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(r.u64(&|| format!("dimensions of tensor '{name}'"))?);
        }
        let type_id = r.u32(&|| format!("type of tensor '{name}'"))?;
        let offset = r.u64(&|| format!("offset of tensor '{name}'"))?;
        let ty = GgmlType::from_id(type_id).ok_or_else(|| GgufErrorKind::UnknownTensorType {
            tensor: name.clone(),
            type_id,
        })?;
        if dims.is_empty() {
            dims.push(1); // a 0-d tensor is a scalar
        }
        let bad = |why| GgufErrorKind::BadDims {
            tensor: name.clone(),
            dims: dims.clone(),
            why,
        };
        if dims.contains(&0) {
            return Err(bad("contain a zero"));
        }
        let n = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| bad("overflow"))?;
        if n > isize::MAX as u64 {
            return Err(bad("describe more elements than this machine can address"));
        }
        let rows: u64 = dims[1..].iter().product(); // cannot overflow: divides n
        let row_bytes = ty
            .row_bytes(dims[0])
            .ok_or_else(|| bad("do not fit the type's block size"))?;
        let size = row_bytes
            .checked_mul(rows)
            .ok_or_else(|| bad("give a byte size that overflows"))?;
        if offset % alignment != 0 {
            return Err(GgufErrorKind::MisalignedTensor {
                tensor: name,
                offset,
                alignment,
            });
        }
        if names.insert(name.clone(), ()).is_some() {
            return Err(GgufErrorKind::DuplicateTensor(name));
        }
        tensors.push(TensorInfo {
            name,
            dims,
            ty,
            offset,
            size,
        });
    }

    let header_end = r.pos as u64;
    let data_start = header_end.div_ceil(alignment) * alignment;
    let file_len = r.buf.len() as u64;
    let data_len = file_len.saturating_sub(data_start);
    for t in &tensors {
        let end = t.offset.checked_add(t.size);
        if data_start > file_len || end.is_none_or(|e| e > data_len) {
            return Err(GgufErrorKind::TensorPastEof {
                tensor: t.name.clone(),
                offset: t.offset,
                size: t.size,
                data_len,
            });
        }
    }
    Ok(Layout {
        version,
        meta,
        tensors,
        alignment,
        data_start,
    })
}
