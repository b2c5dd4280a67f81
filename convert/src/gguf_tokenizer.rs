//! Synthesises a Hugging Face `tokenizer.json` from the tokenizer metadata of a GGUF file.
//!
//! The runtime only tokenizes through the `tokenizers` crate, so a GGUF model needs a
//! tokenizer.json that behaves like llama.cpp's own tokenizer, i.e. like
//! `llama_tokenize(add_special = true, parse_special = true)`:
//!
//! * every CONTROL, USER_DEFINED and UNKNOWN token is matched verbatim in the text before
//!   anything else (llama.cpp's special-token partition; HF's `added_tokens`);
//! * the rest is split by llama.cpp's regex list for `tokenizer.ggml.pre`, applied one after
//!   the other, each on the pieces of the previous one (HF: `Sequence` of `Split`/`Isolated`);
//! * each piece is mapped to GPT-2 byte-level characters and merged by BPE rank
//!   (HF: `ByteLevel` without its own regex, then the `BPE` model);
//! * no normalizer: llama.cpp does not normalize (Qwen's own tokenizer.json has NFC);
//! * BOS/EOS are added only when the GGUF asks for them (`TemplateProcessing`).
//!
//! Only `tokenizer.ggml.model = "gpt2"` (byte-level BPE) is supported. Everything else is
//! [`TokenizerSynthError::Unsupported`].

use serde_json::{json, Map, Value};
use tah::format::{MetaArray, MetaValue};

/// Why no tokenizer.json could be built.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenizerSynthError {
    /// The tokenizer model or pre-tokenizer is one we cannot reproduce.
    Unsupported(String),
    /// A tokenizer key is missing or malformed.
    BadMetadata(String),
}

impl std::fmt::Display for TokenizerSynthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unsupported(m) => write!(f, "unsupported tokenizer: {m}"),
            Self::BadMetadata(m) => write!(f, "bad tokenizer metadata: {m}"),
        }
    }
}

impl std::error::Error for TokenizerSynthError {}

// llama.cpp's token types (`tokenizer.ggml.token_type`).
const TOKEN_TYPE_UNKNOWN: i64 = 2;
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// The GPT-2 regex, as llama.cpp writes it (its `|\s+` tail is implied: with `Isolated`
/// the unmatched gaps, single whitespace before a non-space, become pieces anyway).
const GPT2_REGEX: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

/// llama.cpp's adapted llama3 regex. The contractions are spelled `'[sS]` rather than
/// `(?i:'s)` so that only ASCII case folds, as in llama.cpp.
const LLAMA3_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2: the llama3 regex with single digits.
const QWEN2_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// How llama.cpp pre-tokenizes for one `tokenizer.ggml.pre` value.
struct PreTokenizer {
    /// Regexes applied in order, each splitting the pieces of the previous one.
    regexes: &'static [&'static str],
    /// llama.cpp looks a whole piece up in the vocab before merging (HF `ignore_merges`).
    ignore_merges: bool,
    /// llama.cpp's add_bos default for this pre when the GGUF has no add_bos_token key.
    add_bos_default: bool,
}

/// llama.cpp's pre-tokenizer for a `tokenizer.ggml.pre` name (llama-vocab.cpp), for the
/// names whose regexes we translate. An absent pre is llama.cpp's "default".
fn pre_tokenizer(pre: &str) -> Option<PreTokenizer> {
    let p = |regexes, ignore_merges, add_bos_default| PreTokenizer {
        regexes,
        ignore_merges,
        add_bos_default,
    };
    Some(match pre {
        "" | "default" => p(
            &[
                r"[\p{P}\$\+<=>\^~\|]+",
                GPT2_REGEX,
                r"\p{N}+",
                r"[0-9][0-9][0-9]",
            ],
            false,
            false,
        ),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" => p(&[LLAMA3_REGEX], true, true),
        "dbrx" | "smaug-bpe" => p(&[LLAMA3_REGEX], false, false),
        "qwen2" | "deepseek-r1-qwen" | "stablelm2" | "megrez" => p(&[QWEN2_REGEX], false, false),
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => {
            p(&[r"\p{N}", GPT2_REGEX], false, false)
        }
        "gpt-2" | "phi-2" | "mpt" | "olmo" => p(&[GPT2_REGEX], false, false),
        _ => return None,
    })
}

