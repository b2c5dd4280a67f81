//! The `.tah` file: a GGUF v3 file read in place from a memory mapping.
//!
//! [`gguf`] reads and validates a file, [`writer`] writes one, and [`keys`] names
//! every metadata key and tensor of the `.tah` layout.

pub mod gguf;
pub mod keys;
pub mod writer;

use gguf::Bytes;
pub use gguf::{GgufError, GgufErrorKind, GgufFile, TensorInfo};
use std::fmt;
use std::sync::Arc;
pub use writer::{GgufWriter, TensorSink};

/// A GGUF metadata value. Arrays hold values of one type (GGUF requires it; the
/// reader checks it).
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(MetaArray),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// A metadata array: built in memory (for the writer), or, when read from a
/// file, a view of the file's bytes whose elements are decoded when asked for.
///
/// A view costs the same few dozen bytes whatever its length, so a file's
/// metadata takes memory in proportion to the number of keys, not to the
/// length of its arrays (a 64 Mi-element u8 array would otherwise cost 2 GiB of
/// 32-byte values). Reading an element of a fixed-size type is O(1); an element
/// of a string or nested array is found by walking from the start, O(index).
#[derive(Clone)]
pub struct MetaArray(ArrayRepr);

#[derive(Clone)]
enum ArrayRepr {
    /// `elem` is the element type id (4, u32, for an empty array).
    Owned {
        elem: u32,
        items: Vec<MetaValue>,
    },
    Mapped(ArrayRef),
}

