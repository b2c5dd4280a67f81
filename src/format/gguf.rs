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
//!
//! Memory: tensor data and metadata arrays stay in the mapping (an array is a
//! [`MetaArray`] view, decoded on demand), so what the reader allocates grows with
//! the number of metadata keys and tensors, not with array lengths: about
//! 80 bytes plus the key per key (at least 13 bytes of file each), about 100 bytes
//! plus the name per tensor (at least 24 bytes of file each), and a string value's
//! own bytes.

use super::{fixed_size, ArrayRef, MetaArray, MetaValue};
use crate::quant::GgmlType;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    /// The allocator refused memory for the metadata or tensor table.
    OutOfMemory {
        what: String,
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
            GgufErrorKind::OutOfMemory { what } => write!(f, "out of memory for {what}"),
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

/// The file image, shared with the [`MetaArray`] views into it.
pub(crate) enum Bytes {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Bytes {
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mmap(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// A parsed, validated GGUF file whose tensor data is read in place.
pub struct GgufFile {
    path: PathBuf,
    bytes: Arc<Bytes>,
    pub version: u32,
    /// Metadata in file order.
    meta: Vec<(String, MetaValue)>,
    /// Indices into `meta` sorted by key (binary search; 4 bytes per key).
    meta_index: Vec<u32>,
    tensors: Vec<TensorInfo>,
    /// Indices into `tensors` sorted by name.
    tensor_index: Vec<u32>,
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
        // Only a regular file (or a link to one) can be mapped: opening a FIFO
        // would block until a writer comes, a device would map who knows what.
        // Checked before opening, for the FIFO's sake.
        let kind = std::fs::metadata(&path).map_err(io)?;
        if !kind.is_file() {
            let what = if kind.is_dir() {
                "a directory"
            } else {
                "not a regular file"
            };
            return Err(io(std::io::Error::other(format!(
                "is {what}: a model must be a regular file"
            ))));
        }
        let file = std::fs::File::open(&path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(io(std::io::Error::other(
                "is not a regular file: a model must be a regular file",
            )));
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

    /// Memory-maps and parses the model stored in `length` bytes at `offset` of
    /// an open file (a model inside an APK, a file descriptor an app was given);
    /// `length` 0 means to the end of the file. `name` stands for the path in
    /// errors. Nothing is copied: the mapping starts at the page that holds
    /// `offset` and the image is the slice from `offset` (memmap2 does both).
    ///
    /// Tensor alignment is relative to the model's start, so an offset that is
    /// not a multiple of the file's `general.alignment` (or of the page size,
    /// when that is smaller) would place every tensor at addresses no model
    /// loaded from a path ever has: it is refused.
    pub fn open_range(
        file: &std::fs::File,
        offset: u64,
        length: u64,
        name: impl Into<PathBuf>,
    ) -> Result<GgufFile, GgufError> {
        let path: PathBuf = name.into();
        let err = |msg: String| GgufError {
            path: path.clone(),
            kind: GgufErrorKind::Io(std::io::Error::other(msg)),
        };
        let meta = file
            .metadata()
            .map_err(|e| err(format!("cannot stat the file: {e}")))?;
        if !meta.is_file() {
            return Err(err(
                "is not a regular file: a model must be a regular file".into()
            ));
        }
        let size = meta.len();
        if offset > size {
            return Err(err(format!(
                "offset {offset} is past the end of the file ({size} bytes)"
            )));
        }
        let length = if length == 0 { size - offset } else { length };
        match offset.checked_add(length) {
            Some(end) if end <= size => {}
            _ => {
                return Err(err(format!(
                    "{length} bytes at offset {offset} run past the end of the file ({size} bytes)"
                )))
            }
        }
        let len = usize::try_from(length)
            .map_err(|_| err(format!("{length} bytes do not fit this address space")))?;
        let bytes = if len == 0 {
            Bytes::Owned(Vec::new())
        } else {
            // SAFETY: as in `open`: a read-only private mapping of a file we rely
            // on not being truncated or rewritten while mapped; the range was
            // checked against the file's length above.
            Bytes::Mmap(
                unsafe {
                    memmap2::MmapOptions::new()
                        .offset(offset)
                        .len(len)
                        .map(file)
                }
                .map_err(|e| err(format!("cannot map {length} bytes at offset {offset}: {e}")))?,
            )
        };
        let f = Self::parse(path.clone(), bytes)?;
        let page = page_size();
        let need = f.alignment.min(page);
        if !offset.is_multiple_of(need) {
            return Err(err(format!(
                "offset {offset} is not a multiple of {need}, the model's tensor alignment \
                 (general.alignment {}, page size {page}): store the model at an aligned offset \
                 (for an APK asset, e.g. zipalign -p 4096)",
                f.alignment
            )));
        }
        Ok(f)
    }

    /// Parses a GGUF image held in memory (tests, fuzzing, small files).
    pub fn from_bytes(name: impl Into<PathBuf>, data: Vec<u8>) -> Result<GgufFile, GgufError> {
        Self::parse(name.into(), Bytes::Owned(data))
    }

    fn parse(path: PathBuf, bytes: Bytes) -> Result<GgufFile, GgufError> {
        let bytes = Arc::new(bytes);
        let parsed = {
            let mut r = Reader {
                buf: bytes.as_slice(),
                pos: 0,
                shared: &bytes,
            };
            parse_layout(&mut r)
        };
        match parsed {
            Ok(l) => Ok(GgufFile {
                path,
                bytes,
                version: l.version,
                meta: l.meta,
                meta_index: l.meta_index,
                tensors: l.tensors,
                tensor_index: l.tensor_index,
                alignment: l.alignment,
                data_start: l.data_start,
            }),
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
        let i = self
            .meta_index
            .binary_search_by(|&i| self.meta[i as usize].0.as_str().cmp(key))
            .ok()?;
        Some(&self.meta[self.meta_index[i] as usize].1)
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
        let i = self
            .tensor_index
            .binary_search_by(|&i| self.tensors[i as usize].name.as_str().cmp(name))
            .ok()?;
        Some(&self.tensors[self.tensor_index[i] as usize])
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

/// The system's page size (4096 when it cannot be asked).
#[cfg(not(unix))]
fn page_size() -> u64 {
    4096
}

/// The system's page size (4096 when it cannot be asked).
#[cfg(unix)]
fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

struct Layout {
    version: u32,
    meta: Vec<(String, MetaValue)>,
    meta_index: Vec<u32>,
    tensors: Vec<TensorInfo>,
    tensor_index: Vec<u32>,
    alignment: u64,
    data_start: u64,
}

/// A bounds-checked cursor over the file.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// `buf`'s owner, for the array views.
    shared: &'a Arc<Bytes>,
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

    fn str(&mut self, what: &dyn Fn() -> String) -> Result<&'a str, GgufErrorKind> {
        let len = self.u64(&|| format!("length of {}", what()))?;
        let bytes = self.take(len, what)?;
        std::str::from_utf8(bytes).map_err(|_| GgufErrorKind::BadUtf8 { what: what() })
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, GgufErrorKind> {
        let s = self.str(what)?;
        let mut out = String::new();
        out.try_reserve_exact(s.len())
            .map_err(|_| GgufErrorKind::OutOfMemory { what: what() })?;
        out.push_str(s);
        Ok(out)
    }
}

/// Smallest encoded size of one value of a type, so that an array count can be
/// checked against the bytes left before the elements are walked.
fn min_value_size(type_id: u32) -> Option<u64> {
    match type_id {
        8 => Some(8),  // string: its u64 length
        9 => Some(12), // array: elem type + count
        t => fixed_size(t).map(|n| n as u64),
    }
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
            let (elem, len) = array_header(r, key, depth)?;
            let start = r.pos;
            skip_elements(r, key, elem, len, depth)?;
            MetaValue::Array(MetaArray::mapped(ArrayRef {
                bytes: r.shared.clone(),
                elem,
                len,
                start,
                end: r.pos,
            }))
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

/// Reads an array's element type and count (the array itself at nesting
/// `depth`), checking the count against the bytes left.
fn array_header(r: &mut Reader, key: &str, depth: u32) -> Result<(u32, u64), GgufErrorKind> {
    let what = || format!("value of metadata key '{key}'");
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
    let need = count.saturating_mul(min);
    if need > r.remaining() {
        return Err(GgufErrorKind::Truncated {
            what: format!("array of {count} elements for metadata key '{key}'"),
            offset: r.pos as u64,
            need,
            have: r.remaining(),
        });
    }
    Ok((elem, count))
}

/// Checks and steps over `count` elements of type `elem` without allocating:
/// the array stays in the file as a view. Strings are checked to be UTF-8 here,
/// so that decoding them later cannot fail.
fn skip_elements(
    r: &mut Reader,
    key: &str,
    elem: u32,
    count: u64,
    depth: u32,
) -> Result<(), GgufErrorKind> {
    let what = || format!("element of metadata key '{key}'");
    if let Some(n) = fixed_size(elem) {
        // array_header checked count × n against the bytes left.
        r.take(count * n as u64, &what)?;
        return Ok(());
    }
    for _ in 0..count {
        if elem == 8 {
            r.str(&what)?;
        } else {
            let (e, c) = array_header(r, key, depth + 1)?;
            skip_elements(r, key, e, c, depth + 1)?;
        }
    }
    Ok(())
}

/// Indices of `items` sorted by `name`, or the first name that appears twice.
fn sorted_index<T>(items: &[T], name: impl Fn(&T) -> &str) -> Result<Vec<u32>, String> {
    let mut idx: Vec<u32> = (0..items.len() as u32).collect();
    idx.sort_by(|&a, &b| name(&items[a as usize]).cmp(name(&items[b as usize])));
    // The first duplicate in file order, so the error names a stable entry.
    let dup = idx
        .windows(2)
        .filter(|w| name(&items[w[0] as usize]) == name(&items[w[1] as usize]))
        .map(|w| w[0].max(w[1]))
        .min();
    match dup {
        Some(i) => Err(name(&items[i as usize]).to_string()),
        None => Ok(idx),
    }
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

    // Entries are indexed by u32 (a file would need 50 GiB of headers to pass).
    if n_kv > u32::MAX as u64 || n_tensors > u32::MAX as u64 {
        return Err(GgufErrorKind::OutOfMemory {
            what: format!("{n_kv} metadata entries and {n_tensors} tensor entries"),
        });
    }
    // The counts were checked against the file's size above.
    let oom = |what: &str| GgufErrorKind::OutOfMemory { what: what.into() };
    let mut meta: Vec<(String, MetaValue)> = Vec::new();
    meta.try_reserve_exact(n_kv as usize)
        .map_err(|_| oom("the metadata table"))?;
    for i in 0..n_kv {
        let key = r.string(&|| format!("key of metadata entry {i}"))?;
        let type_id = r.u32(&|| format!("type of metadata key '{key}'"))?;
        // An array's elements all have the type its header names: no mixing.
        let value = read_value(r, &key, type_id, 0)?;
        meta.push((key, value));
    }
    let meta_index = sorted_index(&meta, |(k, _)| k).map_err(GgufErrorKind::DuplicateKey)?;

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

    let mut tensors: Vec<TensorInfo> = Vec::new();
    tensors
        .try_reserve_exact(n_tensors as usize)
        .map_err(|_| oom("the tensor table"))?;
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
        tensors.push(TensorInfo {
            name,
            dims,
            ty,
            offset,
            size,
        });
    }

    let tensor_index =
        sorted_index(&tensors, |t| &t.name).map_err(GgufErrorKind::DuplicateTensor)?;

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
        meta_index,
        tensors,
        tensor_index,
        alignment,
        data_start,
    })
}
