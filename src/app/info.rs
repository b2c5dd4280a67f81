//! `tah info`: what a `.tah` (or any GGUF) file holds, for people and for scripts.

use crate::format::{keys, GgufFile, MetaValue};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(Serialize)]
pub struct Info {
    pub file: String,
    pub file_size: u64,
    pub gguf_version: u32,
    pub alignment: u64,
    pub architecture: Option<String>,
    pub name: Option<String>,
    /// `{arch}.*` hyper-parameters, without the prefix.
    pub hparams: BTreeMap<String, serde_json::Value>,
    /// Tensor count and bytes per type.
    pub types: BTreeMap<String, TypeCount>,
    pub tokenizer: TokenizerInfo,
    /// The `tah.*` settings; `None` for a plain (base-only) model.
    pub tah: Option<BTreeMap<String, serde_json::Value>>,
    pub tensors: Vec<TensorRow>,
}

#[derive(Serialize, Default)]
pub struct TypeCount {
    pub tensors: usize,
    pub bytes: u64,
}

#[derive(Serialize)]
pub struct TokenizerInfo {
    pub embedded_tokenizer_json_bytes: Option<usize>,
    pub ggml_model: Option<String>,
    pub ggml_pre: Option<String>,
    pub has_chat_template: bool,
    pub bos_id: Option<u64>,
    pub eos_id: Option<u64>,
    pub eog_ids: Vec<u64>,
}

#[derive(Serialize)]
pub struct TensorRow {
    pub name: String,
    /// Row-major shape, outermost first (as PyTorch prints it).
    pub shape: Vec<u64>,
    #[serde(rename = "type")]
    pub ty: String,
    pub bytes: u64,
    pub offset: u64,
}

/// A metadata value as JSON; long arrays are summarised by their length.
pub fn meta_to_json(v: &MetaValue, max_array: usize) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        MetaValue::String(s) => J::from(s.as_str()),
        MetaValue::Bool(b) => J::from(*b),
        MetaValue::F32(x) => J::from(*x as f64),
        MetaValue::F64(x) => J::from(*x),
        MetaValue::Array(items) if items.len() > max_array => {
            J::from(format!("[{} items]", items.len()))
        }
        MetaValue::Array(items) => {
            J::Array(items.iter().map(|i| meta_to_json(&i, max_array)).collect())
        }
        other => other
            .as_i64()
            .map(J::from)
            .or_else(|| other.as_u64().map(J::from))
            .unwrap_or(J::Null),
    }
}

/// Most end-of-generation ids listed (real models have a handful; the file's
/// array could hold millions).
const MAX_EOG_SHOWN: usize = 256;

pub fn describe(f: &GgufFile) -> Info {
    let arch = f.get_str(keys::ARCHITECTURE).map(str::to_string);
    let mut hparams = BTreeMap::new();
    let mut tah = BTreeMap::new();
    for (k, v) in f.metadata() {
        if let Some(a) = &arch {
            if let Some(rest) = k.strip_prefix(a.as_str()).and_then(|r| r.strip_prefix('.')) {
                hparams.insert(rest.to_string(), meta_to_json(v, 64));
            }
        }
        if let Some(rest) = k.strip_prefix("tah.") {
            tah.insert(rest.to_string(), meta_to_json(v, 64));
        }
    }
    let mut types: BTreeMap<String, TypeCount> = BTreeMap::new();
    let tensors = f
        .tensors()
        .iter()
        .map(|t| {
            let e = types.entry(t.ty.name().to_string()).or_default();
            e.tensors += 1;
            e.bytes += t.size;
            TensorRow {
                name: t.name.clone(),
                shape: t.shape(),
                ty: t.ty.name().into(),
                bytes: t.size,
                offset: t.offset,
            }
        })
        .collect();
    let eog_ids = f
        .get(keys::EOG_IDS)
        .and_then(MetaValue::as_array)
        .map(|a| {
            a.iter()
                .take(MAX_EOG_SHOWN)
                .filter_map(|v| v.as_u64())
                .collect()
        })
        .unwrap_or_default();
    Info {
        file: f.path().display().to_string(),
        file_size: f.file_size(),
        gguf_version: f.version,
        alignment: f.alignment,
        architecture: arch,
        name: f.get_str(keys::NAME).map(str::to_string),
        hparams,
        types,
        tokenizer: TokenizerInfo {
            embedded_tokenizer_json_bytes: f.get_str(keys::TOKENIZER_HF_JSON).map(str::len),
            ggml_model: f.get_str("tokenizer.ggml.model").map(str::to_string),
            ggml_pre: f.get_str("tokenizer.ggml.pre").map(str::to_string),
            has_chat_template: f.get_str(keys::CHAT_TEMPLATE).is_some(),
            bos_id: f.get_u64(keys::BOS_ID),
            eos_id: f.get_u64(keys::EOS_ID),
            eog_ids,
        },
        tah: if tah.is_empty() { None } else { Some(tah) },
        tensors,
    }
}

fn mib(b: u64) -> String {
    format!("{:.2} MiB", b as f64 / (1024.0 * 1024.0))
}

/// The human-readable report.
pub fn render(info: &Info) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "file:          {} ({})", info.file, mib(info.file_size));
    let _ = writeln!(
        s,
        "format:        GGUF v{}, alignment {}",
        info.gguf_version, info.alignment
    );
    let _ = writeln!(
        s,
        "architecture:  {}",
        info.architecture.as_deref().unwrap_or("(none)")
    );
    if let Some(n) = &info.name {
        let _ = writeln!(s, "name:          {n}");
    }
    for (k, v) in &info.hparams {
        let _ = writeln!(s, "  {k:<36} {v}");
    }
    let _ = writeln!(s, "types:");
    for (t, c) in &info.types {
        let _ = writeln!(s, "  {t:<6} {:>5} tensors  {}", c.tensors, mib(c.bytes));
    }
    let tk = &info.tokenizer;
    let _ = writeln!(
        s,
        "tokenizer:     {}{}, chat template: {}, bos {:?}, eos {:?}, end-of-generation {:?}",
        match tk.embedded_tokenizer_json_bytes {
            Some(n) => format!("tokenizer.json embedded ({n} bytes)"),
            None => "no tokenizer.json".into(),
        },
        match (&tk.ggml_model, &tk.ggml_pre) {
            (Some(m), Some(p)) => format!(", ggml vocab {m}/{p}"),
            (Some(m), None) => format!(", ggml vocab {m}"),
            _ => String::new(),
        },
        if tk.has_chat_template { "yes" } else { "no" },
        tk.bos_id,
        tk.eos_id,
        tk.eog_ids
    );
    match &info.tah {
        None => {
            let _ = writeln!(s, "think-at-hard: none (plain model: think mode \"never\")");
        }
        Some(t) => {
            let _ = writeln!(s, "think-at-hard:");
            for (k, v) in t {
                let _ = writeln!(s, "  tah.{k:<32} {v}");
            }
            if let Some(th) = t.get("decider.threshold") {
                let dtype = t
                    .get("decider.dtype")
                    .and_then(|d| d.as_str())
                    .unwrap_or("f32");
                let _ = writeln!(
                    s,
                    "  (the decider continues a token iff sigmoid(z) > {th}, the threshold as stored in {dtype})"
                );
            }
        }
    }
    let _ = writeln!(s, "tensors ({}):", info.tensors.len());
    for t in &info.tensors {
        let shape = t
            .shape
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" x ");
        let _ = writeln!(
            s,
            "  {:<48} {:<6} {:<18} {:>12}",
            t.name, t.ty, shape, t.bytes
        );
    }
    s
}
