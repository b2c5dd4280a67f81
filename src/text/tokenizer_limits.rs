//! Load-time checks that keep an untrusted tokenizer.json bounded.
//!
//! The `tokenizers` crate runs whatever pipeline the file describes. Left alone, a
//! `Replace` normalizer whose content is a megabyte long turns a 5,000-character prompt
//! into a 10 GB allocation, a `Split` regex with nested quantifiers backtracks for
//! hours, and a `Strip` decoder with `stop > 0` panics on a short token. So before the
//! JSON reaches `tokenizers`, [`check`] walks it (as a `serde_json::Value`) and refuses,
//! naming the component:
//! - JSON nested deeper than [`MAX_JSON_DEPTH`], `Sequence`s nested deeper than
//!   [`MAX_SEQUENCE_DEPTH`] or longer than [`MAX_SEQUENCE_LEN`], components without a
//!   `type` or of a type this version does not know;
//! - any normalizer, pre-tokenizer or decoder step whose output can outgrow its input
//!   by more than a fixed factor: each step gets a worst-case growth factor `F`
//!   (output bytes ≤ F × input bytes for a non-empty piece), the chain's factor is the
//!   product, and normalizers × pre-tokenizers, and the decoders, must each stay
//!   within [`MAX_EXPANSION`]; strings a step inserts are at most
//!   [`MAX_INSERT_BYTES`];
//! - regexes (`Split`, `Replace`) longer than [`MAX_PATTERN_BYTES`], with back
//!   references, conditionals, a group repeated more than once that itself holds a
//!   quantifier or an alternation (`(a+)+`, `(a|aa)*`: the exponential-backtracking
//!   shapes), counted repetitions above [`MAX_REPEAT`], or groups nested deeper than
//!   [`MAX_REGEX_NESTING`], or a top-level alternative with look-around and more than
//!   one variable quantifier (`a*a*(?=c)`: k^q backtracking per position). What
//!   remains is bounded by fancy-regex's backtrack limit (1,000,000 backtracks per
//!   search; `tokenizers` 0.23.2 builds every regex with `fancy_regex::Regex::new`,
//!   i.e. the default) and is, like the `regex` engine's own match iteration, at
//!   worst quadratic in the length of the piece a regex runs on (`a*(?=c)|.` or
//!   `a*c|.` over a run of `a`s: each search scans the run). A search that exceeds
//!   the limit ends the piece's splitting early (`tokenizers` drops the error): the
//!   tokens are then wrong, but no panic or hang follows;
//! - `Precompiled` charsmaps larger than [`MAX_CHARSMAP_BYTES`], whose trie can index
//!   outside itself (a panic in `spm_precompiled` at run time), or whose replacements
//!   grow their key more than [`MAX_EXPANSION`]-fold;
//! - more than [`MAX_ADDED_TOKENS`] added tokens, one longer than
//!   [`MAX_ADDED_TOKEN_BYTES`], vocabulary entries longer than [`MAX_TOKEN_BYTES`],
//!   ids at or above [`MAX_VOCAB`], model affixes longer than [`MAX_INSERT_BYTES`],
//!   WordPiece words above [`MAX_WORDPIECE_CHARS`] characters (its cost is cubic in it);
//! - `Strip` decoders with `stop > 0` and `FixedLength` with `length = 0` (both panic in
//!   `tokenizers` 0.23.2).
//!
//! The post-processor, padding and truncation are dropped after loading (see
//! `tokenizer.rs`): they are never used, so they need no checks.

use serde_json::{Map, Value};

