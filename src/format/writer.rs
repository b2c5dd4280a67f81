//! GGUF v3 writer.
//!
//! Metadata and the tensor table are declared first, so every tensor's offset is
//! known before the header is written; tensor data is then streamed in
//! declaration order. `tah-convert` writes through [`crate::app::output`], which
//! puts the result in place only once it is complete, so a failed or killed
//! conversion never leaves a half-written file.

use super::MetaValue;
use crate::quant::GgmlType;
use std::io::{self, Write};

/// Tensor data alignment we write (`general.alignment`).
pub const ALIGNMENT: u64 = 32;

#[derive(Clone, Debug)]
struct PlannedTensor {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    offset: u64,
    size: u64,
}

/// Collects metadata and tensor declarations, then writes the file.
#[derive(Default)]
pub struct GgufWriter {
    meta: Vec<(String, MetaValue)>,
    tensors: Vec<PlannedTensor>,
    data_len: u64,
}

impl GgufWriter {
    pub fn new() -> GgufWriter {
        let mut w = GgufWriter::default();
        w.set("general.alignment", MetaValue::U32(ALIGNMENT as u32));
        w
    }

    /// Sets a metadata key (replacing an earlier value, keeping its place).
    pub fn set(&mut self, key: &str, value: MetaValue) {
        match self.meta.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.meta.push((key.to_string(), value)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.meta.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn metadata(&self) -> &[(String, MetaValue)] {
        &self.meta
    }

    /// Declares a tensor; `dims` in GGUF order (innermost first). Its data must be
    /// passed to [`TensorSink::write_tensor`] in declaration order.
    pub fn add_tensor(&mut self, name: &str, dims: &[u64], ty: GgmlType) -> io::Result<()> {
        let bad = |why: String| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("tensor '{name}': {why}"),
            )
        };
        if name.len() >= 64 {
            // ggml's GGML_MAX_NAME: llama.cpp and the gguf package reject longer names.
            return Err(bad("name longer than 63 bytes".into()));
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(bad("declared twice".into()));
        }
        if dims.is_empty() || dims.len() > 4 || dims.contains(&0) {
            return Err(bad(format!("bad dimensions {dims:?}")));
        }
        let rows: u64 = dims[1..].iter().product();
        let size = ty
            .row_bytes(dims[0])
            .and_then(|rb| rb.checked_mul(rows))
            .ok_or_else(|| bad(format!("dimensions {dims:?} do not fit type {ty}")))?;
        let offset = self.data_len.div_ceil(ALIGNMENT) * ALIGNMENT;
        self.data_len = offset + size;
        self.tensors.push(PlannedTensor {
            name: name.to_string(),
            dims: dims.to_vec(),
            ty,
            offset,
            size,
        });
        Ok(())
    }

    /// Writes the header and tensor table; returns a sink for the tensor data.
    pub fn begin<W: Write>(self, mut out: W) -> io::Result<TensorSink<W>> {
        let mut header = Vec::new();
        header.extend_from_slice(b"GGUF");
        header.extend_from_slice(&3u32.to_le_bytes());
        header.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        header.extend_from_slice(&(self.meta.len() as u64).to_le_bytes());
        for (k, v) in &self.meta {
            put_string(&mut header, k);
            header.extend_from_slice(&v.type_id().to_le_bytes());
            put_value(&mut header, v)?;
        }
        for t in &self.tensors {
            put_string(&mut header, &t.name);
            header.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                header.extend_from_slice(&d.to_le_bytes());
            }
            header.extend_from_slice(&t.ty.id().to_le_bytes());
            header.extend_from_slice(&t.offset.to_le_bytes());
        }
        let pad = (header.len() as u64).div_ceil(ALIGNMENT) * ALIGNMENT - header.len() as u64;
        header.resize(header.len() + pad as usize, 0);
        out.write_all(&header)?;
        Ok(TensorSink {
            out,
            tensors: self.tensors,
            next: 0,
            written: 0,
        })
    }
}

/// Receives tensor data in declaration order.
pub struct TensorSink<W: Write> {
    out: W,
    tensors: Vec<PlannedTensor>,
    next: usize,
    written: u64,
}

impl<W: Write> TensorSink<W> {
    /// Writes the next tensor's data (exactly its declared size).
    pub fn write_tensor(&mut self, data: &[u8]) -> io::Result<()> {
        let t = self
            .tensors
            .get(self.next)
            .ok_or_else(|| io::Error::other("more tensor data than declared"))?;
        if data.len() as u64 != t.size {
            return Err(io::Error::other(format!(
                "tensor '{}': {} bytes given, {} declared",
                t.name,
                data.len(),
                t.size
            )));
        }
        let pad = t.offset - self.written;
        self.out.write_all(&vec![0u8; pad as usize])?;
        self.out.write_all(data)?;
        self.written = t.offset + t.size;
        self.next += 1;
        Ok(())
    }

    /// Checks that every tensor was written and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        if self.next != self.tensors.len() {
            return Err(io::Error::other(format!(
                "{} of {} tensors written",
                self.next,
                self.tensors.len()
            )));
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

fn put_string(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn put_value(buf: &mut Vec<u8>, v: &MetaValue) -> io::Result<()> {
    match v {
        MetaValue::U8(x) => buf.push(*x),
        MetaValue::I8(x) => buf.push(*x as u8),
        MetaValue::U16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => buf.push(*x as u8),
        MetaValue::String(s) => put_string(buf, s),
        MetaValue::Array(items) => {
            // An array read from a file is copied as it is encoded there.
            if let Some((elem, len, raw)) = items.raw() {
                buf.extend_from_slice(&elem.to_le_bytes());
                buf.extend_from_slice(&len.to_le_bytes());
                buf.extend_from_slice(raw);
                return Ok(());
            }
            // An empty array is written as an array of u32 (its element type is moot).
            let elem = items.elem_type();
            if items.iter().any(|i| i.type_id() != elem) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "array elements of mixed types",
                ));
            }
            buf.extend_from_slice(&elem.to_le_bytes());
            buf.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for i in items.iter() {
                put_value(buf, &i)?;
            }
        }
        MetaValue::U64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => buf.extend_from_slice(&x.to_le_bytes()),
    }
    Ok(())
}
