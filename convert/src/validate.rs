//! The runtime's checks, run on a plan before it is written: the converter
//! refuses to write a file the runtime would refuse to load.
//!
//! The hyper-parameters, TaH settings, token ids and tensor shapes go through
//! `tah::model::Config::from_source`, the loader's own code, on the plan. The
//! tokenizer and chat template go through the loader's readers
//! (`Tokenizer::from_gguf`, `ChatTemplate::from_gguf`) on an in-memory GGUF
//! image of the plan's metadata (no tensors), so they see exactly the bytes the
//! file will hold.

use crate::error::{Error, Result};
use crate::plan::Plan;
use tah::format::{keys, GgufFile, GgufWriter, MetaValue};
use tah::model::{Config, ModelSource};

impl ModelSource for Plan<'_> {
    fn source_name(&self) -> String {
        "the output".into()
    }
    fn meta(&self, key: &str) -> Option<&MetaValue> {
        self.get(key)
    }
    fn tensor_shape(&self, name: &str) -> Option<Vec<u64>> {
        self.tensor(name)
            .map(|t| t.dims.iter().rev().copied().collect())
    }
    fn tensor_count(&self) -> usize {
        self.tensors.len()
    }
}

/// Runs the runtime's checks on `plan`; the error says what the runtime would
/// refuse, naming the metadata key.
pub fn check_plan(plan: &Plan<'_>) -> Result<()> {
    let refuse = |e: String| {
        Error::new(format!(
            "refusing to write a file the runtime would refuse: {e}"
        ))
    };
    Config::from_source(plan).map_err(|e| refuse(e.to_string()))?;

    let mut w = GgufWriter::new();
    for (k, v) in &plan.meta {
        w.set(k, v.clone());
    }
    let image = w
        .begin(Vec::new())
        .and_then(|s| s.finish())
        .map_err(|e| Error::new(format!("cannot encode the metadata: {e}")))?;
    let f = GgufFile::from_bytes("the output", image)?;
    let text = |key: &str, e: tah::text::TextError| match e {
        tah::text::TextError::Metadata { key, reason } => {
            refuse(format!("metadata key '{key}': {reason}"))
        }
        other => refuse(format!("metadata key '{key}': {other}")),
    };
    tah::text::Tokenizer::from_gguf(&f).map_err(|e| text(keys::TOKENIZER_HF_JSON, e))?;
    tah::text::ChatTemplate::from_gguf(&f).map_err(|e| text(keys::CHAT_TEMPLATE, e))?;
    Ok(())
}