/// Deepest JSON nesting accepted (real tokenizer.json files: 6). serde_json itself
/// stops at 128.
pub const MAX_JSON_DEPTH: usize = 32;
/// Deepest `Sequence` inside `Sequence` (real files: 1).
pub const MAX_SEQUENCE_DEPTH: usize = 4;
/// Most steps in one `Sequence`.
pub const MAX_SEQUENCE_LEN: usize = 32;
/// Largest worst-case growth factor of the normalizer × pre-tokenizer chain, and of
/// the decoder chain. Qwen3's is 6 (NFC 3 × ByteLevel 2); a Llama-2 style
/// `Prepend("▁")` + `Replace(" ", "▁")` is 12; a T5 `Precompiled` + `Metaspace` about 66.
pub const MAX_EXPANSION: u64 = 128;
/// Longest string a step may insert (`Replace` content, `Prepend`, model affixes).
pub const MAX_INSERT_BYTES: usize = 64;
/// Longest `Split`/`Replace` pattern (Qwen3's regex: 118 bytes).
pub const MAX_PATTERN_BYTES: usize = 1024;
/// Largest `{n}` / `{n,m}` count in a regex.
pub const MAX_REPEAT: u64 = 256;
/// Deepest group nesting in a regex.
pub const MAX_REGEX_NESTING: usize = 16;
/// Largest `Precompiled` charsmap (decoded bytes; T5's is about 240 KB).
pub const MAX_CHARSMAP_BYTES: usize = 2 << 20;
/// Most added tokens (Qwen3: 26; Gemma 3: about 6,000).
pub const MAX_ADDED_TOKENS: usize = 65_536;
/// Longest added token (Qwen3: 20 bytes).
pub const MAX_ADDED_TOKEN_BYTES: usize = 256;
/// Longest vocabulary entry (Qwen3: 256 bytes).
pub const MAX_TOKEN_BYTES: usize = 1024;
/// Token ids must be below this (Gemma 3: 262,144).
pub const MAX_VOCAB: u64 = 1 << 22;
/// Largest WordPiece `max_input_chars_per_word` (BERT: 100).
pub const MAX_WORDPIECE_CHARS: u64 = 128;

/// Worst-case growth factors of the two chains, as [`check`] computed them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Growth {
    /// Normalizers × pre-tokenizers: a non-empty text of `n` bytes becomes at most
    /// `encode * n` bytes of pre-tokenized pieces.
    pub encode: u64,
    /// Decoders: token strings totalling `n` bytes decode to at most `decode * n` bytes.
    pub decode: u64,
}

/// Inspect a tokenizer.json before `tokenizers` loads it. The error names the part
/// of the file and the limit it breaks.
pub fn check(root: &Value) -> Result<Growth, String> {
    check_depth(root)?;
    let obj = root
        .as_object()
        .ok_or("the top level is not a JSON object")?;
    let norm = component(obj.get("normalizer"), Kind::Normalizer, 0)?;
    let pre = component(obj.get("pre_tokenizer"), Kind::PreTokenizer, 0)?;
    let dec = component(obj.get("decoder"), Kind::Decoder, 0)?;
    let encode = norm.saturating_mul(pre);
    if encode > MAX_EXPANSION {
        return Err(format!(
            "normalizer × pre_tokenizer can grow a text {encode}-fold (limit {MAX_EXPANSION})"
        ));
    }
    if dec > MAX_EXPANSION {
        return Err(format!(
            "decoder can grow the tokens' text {dec}-fold (limit {MAX_EXPANSION})"
        ));
    }
    if let Some(added) = obj.get("added_tokens") {
        check_added_tokens(added)?;
    }
    if let Some(model) = obj.get("model") {
        check_model(model)?;
    }
    Ok(Growth {
        encode,
        decode: dec,
    })
}

/// Iterative, so a deep document cannot overflow the stack here either.
fn check_depth(root: &Value) -> Result<(), String> {
    let mut stack = vec![(root, 1usize)];
    while let Some((v, d)) = stack.pop() {
        if d > MAX_JSON_DEPTH {
            return Err(format!("JSON nested deeper than {MAX_JSON_DEPTH} levels"));
        }
        match v {
            Value::Array(a) => stack.extend(a.iter().map(|x| (x, d + 1))),
            Value::Object(o) => stack.extend(o.values().map(|x| (x, d + 1))),
            _ => {}
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Normalizer,
    PreTokenizer,
    Decoder,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Normalizer => "normalizer",
            Kind::PreTokenizer => "pre_tokenizer",
            Kind::Decoder => "decoder",
        }
    }

    fn sequence_field(self) -> &'static str {
        match self {
            Kind::Normalizer => "normalizers",
            Kind::PreTokenizer => "pretokenizers",
            Kind::Decoder => "decoders",
        }
    }
}