/// Builds a Hugging Face tokenizer.json (as a JSON string) equivalent to llama.cpp's
/// tokenizer for this vocabulary.
///
/// `meta` looks a GGUF metadata key up, e.g. `&|k| gguf.get(k)` or `&|k| map.get(k)`.
///
/// Merges that the HF `BPE` model cannot represent (a part or the result missing from
/// the vocabulary) are dropped; llama.cpp would still apply them. Real vocabularies have
/// none.
pub fn tokenizer_json_from_gguf<'m>(
    meta: &dyn Fn(&str) -> Option<&'m MetaValue>,
) -> Result<String, TokenizerSynthError> {
    let bad = |m: String| TokenizerSynthError::BadMetadata(m);
    let string = |key: &str| -> Result<Option<&'m str>, TokenizerSynthError> {
        match meta(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| bad(format!("{key} is not a string"))),
        }
    };
    let array = |key: &str| -> Result<&'m MetaArray, TokenizerSynthError> {
        meta(key)
            .ok_or_else(|| bad(format!("{key} is missing")))?
            .as_array()
            .ok_or_else(|| bad(format!("{key} is not an array")))
    };
    let flag = |key: &str| meta(key).and_then(MetaValue::as_bool);
    let token_id = |key: &str| meta(key).and_then(MetaValue::as_u64);

    let model = string("tokenizer.ggml.model")?
        .ok_or_else(|| bad("tokenizer.ggml.model is missing".into()))?;
    if model != "gpt2" {
        return Err(TokenizerSynthError::Unsupported(format!(
            "tokenizer.ggml.model = {model:?} (only \"gpt2\" byte-level BPE is supported)"
        )));
    }
    let pre_name = string("tokenizer.ggml.pre")?.unwrap_or("default");
    let pre = pre_tokenizer(pre_name).ok_or_else(|| {
        TokenizerSynthError::Unsupported(format!("tokenizer.ggml.pre = {pre_name:?}"))
    })?;

    // Tokens. llama.cpp renames empty ones and, for duplicates, the last id wins the
    // text -> id map; inserting in order into the JSON object does the same.
    let tokens = array("tokenizer.ggml.tokens")?
        .iter()
        .enumerate()
        .map(|(i, t)| match t.as_str() {
            Some("") => Ok(format!("[EMPTY_{i}]")),
            Some(s) => Ok(s.to_owned()),
            None => Err(bad(format!("tokenizer.ggml.tokens[{i}] is not a string"))),
        })
        .collect::<Result<Vec<String>, _>>()?;
    let mut vocab = Map::new();
    for (id, text) in tokens.iter().enumerate() {
        vocab.insert(text.clone(), json!(id));
    }

    // Merges are "left right"; like llama.cpp, split at the first space after byte 0.
    let mut merges = Vec::new();
    for (i, m) in array("tokenizer.ggml.merges")?.iter().enumerate() {
        let m = m
            .as_str()
            .ok_or_else(|| bad(format!("tokenizer.ggml.merges[{i}] is not a string")))?;
        let pos = m
            .bytes()
            .skip(1)
            .position(|b| b == b' ')
            .map(|p| p + 1)
            .ok_or_else(|| bad(format!("tokenizer.ggml.merges[{i}] = {m:?} has no space")))?;
        let (left, right) = (&m[..pos], &m[pos + 1..]);
        let representable = vocab.contains_key(left)
            && vocab.contains_key(right)
            && vocab.contains_key(&format!("{left}{right}"));
        if representable {
            merges.push(json!([left, right]));
        }
    }

    // Added tokens: what llama.cpp matches in raw text before BPE with parse_special.
    // USER_DEFINED tokens are matched even without parse_special and are not "special"
    // (HF keeps them when decoding with skip_special_tokens).
    let no_types = MetaArray::default();
    let types = match meta("tokenizer.ggml.token_type") {
        Some(v) => v
            .as_array()
            .ok_or_else(|| bad("tokenizer.ggml.token_type is not an array".into()))?,
        None => &no_types,
    };
    let mut added_tokens = Vec::new();
    for (id, ty) in types.iter().enumerate() {
        let ty = ty
            .as_i64()
            .ok_or_else(|| bad(format!("tokenizer.ggml.token_type[{id}] is not an integer")))?;
        let special = match ty {
            TOKEN_TYPE_CONTROL | TOKEN_TYPE_UNKNOWN => true,
            TOKEN_TYPE_USER_DEFINED => false,
            _ => continue,
        };
        let content = tokens
            .get(id)
            .ok_or_else(|| bad(format!("token_type has more entries than tokens ({id})")))?;
        added_tokens.push(json!({
            "id": id,
            "content": content,
            "single_word": false,
            "lstrip": false,
            "rstrip": false,
            "normalized": false,
            "special": special,
        }));
    }

    let mut pretokenizers: Vec<Value> = pre
        .regexes
        .iter()
        .map(|r| {
            json!({
                "type": "Split",
                "pattern": { "Regex": r },
                "behavior": "Isolated",
                "invert": false,
            })
        })
        .collect();
    // The regexes above already split; ByteLevel only maps bytes to its alphabet.
    pretokenizers.push(json!({
        "type": "ByteLevel",
        "add_prefix_space": false,
        "trim_offsets": false,
        "use_regex": false,
    }));

    // BOS/EOS as llama.cpp adds them with add_special = true.
    let add_bos = flag("tokenizer.ggml.add_bos_token").unwrap_or(pre.add_bos_default);
    let add_eos = flag("tokenizer.ggml.add_eos_token").unwrap_or(false);
    let affix = |key: &str, wanted: bool| -> Result<Option<(&str, u64)>, TokenizerSynthError> {
        if !wanted {
            return Ok(None);
        }
        let id = token_id(key).ok_or_else(|| bad(format!("{key} is needed but missing")))?;
        let text = tokens
            .get(id as usize)
            .ok_or_else(|| bad(format!("{key} = {id} is out of range")))?;
        Ok(Some((text.as_str(), id)))
    };
    let bos = affix("tokenizer.ggml.bos_token_id", add_bos)?;
    let eos = affix("tokenizer.ggml.eos_token_id", add_eos)?;
    let post_processor = template_processing(bos, eos);

    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens,
        "normalizer": null,
        "pre_tokenizer": { "type": "Sequence", "pretokenizers": pretokenizers },
        "post_processor": post_processor,
        "decoder": {
            "type": "ByteLevel",
            "add_prefix_space": false,
            "trim_offsets": false,
            "use_regex": false,
        },
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": pre.ignore_merges,
            "vocab": vocab,
            "merges": merges,
        },
    });
    serde_json::to_string(&tokenizer).map_err(|e| bad(format!("JSON encoding failed: {e}")))
}

/// A `TemplateProcessing` that wraps each sequence in `bos`/`eos` (text, id), or `null`
/// if neither is added.
fn template_processing(bos: Option<(&str, u64)>, eos: Option<(&str, u64)>) -> Value {
    if bos.is_none() && eos.is_none() {
        return Value::Null;
    }
    let special = |(t, _): (&str, u64)| json!({ "SpecialToken": { "id": t, "type_id": 0 } });
    let wrap = |s: &str, type_id: u32| {
        let mut v: Vec<Value> = bos.map(special).into_iter().collect();
        v.push(json!({ "Sequence": { "id": s, "type_id": type_id } }));
        v.extend(eos.map(special));
        v
    };
    let single = wrap("A", 0);
    let mut pair = single.clone();
    pair.extend(wrap("B", 1));
    let mut special_tokens = Map::new();
    for (t, id) in bos.into_iter().chain(eos) {
        special_tokens.insert(t.to_owned(), json!({ "id": t, "ids": [id], "tokens": [t] }));
    }
    json!({
        "type": "TemplateProcessing",
        "single": single,
        "pair": pair,
        "special_tokens": special_tokens,
    })
}
