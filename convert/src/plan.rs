//! The output of a conversion: metadata plus a list of tensors, each with the type
//! it is stored as and a way to produce its values. Writing goes one tensor at a
//! time, so memory stays at the size of the largest tensor.

use crate::error::{Error, Result};
use std::path::Path;
use tah::app::output::write_output;
use tah::format::{GgufWriter, MetaValue};
use tah::quant::{self, GgmlType};

/// An unsigned metadata value: u32 (llama.cpp's type for counts and token ids)
/// when it fits, else u64, so that an out-of-range number reaches the runtime's
/// checks (`validate`) whole instead of truncated into range.
pub fn uint<T: TryInto<u64>>(v: T) -> MetaValue {
    // usize and u64 always fit u64 on the machines we build for.
    let v: u64 = v.try_into().unwrap_or(u64::MAX);
    match u32::try_from(v) {
        Ok(x) => MetaValue::U32(x),
        Err(_) => MetaValue::U64(v),
    }
}

/// Values of one tensor, either already encoded in a ggml type (copied through when
/// the output type is the same) or as f32.
pub enum Data<'a> {
    Encoded(GgmlType, std::borrow::Cow<'a, [u8]>),
    F32(Vec<f32>),
}

pub type Loader<'a> = Box<dyn Fn() -> Result<Data<'a>> + 'a>;

pub struct OutTensor<'a> {
    pub name: String,
    /// GGUF order (innermost first).
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    pub load: Loader<'a>,
}

#[derive(Default)]
pub struct Plan<'a> {
    pub meta: Vec<(String, MetaValue)>,
    pub tensors: Vec<OutTensor<'a>>,
}

impl<'a> Plan<'a> {
    pub fn set(&mut self, key: &str, v: MetaValue) {
        match self.meta.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = v,
            None => self.meta.push((key.to_string(), v)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.meta.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn push(
        &mut self,
        name: impl Into<String>,
        dims: Vec<u64>,
        ty: GgmlType,
        load: Loader<'a>,
    ) {
        self.tensors.push(OutTensor {
            name: name.into(),
            dims,
            ty,
            load,
        });
    }

    pub fn tensor(&self, name: &str) -> Option<&OutTensor<'a>> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// Encodes `data` as `ty` (n values).
pub fn encode(name: &str, data: Data<'_>, ty: GgmlType, n: usize) -> Result<Vec<u8>> {
    let values = match data {
        Data::Encoded(src, bytes) if src == ty => return Ok(bytes.into_owned()),
        Data::Encoded(src, bytes) => {
            if src.row_bytes(n as u64) != Some(bytes.len() as u64) {
                crate::bail!(
                    "tensor '{name}': {} bytes of {src} do not hold {n} values",
                    bytes.len()
                );
            }
            let mut v = vec![0f32; n];
            quant::dequantize(src, &bytes, &mut v);
            v
        }
        Data::F32(v) => v,
    };
    if values.len() != n {
        crate::bail!("tensor '{name}': {} values, expected {n}", values.len());
    }
    let size = ty.row_bytes(n as u64).ok_or_else(|| {
        Error::new(format!(
            "tensor '{name}': {n} values do not fit {ty} blocks"
        ))
    })?;
    if !ty.can_quantize() {
        crate::bail!("tensor '{name}': cannot quantize to {ty}");
    }
    let mut out = vec![0u8; size as usize];
    quant::quantize(ty, &values, &mut out);
    Ok(out)
}

/// Writes the plan to `out` atomically, calling `progress(done, total)` after
/// each tensor. Returns the bytes written.
pub fn write(
    plan: &Plan<'_>,
    out: &Path,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<u64> {
    let mut w = GgufWriter::new();
    for (k, v) in &plan.meta {
        w.set(k, v.clone());
    }
    for t in &plan.tensors {
        w.add_tensor(&t.name, &t.dims, t.ty)?;
    }
    write_output(out, |file| -> Result<u64> {
        let mut sink = w.begin(&mut *file)?;
        for (i, t) in plan.tensors.iter().enumerate() {
            progress(i, plan.tensors.len(), &t.name);
            let n: u64 = t.dims.iter().product();
            let bytes = encode(&t.name, (t.load)()?, t.ty, n as usize)?;
            sink.write_tensor(&bytes)?;
        }
        progress(plan.tensors.len(), plan.tensors.len(), "");
        sink.finish()?;
        Ok(std::io::Seek::stream_position(file)?)
    })
}