/// The worst-case growth factor of one component (1 when absent).
fn component(v: Option<&Value>, kind: Kind, depth: usize) -> Result<u64, String> {
    let v = match v {
        None | Some(Value::Null) => return Ok(1),
        Some(v) => v,
    };
    let k = kind.name();
    let o = v
        .as_object()
        .ok_or_else(|| format!("{k} is not an object"))?;
    let ty = o
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{k} without a \"type\""))?;
    let err = |m: String| format!("{k} {ty}: {m}");
    let f = match (kind, ty) {
        (_, "Sequence") => {
            if depth >= MAX_SEQUENCE_DEPTH {
                return Err(err(format!(
                    "Sequence nested deeper than {MAX_SEQUENCE_DEPTH} levels"
                )));
            }
            let steps = o
                .get(kind.sequence_field())
                .and_then(Value::as_array)
                .ok_or_else(|| err(format!("no \"{}\" array", kind.sequence_field())))?;
            if steps.len() > MAX_SEQUENCE_LEN {
                return Err(err(format!(
                    "{} steps (limit {MAX_SEQUENCE_LEN})",
                    steps.len()
                )));
            }
            let mut f = 1u64;
            for s in steps {
                f = f.saturating_mul(component(Some(s), kind, depth + 1)?);
                if f > MAX_EXPANSION {
                    return Err(err(format!(
                        "its steps grow a text more than {MAX_EXPANSION}-fold"
                    )));
                }
            }
            f
        }
        (Kind::Normalizer | Kind::Decoder, "Replace") => replace(o).map_err(err)?,
        // Per-character maxima in UTF-8 bytes (tests/tokenizer_bounds.rs measures them
        // over every code point): NFD/NFC 3 (U+0390), NFKD/NFKC 11 (U+FDFA),
        // lowercase 1.5 (U+0130); Bert adds spaces around CJK (5/3), strips accents
        // after NFD and lowercases.
        (Kind::Normalizer, "NFC" | "NFD") => 3,
        (Kind::Normalizer, "NFKC" | "NFKD") => 11,
        (Kind::Normalizer, "Lowercase") => 2,
        (Kind::Normalizer, "Bert" | "BertNormalizer") => 8,
        (Kind::Normalizer, "Strip" | "StripAccents" | "Nmt") => 1,
        // Each byte becomes one character of 1 or 2 bytes.
        (Kind::Normalizer, "ByteLevel") => 2,
        (Kind::Normalizer, "Prepend") => {
            let p = str_field(o, "prepend").map_err(err)?;
            insert_len(p).map_err(err)? as u64 + 1
        }
        (Kind::Normalizer, "Precompiled") => precompiled(o).map_err(err)?,
        // Byte-level: 2 per byte, and a prefix space on every piece.
        (Kind::PreTokenizer, "ByteLevel") => {
            if o.get("add_prefix_space").and_then(Value::as_bool) == Some(true) {
                4
            } else {
                2
            }
        }
        // A space becomes the replacement (≤ 4 bytes) and each piece may get one
        // in front: 2 × 4.
        (Kind::PreTokenizer, "Metaspace") => 8,
        (Kind::PreTokenizer, "Split") => {
            pattern(o).map_err(err)?;
            1
        }
        (Kind::PreTokenizer, "FixedLength") => {
            if o.get("length").and_then(Value::as_u64) == Some(0) {
                return Err(err("length 0 (tokenizers panics on it)".into()));
            }
            1
        }
        (
            Kind::PreTokenizer,
            "BertPreTokenizer" | "Whitespace" | "WhitespaceSplit" | "Punctuation" | "Digits"
            | "UnicodeScripts" | "Delimiter" | "CharDelimiterSplit",
        ) => 1,
        (Kind::Decoder, "Strip") => {
            if o.get("stop").and_then(Value::as_u64).unwrap_or(0) > 0 {
                return Err(err(
                    "stop > 0 (tokenizers 0.23.2 panics when it exceeds a token)".into(),
                ));
            }
            1
        }
        // `str::replace` of an empty pattern inserts between all characters.
        (Kind::Decoder, "BPEDecoder") => empty_or(o, "suffix", 3),
        (Kind::Decoder, "CTC") => empty_or(o, "word_delimiter_token", 3),
        // A space before each token.
        (Kind::Decoder, "WordPiece") => 2,
        // Invalid bytes (2-byte characters / 6-byte `<0xNN>`) become U+FFFD (3 bytes).
        (Kind::Decoder, "ByteLevel" | "ByteFallback") => 2,
        (Kind::Decoder, "Metaspace" | "Fuse") => 1,
        _ => return Err(format!("{k} of unknown type {ty:?}")),
    };
    Ok(f)
}

