//! Safetensors input: one file, or shards listed by `model.safetensors.index.json`,
//! memory-mapped. Headers are parsed and checked by the `safetensors` crate (every
//! offset within the file, no overlaps); the index is checked here.

use crate::bail;
use crate::error::{Error, Result};
use crate::plan::Data;
use safetensors::{Dtype, SafeTensors};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tah::quant::GgmlType;

pub struct StTensor {
    file: usize,
    pub dtype: Dtype,
    /// Row-major shape, outermost first.
    pub shape: Vec<usize>,
    start: usize,
    end: usize,
}

impl StTensor {
    /// GGUF dims (innermost first).
    pub fn dims(&self) -> Vec<u64> {
        if self.shape.is_empty() {
            return vec![1];
        }
        self.shape.iter().rev().map(|&d| d as u64).collect()
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The bytes of one input file: mapped from disk, or held in memory.
enum FileBytes {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mmap(m) => m,
            FileBytes::Owned(v) => v,
        }
    }
}

/// The tensors of one or more safetensors files.
#[derive(Default)]
pub struct Safetensors {
    files: Vec<(PathBuf, FileBytes)>,
    tensors: BTreeMap<String, StTensor>,
}

impl Safetensors {
    /// A model directory: `model.safetensors`, or the shards named by
    /// `model.safetensors.index.json`.
    pub fn open_model_dir(dir: &Path) -> Result<Safetensors> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let mut st = Safetensors::default();
        if single.is_file() {
            st.add_file(&single)?;
        } else if index.is_file() {
            for shard in shard_files(&index)? {
                st.add_file(&dir.join(shard))?;
            }
        } else {
            bail!(
                "{}: no model.safetensors or model.safetensors.index.json",
                dir.display()
            );
        }
        Ok(st)
    }

    pub fn open_file(path: &Path) -> Result<Safetensors> {
        let mut st = Safetensors::default();
        st.add_file(path)?;
        Ok(st)
    }

    /// A safetensors image held in memory (tests, fuzzing); `name` is used in errors.
    pub fn from_bytes(name: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Safetensors> {
        let mut st = Safetensors::default();
        st.add_bytes(name.into(), FileBytes::Owned(bytes))?;
        Ok(st)
    }

    fn add_file(&mut self, path: &Path) -> Result<()> {
        let file = std::fs::File::open(path)
            .map_err(|e| Error::new(format!("{}: {e}", path.display())))?;
        // SAFETY: read-only private mapping of an input file we do not modify; the
        // safetensors header is validated against the mapping's length below.
        let map = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| Error::new(format!("{}: {e}", path.display())))?;
        self.add_bytes(path.to_path_buf(), FileBytes::Mmap(map))
    }

    fn add_bytes(&mut self, path: PathBuf, map: FileBytes) -> Result<()> {
        let (header_len, meta) = SafeTensors::read_metadata(&map)
            .map_err(|e| Error::new(format!("{}: bad safetensors file: {e}", path.display())))?;
        let data_start = 8 + header_len;
        let file_no = self.files.len();
        for (name, info) in meta.tensors() {
            if self.tensors.contains_key(&name) {
                bail!(
                    "{}: tensor '{name}' appears in more than one file",
                    path.display()
                );
            }
            let (s, e) = info.data_offsets;
            self.tensors.insert(
                name,
                StTensor {
                    file: file_no,
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    start: data_start + s,
                    end: data_start + e,
                },
            );
        }
        self.files.push((path, map));
        Ok(())
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn get(&self, name: &str) -> Option<&StTensor> {
        self.tensors.get(name)
    }

    pub fn bytes(&self, t: &StTensor) -> &[u8] {
        &self.files[t.file].1[t.start..t.end]
    }

    /// The tensor's values as converter input (f32/f16/bf16 pass through as-is).
    pub fn data(&self, name: &str) -> Result<Data<'_>> {
        let t = self
            .get(name)
            .ok_or_else(|| Error::new(format!("missing tensor '{name}'")))?;
        let bytes = self.bytes(t);
        let ty = match t.dtype {
            Dtype::F32 => GgmlType::F32,
            Dtype::F16 => GgmlType::F16,
            Dtype::BF16 => GgmlType::Bf16,
            Dtype::F64 => {
                let v = bytes
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                    .collect();
                return Ok(Data::F32(v));
            }
            other => bail!("tensor '{name}': unsupported dtype {other:?}"),
        };
        Ok(Data::Encoded(ty, Cow::Borrowed(bytes)))
    }

    /// The tensor's values as f32.
    pub fn f32(&self, name: &str) -> Result<Vec<f32>> {
        let n = self.get(name).map(StTensor::numel).unwrap_or(0);
        Ok(match self.data(name)? {
            Data::F32(v) => v,
            Data::Encoded(ty, b) => {
                let mut v = vec![0f32; n];
                tah::quant::dequantize(ty, &b, &mut v);
                v
            }
        })
    }
}

/// The distinct shard file names of an index, each a plain file name in the
/// same directory (no paths: the index is untrusted).
fn shard_files(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read(index).map_err(|e| Error::new(format!("{}: {e}", index.display())))?;
    parse_shard_index(index, &text)
}

/// The distinct shard file names of the index text `text` (as
/// `model.safetensors.index.json` holds it), sorted; `index` names it in errors.
pub fn parse_shard_index(index: &Path, text: &[u8]) -> Result<Vec<String>> {
    let v: serde_json::Value = serde_json::from_slice(text)
        .map_err(|e| Error::new(format!("{}: {e}", index.display())))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::new(format!("{}: no \"weight_map\" object", index.display())))?;
    // A set: the index is untrusted, and a linear search per entry would take
    // quadratic time on an index naming many shards.
    let mut files = std::collections::BTreeSet::new();
    for (tensor, file) in map {
        let Some(file) = file.as_str() else {
            bail!(
                "{}: weight_map['{tensor}'] is not a string",
                index.display()
            )
        };
        if file.is_empty()
            || file.contains('/')
            || file.contains('\\')
            || file == "."
            || file == ".."
        {
            bail!(
                "{}: weight_map['{tensor}'] = {file:?} is not a plain file name",
                index.display()
            );
        }
        files.insert(file);
    }
    Ok(files.into_iter().map(str::to_string).collect())
}
