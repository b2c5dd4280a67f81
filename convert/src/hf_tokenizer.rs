//! The tokenizer of a Hugging Face directory: `tokenizer.json` is embedded whole;
//! `tokenizer_config.json` gives the chat template and the special tokens;
//! `generation_config.json` / `config.json` add end-of-generation ids.

use crate::error::{Error, Result};
use crate::plan::Plan;
use serde_json::Value;
use std::path::Path;
use tah::format::{keys, MetaValue};

fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::new(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::new(format!("{}: {e}", path.display())))
}

/// A special token named in tokenizer_config.json: a string or `{"content": ...}`.
fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// The id of a token's text in a tokenizer.json (added tokens first, then the vocab).
pub fn token_id(tokenizer: &Value, text: &str) -> Option<u64> {
    if let Some(added) = tokenizer.get("added_tokens").and_then(Value::as_array) {
        for t in added {
            if t.get("content").and_then(Value::as_str) == Some(text) {
                return t.get("id").and_then(Value::as_u64);
            }
        }
    }
    tokenizer.get("model")?.get("vocab")?.get(text)?.as_u64()
}

fn ids(v: Option<&Value>) -> Vec<u64> {
    match v {
        Some(Value::Number(n)) => n.as_u64().into_iter().collect(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_u64).collect(),
        _ => Vec::new(),
    }
}

/// Token texts that end a turn in the families we support.
pub const EOG_TEXTS: [&str; 6] = [
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|end|>",
    "</s>",
];

/// Adds the tokenizer keys. Returns false when the directory has no tokenizer.json
/// (the model can then only be driven with token ids).
pub fn add_tokenizer(plan: &mut Plan, dir: &Path) -> Result<bool> {
    let tok_path = dir.join("tokenizer.json");
    let Some(tokenizer) = read_json(&tok_path)? else {
        return Ok(false);
    };
    let raw = std::fs::read_to_string(&tok_path)?;
    plan.set(keys::TOKENIZER_HF_JSON, MetaValue::String(raw));

    let cfg = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Value::Null);
    let template = match cfg.get("chat_template") {
        Some(Value::String(s)) => Some(s.clone()),
        // A list of named templates: take the default one.
        Some(Value::Array(list)) => list
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
        _ => None,
    };
    let template =
        template.or_else(|| std::fs::read_to_string(dir.join("chat_template.jinja")).ok());
    if let Some(t) = template {
        plan.set(keys::CHAT_TEMPLATE, MetaValue::String(t));
    }

    let mut eog: Vec<u64> = Vec::new();
    let add = |id: u64, eog: &mut Vec<u64>| {
        if !eog.contains(&id) {
            eog.push(id)
        }
    };
    if let Some(id) = token_text(cfg.get("eos_token")).and_then(|t| token_id(&tokenizer, &t)) {
        plan.set(keys::EOS_ID, crate::plan::uint(id));
        add(id, &mut eog);
    }
    if let Some(id) = token_text(cfg.get("bos_token")).and_then(|t| token_id(&tokenizer, &t)) {
        plan.set(keys::BOS_ID, crate::plan::uint(id));
    }
    if let Some(id) = token_text(cfg.get("pad_token")).and_then(|t| token_id(&tokenizer, &t)) {
        plan.set(keys::PAD_ID, crate::plan::uint(id));
    }
    plan.set(
        keys::ADD_BOS,
        MetaValue::Bool(
            cfg.get("add_bos_token")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        ),
    );
    for f in ["generation_config.json", "config.json"] {
        if let Some(v) = read_json(&dir.join(f))? {
            for id in ids(v.get("eos_token_id")) {
                add(id, &mut eog);
            }
        }
    }
    for text in EOG_TEXTS {
        if let Some(id) = token_id(&tokenizer, text) {
            add(id, &mut eog);
        }
    }
    if !eog.is_empty() {
        if plan.get(keys::EOS_ID).is_none() {
            plan.set(keys::EOS_ID, crate::plan::uint(eog[0]));
        }
        plan.set(
            keys::EOG_IDS,
            MetaValue::Array(eog.into_iter().map(crate::plan::uint).collect()),
        );
    }
    Ok(true)
}