fn str_field<'a>(o: &'a Map<String, Value>, key: &str) -> Result<&'a str, String> {
    o.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("\"{key}\" is not a string"))
}

fn insert_len(s: &str) -> Result<usize, String> {
    if s.len() > MAX_INSERT_BYTES {
        Err(format!(
            "inserts {} bytes (limit {MAX_INSERT_BYTES})",
            s.len()
        ))
    } else {
        Ok(s.len())
    }
}

fn empty_or(o: &Map<String, Value>, key: &str, f: u64) -> u64 {
    match o.get(key).and_then(Value::as_str) {
        Some("") => f,
        _ => 1,
    }
}

/// `Replace`: a literal pattern of `p` bytes replaced by `c` bytes grows a text at most
/// `max(1, ceil(c / p))`-fold; a regex may match empty at each of the `n + 1`
/// positions, so `n + (n + 1) c ≤ (1 + 2c) n`.
fn replace(o: &Map<String, Value>) -> Result<u64, String> {
    let c = insert_len(str_field(o, "content")?)? as u64;
    match pattern(o)? {
        Pattern::Literal(p) if p > 0 => Ok(c.div_ceil(p as u64).max(1)),
        _ => Ok(1 + 2 * c),
    }
}

enum Pattern {
    Literal(usize),
    Regex,
}

/// The `pattern` of a `Split` or `Replace`: `{"String": ...}` or `{"Regex": ...}`.
fn pattern(o: &Map<String, Value>) -> Result<Pattern, String> {
    let p = o
        .get("pattern")
        .and_then(Value::as_object)
        .ok_or("\"pattern\" is not an object")?;
    if let Some(s) = p.get("String").and_then(Value::as_str) {
        if s.len() > MAX_PATTERN_BYTES {
            return Err(format!(
                "pattern of {} bytes (limit {MAX_PATTERN_BYTES})",
                s.len()
            ));
        }
        Ok(Pattern::Literal(s.len()))
    } else if let Some(r) = p.get("Regex").and_then(Value::as_str) {
        check_regex(r).map_err(|e| format!("regex {}: {e}", short(r)))?;
        Ok(Pattern::Regex)
    } else {
        Err("\"pattern\" is neither {\"String\": ..} nor {\"Regex\": ..}".into())
    }
}

fn short(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    format!("{out:?}")
}