/// Elements `[start, end)` of a file's bytes: `len` values of type `elem`,
/// checked by the reader (they fit, strings are UTF-8, nesting is bounded).
#[derive(Clone)]
pub(crate) struct ArrayRef {
    pub(crate) bytes: Arc<Bytes>,
    pub(crate) elem: u32,
    pub(crate) len: u64,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// Encoded size of one value of a fixed-size type (`None` for strings and arrays).
pub(crate) fn fixed_size(type_id: u32) -> Option<usize> {
    Some(match type_id {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        _ => return None,
    })
}

/// Decodes one value of a fixed-size type from exactly its bytes.
fn decode_fixed(type_id: u32, b: &[u8]) -> Option<MetaValue> {
    let a2 = || <[u8; 2]>::try_from(b).ok();
    let a4 = || <[u8; 4]>::try_from(b).ok();
    let a8 = || <[u8; 8]>::try_from(b).ok();
    Some(match type_id {
        0 => MetaValue::U8(*b.first()?),
        1 => MetaValue::I8(*b.first()? as i8),
        2 => MetaValue::U16(u16::from_le_bytes(a2()?)),
        3 => MetaValue::I16(i16::from_le_bytes(a2()?)),
        4 => MetaValue::U32(u32::from_le_bytes(a4()?)),
        5 => MetaValue::I32(i32::from_le_bytes(a4()?)),
        6 => MetaValue::F32(f32::from_le_bytes(a4()?)),
        7 => MetaValue::Bool(*b.first()? != 0),
        10 => MetaValue::U64(u64::from_le_bytes(a8()?)),
        11 => MetaValue::I64(i64::from_le_bytes(a8()?)),
        12 => MetaValue::F64(f64::from_le_bytes(a8()?)),
        _ => return None,
    })
}

fn le_u64(b: &[u8], pos: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(pos..pos.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn le_u32(b: &[u8], pos: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(pos..pos.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// The end of the encoded value of type `ty` at `pos` in `b` (already checked
/// by the reader; `None` only if it was not).
fn value_end(b: &[u8], pos: usize, ty: u32) -> Option<usize> {
    if let Some(n) = fixed_size(ty) {
        return pos.checked_add(n).filter(|&e| e <= b.len());
    }
    match ty {
        8 => {
            let len = usize::try_from(le_u64(b, pos)?).ok()?;
            pos.checked_add(8)?
                .checked_add(len)
                .filter(|&e| e <= b.len())
        }
        9 => {
            let elem = le_u32(b, pos)?;
            let count = le_u64(b, pos + 4)?;
            let mut p = pos + 12;
            if let Some(n) = fixed_size(elem) {
                let bytes = usize::try_from(count).ok()?.checked_mul(n)?;
                return p.checked_add(bytes).filter(|&e| e <= b.len());
            }
            for _ in 0..count {
                p = value_end(b, p, elem)?;
            }
            Some(p)
        }
        _ => None,
    }
}

impl ArrayRef {
    fn data(&self) -> &[u8] {
        self.bytes.as_slice()
    }

    /// The value at `pos` (the start of an element) and where the next begins.
    fn decode_at(&self, pos: usize) -> Option<(MetaValue, usize)> {
        let b = self.data();
        let end = value_end(b, pos, self.elem)?;
        let v = match self.elem {
            8 => MetaValue::String(std::str::from_utf8(&b[pos + 8..end]).ok()?.to_string()),
            9 => MetaValue::Array(MetaArray(ArrayRepr::Mapped(ArrayRef {
                bytes: self.bytes.clone(),
                elem: le_u32(b, pos)?,
                len: le_u64(b, pos + 4)?,
                start: pos + 12,
                end,
            }))),
            t => decode_fixed(t, &b[pos..end])?,
        };
        Some((v, end))
    }
}

impl MetaArray {
    /// A view of a file's bytes (made by the reader, which has checked them).
    pub(crate) fn mapped(r: ArrayRef) -> MetaArray {
        MetaArray(ArrayRepr::Mapped(r))
    }

    /// For the writer: element type, count and the encoded elements of a view.
    pub(crate) fn raw(&self) -> Option<(u32, u64, &[u8])> {
        match &self.0 {
            ArrayRepr::Mapped(r) => Some((r.elem, r.len, &r.data()[r.start..r.end])),
            ArrayRepr::Owned { .. } => None,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match &self.0 {
            ArrayRepr::Owned { items, .. } => items.len(),
            // Every element takes at least a byte of the mapped file: fits usize.
            ArrayRepr::Mapped(r) => r.len as usize,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The GGUF type id of the elements (4, u32, for an empty in-memory array).
    pub fn elem_type(&self) -> u32 {
        match &self.0 {
            ArrayRepr::Owned { elem, .. } => *elem,
            ArrayRepr::Mapped(r) => r.elem,
        }
    }

    /// Element `i`, decoded.
    pub fn get(&self, i: usize) -> Option<MetaValue> {
        match &self.0 {
            ArrayRepr::Owned { items, .. } => items.get(i).cloned(),
            ArrayRepr::Mapped(r) => {
                if i as u64 >= r.len {
                    return None;
                }
                match fixed_size(r.elem) {
                    Some(n) => {
                        let pos = r.start + i * n;
                        decode_fixed(r.elem, r.data().get(pos..pos + n)?)
                    }
                    None => self.iter().nth(i),
                }
            }
        }
    }

    /// The elements in order, each decoded as it is reached.
    pub fn iter(&self) -> MetaArrayIter<'_> {
        let pos = match &self.0 {
            ArrayRepr::Mapped(r) => r.start,
            ArrayRepr::Owned { .. } => 0,
        };
        MetaArrayIter {
            array: self,
            i: 0,
            pos,
        }
    }
}

/// Iterator over a [`MetaArray`]'s elements.
pub struct MetaArrayIter<'a> {
    array: &'a MetaArray,
    i: usize,
    /// Byte position of element `i` in a mapped array.
    pos: usize,
}

impl Iterator for MetaArrayIter<'_> {
    type Item = MetaValue;

    fn next(&mut self) -> Option<MetaValue> {
        let v = match &self.array.0 {
            ArrayRepr::Owned { items, .. } => items.get(self.i)?.clone(),
            ArrayRepr::Mapped(r) => {
                if self.i as u64 >= r.len {
                    return None;
                }
                let (v, next) = r.decode_at(self.pos)?;
                self.pos = next;
                v
            }
        };
        self.i += 1;
        Some(v)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.array.len().saturating_sub(self.i);
        (left, Some(left))
    }
}

impl Default for MetaArray {
    /// An empty in-memory array.
    fn default() -> MetaArray {
        MetaArray::from(Vec::new())
    }
}

impl<'a> IntoIterator for &'a MetaArray {
    type Item = MetaValue;
    type IntoIter = MetaArrayIter<'a>;
    fn into_iter(self) -> MetaArrayIter<'a> {
        self.iter()
    }
}

impl From<Vec<MetaValue>> for MetaArray {
    /// An in-memory array; its element type is that of the first element.
    fn from(items: Vec<MetaValue>) -> MetaArray {
        let elem = items.first().map_or(4, MetaValue::type_id);
        MetaArray(ArrayRepr::Owned { elem, items })
    }
}

impl FromIterator<MetaValue> for MetaArray {
    fn from_iter<I: IntoIterator<Item = MetaValue>>(it: I) -> MetaArray {
        MetaArray::from(it.into_iter().collect::<Vec<_>>())
    }
}

impl PartialEq for MetaArray {
    fn eq(&self, other: &MetaArray) -> bool {
        self.len() == other.len()
            && (self.is_empty() || self.elem_type() == other.elem_type())
            && self.iter().eq(other.iter())
    }
}

impl fmt::Debug for MetaArray {
    /// At most the first 8 elements, then the count: a file's array may hold
    /// millions, and error messages print values with `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 8;
        let mut l = f.debug_list();
        l.entries(self.iter().take(SHOWN));
        if self.len() > SHOWN {
            l.entry(&format_args!("… ({} elements)", self.len()));
        }
        l.finish()
    }
}

impl MetaValue {
    /// The GGUF value type id.
    pub fn type_id(&self) -> u32 {
        match self {
            MetaValue::U8(_) => 0,
            MetaValue::I8(_) => 1,
            MetaValue::U16(_) => 2,
            MetaValue::I16(_) => 3,
            MetaValue::U32(_) => 4,
            MetaValue::I32(_) => 5,
            MetaValue::F32(_) => 6,
            MetaValue::Bool(_) => 7,
            MetaValue::String(_) => 8,
            MetaValue::Array(_) => 9,
            MetaValue::U64(_) => 10,
            MetaValue::I64(_) => 11,
            MetaValue::F64(_) => 12,
        }
    }

    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v as u64),
            MetaValue::U16(v) => Some(v as u64),
            MetaValue::U32(v) => Some(v as u64),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            MetaValue::Bool(v) => Some(v as u64),
            _ => None,
        }
    }

    /// The value as a signed integer, if it is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            MetaValue::I8(v) => Some(v as i64),
            MetaValue::I16(v) => Some(v as i64),
            MetaValue::I32(v) => Some(v as i64),
            MetaValue::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// The value as a float (floats and integers).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v as f64),
            MetaValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&MetaArray> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            _ => None,
        }
    }
}
