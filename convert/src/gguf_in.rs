//! GGUF input (base models only): metadata and tensors are carried over as they
//! are (types kept unless a `--quant` policy says otherwise), and a tokenizer.json
//! equivalent to llama.cpp's tokenizer is synthesised from the vocabulary, so the
//! runtime has a single tokenizer path.

use crate::bail;
use crate::error::Result;
use crate::plan::{Data, Plan};
use crate::TypePolicy;
use std::borrow::Cow;
use tah::format::{keys, GgufFile, MetaValue};

/// Metadata keys recomputed for the output rather than copied.
const NOT_COPIED: [&str; 3] = [keys::ALIGNMENT, keys::TOKENIZER_HF_JSON, keys::EOG_IDS];

pub fn plan<'a>(src: &'a GgufFile, policy: &TypePolicy) -> Result<Plan<'a>> {
    let arch = src.get_str(keys::ARCHITECTURE).unwrap_or("");
    if !matches!(arch, "qwen3" | "qwen2" | "llama") {
        bail!(
            "{}: architecture '{arch}' is not supported (qwen3, qwen2, llama)",
            src.path().display()
        );
    }
    if src.get_str("general.type").is_some_and(|t| t == "adapter") {
        bail!("{}: a LoRA adapter GGUF, not a model", src.path().display());
    }
    let mut plan = Plan::default();
    for (k, v) in src.metadata() {
        if !NOT_COPIED.contains(&k.as_str()) {
            plan.set(k, v.clone());
        }
    }
    let json = crate::gguf_tokenizer::tokenizer_json_from_gguf(&|k| src.get(k))
        .map_err(|e| crate::error::Error::new(format!("{}: {e}", src.path().display())))?;
    plan.set(keys::TOKENIZER_HF_JSON, MetaValue::String(json));
    let eog = eog_ids(src);
    if !eog.is_empty() {
        plan.set(
            keys::EOG_IDS,
            MetaValue::Array(eog.into_iter().map(MetaValue::U32).collect()),
        );
    }

    let mut changed = false;
    for t in src.tensors() {
        let ty = policy.base_type(&t.name, &t.dims, t.ty);
        changed |= ty != t.ty;
        plan.push(
            t.name.clone(),
            t.dims.clone(),
            ty,
            Box::new(move || Ok(Data::Encoded(t.ty, Cow::Borrowed(src.tensor_data(t))))),
        );
    }
    if changed {
        if let Some(q) = policy.quant {
            plan.set(keys::FILE_TYPE, MetaValue::U32(crate::llama_ftype(q)));
        }
    }
    Ok(plan)
}

/// llama.cpp's end-of-generation set: the eos id plus the control tokens whose
/// text ends a turn (`<|im_end|>`, `<|endoftext|>`, `<|eot_id|>`, ...).
fn eog_ids(src: &GgufFile) -> Vec<u32> {
    let mut out: Vec<u32> = Vec::new();
    // An id that does not fit is left out here; the checks refuse the copied key.
    let id = |k: &str| src.get_u64(k).and_then(|v| u32::try_from(v).ok());
    if let Some(eos) = id(keys::EOS_ID) {
        out.push(eos);
    }
    if let Some(eot) = id("tokenizer.ggml.eot_token_id") {
        out.push(eot);
    }
    let (Some(tokens), Some(types)) = (
        src.get("tokenizer.ggml.tokens")
            .and_then(MetaValue::as_array),
        src.get("tokenizer.ggml.token_type")
            .and_then(MetaValue::as_array),
    ) else {
        return out;
    };
    for (id, (tok, ty)) in tokens.iter().zip(types.iter()).enumerate() {
        let control = ty.as_i64() == Some(3);
        if control
            && tok
                .as_str()
                .is_some_and(|t| crate::hf_tokenizer::EOG_TEXTS.contains(&t))
            && !out.contains(&(id as u32))
        {
            out.push(id as u32);
        }
    }
    out
}