/// The syntactic regex rules of the module doc. A conservative scan of the
/// fancy-regex syntax: it needs to understand escapes, classes, groups, alternation
/// and quantifiers; everything else is a plain atom (the regex compiler reports
/// malformed patterns).
pub fn check_regex(re: &str) -> Result<(), String> {
    if re.len() > MAX_PATTERN_BYTES {
        return Err(format!(
            "{} bytes long (limit {MAX_PATTERN_BYTES})",
            re.len()
        ));
    }
    let b = re.as_bytes();
    // Per open group: does it hold a quantifier or an alternation?
    let mut groups: Vec<bool> = vec![false];
    // What a quantifier here would repeat: None (nothing), Some(false) a plain
    // atom or a group without quantifiers/alternation, Some(true) a group with them.
    let mut last: Option<bool> = None;
    // Per top-level alternative: variable quantifiers, and whether it has look-around.
    let (mut quants, mut look) = (0usize, false);
    let branch = |quants: usize, look: bool| {
        if look && quants > 1 {
            Err("an alternative with look-around holds more than one variable quantifier (polynomial backtracking)".to_string())
        } else {
            Ok(())
        }
    };
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                i += 1;
                let e = *b.get(i).ok_or("ends in a backslash")?;
                match e {
                    b'1'..=b'9' | b'k' | b'g' => {
                        return Err("back references are not allowed".into())
                    }
                    // \p{..}, \x{..}: skip the braces.
                    b'p' | b'P' | b'x' if b.get(i + 1) == Some(&b'{') => {
                        i = close(b, i + 1, b'}')?;
                    }
                    _ => {}
                }
                last = Some(false);
                i += 1;
            }
            b'[' => {
                i = class_end(b, i)?;
                last = Some(false);
            }
            b'(' => {
                // Past the group's opening: `(`, `(?:`, `(?=`, `(?<!`, `(?P<name>`, `(?i:`...
                let mut j = i + 1;
                if b.get(j) == Some(&b'?') {
                    j += 1;
                    match (b.get(j), b.get(j + 1)) {
                        (Some(b'('), _) => return Err("conditionals are not allowed".into()),
                        (Some(b'P'), Some(b'=' | b'>')) => {
                            return Err("back references are not allowed".into())
                        }
                        (Some(b'=' | b'!'), _) => {
                            look = true;
                            j += 1
                        }
                        (Some(b'>' | b':'), _) => j += 1,
                        (Some(b'<'), Some(b'=' | b'!')) => {
                            look = true;
                            j += 2
                        }
                        (Some(b'<'), _) => j = close(b, j, b'>')? + 1,
                        (Some(b'P'), Some(b'<')) => j = close(b, j, b'>')? + 1,
                        _ => {
                            while j < b.len() && (b[j].is_ascii_alphabetic() || b[j] == b'-') {
                                j += 1;
                            }
                            match b.get(j) {
                                // A flag setting `(?i)` is not a group.
                                Some(b')') => {
                                    i = j + 1;
                                    last = None;
                                    continue;
                                }
                                Some(b':') => j += 1,
                                _ => return Err("unknown group syntax".into()),
                            }
                        }
                    }
                }
                groups.push(false);
                if groups.len() > MAX_REGEX_NESTING + 1 {
                    return Err(format!(
                        "groups nested deeper than {MAX_REGEX_NESTING} levels"
                    ));
                }
                last = None;
                i = j;
            }
            b')' => {
                if groups.len() == 1 {
                    return Err("unbalanced ')'".into());
                }
                let inner = groups.pop().unwrap_or(false);
                if let Some(top) = groups.last_mut() {
                    *top |= inner;
                }
                last = Some(inner);
                i += 1;
            }
            b'|' => {
                if groups.len() == 1 {
                    branch(quants, look)?;
                    (quants, look) = (0, false);
                }
                if let Some(top) = groups.last_mut() {
                    *top = true;
                }
                last = None;
                i += 1;
            }
            b'*' | b'+' | b'?' | b'{' => {
                let (min, max, next) = match b[i] {
                    b'*' => (0, None, i + 1),
                    b'+' => (1, None, i + 1),
                    b'?' => (0, Some(1), i + 1),
                    _ => match counted(b, i)? {
                        Some(q) => q,
                        None => {
                            // A literal '{'.
                            last = Some(false);
                            i += 1;
                            continue;
                        }
                    },
                };
                if last == Some(true) && max.is_none_or(|m| m > 1) {
                    return Err(
                        "a repeated group holds a quantifier or an alternation (exponential backtracking)"
                            .into(),
                    );
                }
                if max != Some(min) {
                    quants += 1;
                    if let Some(top) = groups.last_mut() {
                        *top = true;
                    }
                }
                i = next;
                // Lazy `?` or possessive `+` suffix.
                if matches!(b.get(i), Some(b'?' | b'+')) {
                    i += 1;
                }
                last = None;
            }
            _ => {
                last = Some(false);
                i += 1;
            }
        }
    }
    if groups.len() != 1 {
        return Err("unbalanced '('".into());
    }
    branch(quants, look)
}

/// Index of the `end` byte closing what starts at `open`.
fn close(b: &[u8], open: usize, end: u8) -> Result<usize, String> {
    b[open..]
        .iter()
        .position(|&c| c == end)
        .map(|p| open + p)
        .ok_or_else(|| format!("missing '{}'", end as char))
}

/// The index just past the character class starting at `b[start] == '['`
/// (nested classes, escapes, a leading `]` or `^]`).
fn class_end(b: &[u8], start: usize) -> Result<usize, String> {
    let mut i = start + 1;
    let mut depth = 1;
    if b.get(i) == Some(&b'^') {
        i += 1;
    }
    if b.get(i) == Some(&b']') {
        i += 1;
    }
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'[' => {
                depth += 1;
                i += 1;
                if b.get(i) == Some(&b'^') {
                    i += 1;
                }
                if b.get(i) == Some(&b']') {
                    i += 1;
                }
            }
            b']' => {
                depth -= 1;
                i += 1;
                if depth == 0 {
                    return Ok(i);
                }
            }
            _ => i += 1,
        }
    }
    Err("unterminated character class".into())
}

/// `{n}`, `{n,}`, `{n,m}` at `b[i]`: (min, max, index after `}`), or `None` when the
/// brace is a literal.
#[allow(clippy::type_complexity)]
fn counted(b: &[u8], i: usize) -> Result<Option<(u64, Option<u64>, usize)>, String> {
    let Ok(end) = close(b, i, b'}') else {
        return Ok(None);
    };
    let body = std::str::from_utf8(&b[i + 1..end]).map_err(|e| e.to_string())?;
    let num = |s: &str| -> Result<Option<u64>, String> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return Ok(None);
        }
        match s.parse::<u64>() {
            Ok(n) if n <= MAX_REPEAT => Ok(Some(n)),
            _ => Err(format!("repetition count {s} (limit {MAX_REPEAT})")),
        }
    };
    let q = match body.split_once(',') {
        None => num(body)?.map(|n| (n, Some(n))),
        Some((lo, hi)) if hi.trim().is_empty() => num(lo)?.map(|n| (n, None)),
        Some((lo, hi)) => match (num(lo)?, num(hi)?) {
            (Some(a), Some(b)) => Some((a, Some(b))),
            _ => None,
        },
    };
    Ok(q.map(|(lo, hi)| (lo, hi, end + 1)))
}

fn check_added_tokens(v: &Value) -> Result<(), String> {
    let a = v.as_array().ok_or("added_tokens is not an array")?;
    if a.len() > MAX_ADDED_TOKENS {
        return Err(format!(
            "{} added tokens (limit {MAX_ADDED_TOKENS})",
            a.len()
        ));
    }
    for t in a {
        let content = t.get("content").and_then(Value::as_str).unwrap_or("");
        if content.len() > MAX_ADDED_TOKEN_BYTES {
            return Err(format!(
                "added token {} is {} bytes long (limit {MAX_ADDED_TOKEN_BYTES})",
                short(content),
                content.len()
            ));
        }
        if let Some(id) = t.get("id").and_then(Value::as_u64) {
            if id >= MAX_VOCAB {
                return Err(format!(
                    "added token {} has id {id} (limit {MAX_VOCAB})",
                    short(content)
                ));
            }
        }
    }
    Ok(())
}

fn check_model(v: &Value) -> Result<(), String> {
    let o = v.as_object().ok_or("model is not an object")?;
    let ty = o.get("type").and_then(Value::as_str).unwrap_or("?");
    let err = |m: String| format!("model {ty}: {m}");
    for key in [
        "continuing_subword_prefix",
        "end_of_word_suffix",
        "unk_token",
    ] {
        if let Some(s) = o.get(key).and_then(Value::as_str) {
            if s.len() > MAX_INSERT_BYTES {
                return Err(err(format!(
                    "{key} is {} bytes long (limit {MAX_INSERT_BYTES})",
                    s.len()
                )));
            }
        }
    }
    if let Some(n) = o.get("max_input_chars_per_word").and_then(Value::as_u64) {
        if n > MAX_WORDPIECE_CHARS {
            return Err(err(format!(
                "max_input_chars_per_word {n} (limit {MAX_WORDPIECE_CHARS})"
            )));
        }
    }
    let token = |t: &str| -> Result<(), String> {
        if t.len() > MAX_TOKEN_BYTES {
            Err(err(format!(
                "vocabulary entry {} is {} bytes long (limit {MAX_TOKEN_BYTES})",
                short(t),
                t.len()
            )))
        } else {
            Ok(())
        }
    };
    match o.get("vocab") {
        // BPE, WordPiece, WordLevel: {"token": id}.
        Some(Value::Object(m)) => {
            if m.len() as u64 > MAX_VOCAB {
                return Err(err(format!("{} tokens (limit {MAX_VOCAB})", m.len())));
            }
            for (t, id) in m {
                token(t)?;
                if id.as_u64().is_some_and(|id| id >= MAX_VOCAB) {
                    return Err(err(format!("token id {id} (limit {MAX_VOCAB})")));
                }
            }
        }
        // Unigram: [["piece", score]].
        Some(Value::Array(a)) => {
            if a.len() as u64 > MAX_VOCAB {
                return Err(err(format!("{} tokens (limit {MAX_VOCAB})", a.len())));
            }
            for e in a {
                if let Some(t) = e.get(0).and_then(Value::as_str) {
                    token(t)?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// `Precompiled` (SentencePiece's normalization rules): validate the charsmap the
/// way `spm_precompiled` 0.1.4 reads it, so that no input can make it index outside
/// its trie or its string table, and return the largest growth of a rule:
/// replacement bytes over the bytes of the shortest key that reaches it.
///
/// Layout: u32 LE trie size in bytes, the trie (darts-clone double array of u32
/// units), then the replacement strings, each ending in NUL.
fn precompiled(o: &Map<String, Value>) -> Result<u64, String> {
    let b64 = str_field(o, "precompiled_charsmap")?;
    if b64.len() / 4 * 3 > MAX_CHARSMAP_BYTES {
        return Err(format!(
            "precompiled_charsmap over {MAX_CHARSMAP_BYTES} bytes"
        ));
    }
    let map = base64_decode(b64).ok_or("precompiled_charsmap is not base64")?;
    if map.len() < 4 {
        return Err("precompiled_charsmap too short".into());
    }
    let trie_bytes = u32::from_le_bytes([map[0], map[1], map[2], map[3]]) as usize;
    let units = trie_bytes / 4;
    let rest = &map[4..];
    if rest.len() < units * 4 {
        return Err("precompiled_charsmap trie runs past its end".into());
    }
    let trie: Vec<u32> = rest[..units * 4]
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let normalized = std::str::from_utf8(&rest[units * 4..])
        .map_err(|_| "precompiled_charsmap replacements are not UTF-8")?;
    let bad = || "precompiled_charsmap trie indexes outside itself".to_string();
    let offset = |u: u32| ((u >> 10) as usize) << ((u & (1 << 9)) >> 6);
    let root = offset(*trie.first().ok_or_else(bad)?);
    // Breadth-first over node positions: each is visited once, at its shortest key.
    let mut seen = vec![false; trie.len()];
    let mut level = vec![root];
    let mut growth = 1u64;
    let mut key_len = 0u64;
    while !level.is_empty() {
        key_len += 1;
        let mut next = Vec::new();
        for pos in level {
            // Lookup reads `trie[pos ^ c]` for any byte c of the input.
            if (pos | 0xff) >= trie.len() {
                return Err(bad());
            }
            for c in 1..=255usize {
                let unit = trie[pos ^ c];
                if (unit & ((1 << 31) | 0xff)) as usize != c {
                    continue;
                }
                let child = pos ^ c ^ offset(unit);
                if unit >> 8 & 1 == 1 {
                    let value = *trie.get(child).ok_or_else(bad)?;
                    let start = (value & ((1 << 31) - 1)) as usize;
                    if start > normalized.len() || !normalized.is_char_boundary(start) {
                        return Err("precompiled_charsmap points outside its strings".into());
                    }
                    let len = normalized[start..]
                        .find('\0')
                        .unwrap_or(normalized.len() - start);
                    growth = growth.max((len as u64).div_ceil(key_len));
                    if growth > MAX_EXPANSION {
                        return Err(format!(
                            "a precompiled_charsmap rule grows its key {growth}-fold"
                        ));
                    }
                }
                if child < seen.len() && !seen[child] {
                    seen[child] = true;
                    next.push(child);
                } else if child >= seen.len() {
                    // A node outside the trie: its children would be read out of bounds.
                    return Err(bad());
                }
            }
        }
        level = next;
    }
    Ok(growth)
}

/// Standard base64 with optional padding (what `spm_precompiled` writes).
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() / 4 * 3 + 3);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}
