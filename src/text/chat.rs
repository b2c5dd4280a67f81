//! The chat template: the file's Jinja `tokenizer.chat_template`, rendered with
//! `minijinja` as Hugging Face's `apply_chat_template` renders it.
//!
//! What the template sees, as in `transformers`:
//! - the environment has `trim_blocks` and `lstrip_blocks` on, drops one trailing
//!   newline of the template, and has loop controls (`break`, `continue`);
//! - variables `messages` (each with `role` and `content`), `add_generation_prompt`,
//!   `bos_token` and `eos_token` (texts of the file's BOS/EOS ids, when it has
//!   them), `tools` and `documents` (none), and `enable_thinking` only when the
//!   caller gives it (Qwen3 tests `enable_thinking is defined`);
//! - `raise_exception(msg)` fails the render with `msg`; `tojson` writes JSON the
//!   way Python's `json.dumps(x, ensure_ascii=False)` does (`{"a": 1, "b": [1, 2]}`,
//!   options `indent`, `sort_keys`, `ensure_ascii`);
//! - Python's string, dict and list methods (`.strip()`, `.startswith()`,
//!   `.split()`, `.items()`, ...) through minijinja-contrib's pycompat layer.
//!
//! Not provided: `strftime_now` and the `{% generation %}` tag.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind};
use serde::{Deserialize, Serialize};

use super::template_sandbox;
use super::{metadata_error, Result, TextError};

/// [`template_sandbox::on_render_thread`] with its errors as `TextError`s.
fn on_render_thread<T: Send>(f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    template_sandbox::on_render_thread(f).map_err(TextError::TemplateRender)?
}
use crate::format::{keys, GgufFile};

const NAME: &str = "chat_template";

/// Most template instructions one render may execute. The template comes from
/// the model file, which is untrusted: without a budget, nested loops
/// (`range()` allows 100,000 items each) run for hours. Qwen3's template spends
/// about 70 per message, so this allows ~140,000 messages, far more than any
/// context window holds; a hostile template stops within about a second.
pub const MAX_FUEL: u64 = 10_000_000;
/// Most template recursion (macros, nested blocks): minijinja's own default cap.
pub const MAX_RECURSION: usize = 500;
/// Longest rendered prompt, in bytes (a 1 MiB string repeated in a loop would
/// otherwise fill memory): far more text than any context window holds.
pub const MAX_OUTPUT: usize = 64 << 20;

/// One turn of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source", &self.source())
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

impl ChatTemplate {
    /// The file's chat template, or `None` when it has no
    /// `tokenizer.chat_template`. `bos_token`/`eos_token` are the texts of the
    /// file's BOS/EOS ids, looked up in `tokenizer.ggml.tokens` or else among
    /// the added tokens of the embedded tokenizer.json.
    pub fn from_gguf(file: &GgufFile) -> Result<Option<ChatTemplate>> {
        let Some(source) = file.get(keys::CHAT_TEMPLATE) else {
            return Ok(None);
        };
        let source = source
            .as_str()
            .ok_or_else(|| metadata_error(keys::CHAT_TEMPLATE, "is not a string"))?;
        let bos = file.get_u64(keys::BOS_ID);
        let eos = file.get_u64(keys::EOS_ID);
        let (bos_token, eos_token) = special_texts(file, bos, eos);
        let template = ChatTemplate::new(source, bos_token, eos_token)?;
        template.check_renders()?;
        Ok(Some(template))
    }

    /// A template from its source and the texts `bos_token`/`eos_token` stand for.
    /// The source is checked by the sandbox's static scan
    /// ([`template_sandbox::check_source`]) and compiled on the render thread.
    pub fn new(
        source: &str,
        bos_token: Option<String>,
        eos_token: Option<String>,
    ) -> Result<ChatTemplate> {
        let env = on_render_thread(|| {
            let mut env = Environment::new();
            env.set_trim_blocks(true);
            env.set_lstrip_blocks(true);
            env.set_keep_trailing_newline(false);
            env.set_fuel(Some(MAX_FUEL));
            env.set_recursion_limit(MAX_RECURSION);
            env.add_function("raise_exception", raise_exception);
            template_sandbox::install(&mut env, vec![("tojson", Value::from_function(tojson))]);
            env.add_template_owned(NAME, source.to_string())
                .map_err(|e| TextError::TemplateSyntax(describe(&e)))?;
            let checked =
                template_sandbox::check_source(source).map_err(TextError::TemplateSyntax)?;
            if checked != source {
                env.add_template_owned(NAME, checked)
                    .map_err(|e| TextError::TemplateSyntax(describe(&e)))?;
            }
            Ok(env)
        })?;
        Ok(ChatTemplate {
            env,
            source: source.to_string(),
            bos_token,
            eos_token,
        })
    }

    /// Renders a typical conversation (system, user, assistant, user, with
    /// the generation prompt; without the system turn if that fails, as for
    /// templates that refuse system messages): a template that cannot is
    /// refused when the model loads rather than at the first prompt.
    pub fn check_renders(&self) -> Result<()> {
        let turns = [
            ChatMessage::new("system", "You are a helpful assistant."),
            ChatMessage::new("user", "Hello!"),
            ChatMessage::new("assistant", "Hi! How can I help?"),
            ChatMessage::new("user", "What is 2+2?"),
        ];
        match self.render(&turns, true, None) {
            Ok(_) => Ok(()),
            Err(first) => match self.render(&turns[1..], true, None) {
                Ok(_) => Ok(()),
                Err(_) => Err(TextError::TemplateRender(format!(
                    "it fails on a typical conversation (system, user, assistant, user): {}",
                    match first {
                        TextError::TemplateRender(e) => e,
                        e => e.to_string(),
                    }
                ))),
            },
        }
    }

    /// The template's Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The prompt text for `messages`. With `add_generation_prompt` it ends
    /// where the assistant's reply begins. `enable_thinking` is passed to the
    /// template only when `Some` (Qwen3: `Some(false)` closes an empty
    /// `<think></think>` block so the model answers directly).
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        enable_thinking: Option<bool>,
    ) -> Result<String> {
        let mut ctx: BTreeMap<&str, Value> = BTreeMap::new();
        ctx.insert("messages", Value::from_serialize(messages));
        ctx.insert("add_generation_prompt", Value::from(add_generation_prompt));
        ctx.insert("tools", Value::from(()));
        ctx.insert("documents", Value::from(()));
        if let Some(b) = &self.bos_token {
            ctx.insert("bos_token", Value::from(b.as_str()));
        }
        if let Some(e) = &self.eos_token {
            ctx.insert("eos_token", Value::from(e.as_str()));
        }
        if let Some(t) = enable_thinking {
            ctx.insert("enable_thinking", Value::from(t));
        }
        on_render_thread(|| {
            let tmpl = self
                .env
                .get_template(NAME)
                .map_err(|e| TextError::TemplateRender(describe(&e)))?;
            let mut out = CappedOutput {
                buf: Vec::new(),
                cap: MAX_OUTPUT,
            };
            tmpl.render_captured_to(ctx, &mut out)
                .map_err(|e| TextError::TemplateRender(describe(&e)))?;
            // The template writes whole UTF-8 strings, so the bytes are UTF-8.
            String::from_utf8(out.buf)
                .map_err(|e| TextError::TemplateRender(format!("rendered text is not UTF-8: {e}")))
        })
    }
}

/// The render's output, refusing to grow past `cap` bytes.
struct CappedOutput {
    buf: Vec<u8>,
    cap: usize,
}

impl std::io::Write for CappedOutput {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + b.len() > self.cap {
            return Err(std::io::Error::other(format!(
                "the rendered prompt exceeds {} MiB",
                self.cap >> 20
            )));
        }
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An error with its causes and, when minijinja has it, the template location.
fn describe(e: &Error) -> String {
    let mut s = e.to_string();
    if let Some(line) = e.line() {
        if !s.contains("line") {
            let _ = write!(s, " (line {line})");
        }
    }
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        let _ = write!(s, ": {inner}");
        src = inner.source();
    }
    s
}

fn raise_exception(msg: String) -> std::result::Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

/// The texts of the BOS and EOS ids.
fn special_texts(
    file: &GgufFile,
    bos: Option<u64>,
    eos: Option<u64>,
) -> (Option<String>, Option<String>) {
    if let Some(tokens) = file.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()) {
        let text = |id: Option<u64>| {
            id.and_then(|i| tokens.get(usize::try_from(i).ok()?))
                .and_then(|v| v.as_str().map(str::to_string))
        };
        return (text(bos), text(eos));
    }
    #[derive(Deserialize)]
    struct Added {
        id: u64,
        content: String,
    }
    #[derive(Deserialize)]
    struct Json {
        #[serde(default)]
        added_tokens: Vec<Added>,
    }
    let Some(json) = file.get_str(keys::TOKENIZER_HF_JSON) else {
        return (None, None);
    };
    let Ok(parsed) = serde_json::from_str::<Json>(json) else {
        return (None, None);
    };
    let text = |id: Option<u64>| {
        let id = id?;
        parsed
            .added_tokens
            .iter()
            .find(|a| a.id == id)
            .map(|a| a.content.clone())
    };
    (text(bos), text(eos))
}

/// `tojson` as `transformers` defines it: `json.dumps(x, ensure_ascii=False,
/// indent=indent, separators=separators, sort_keys=sort_keys)`.
fn tojson(value: Value, kwargs: Kwargs) -> std::result::Result<Value, Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let separators: Option<Value> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match v.as_i64() {
            // Each level repeats the indent: keep it to what JSON needs.
            Some(n) if (0..=64).contains(&n) => Some(" ".repeat(n as usize)),
            Some(_) => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: indent must be between 0 and 64",
                ))
            }
            None => {
                let s = v.as_str().unwrap_or_default();
                if s.len() > 64 {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: indent must be at most 64 characters",
                    ));
                }
                Some(s.to_string())
            }
        },
    };
    let (item_sep, key_sep) = match separators {
        Some(v) if !v.is_none() => {
            let a = v.get_item_by_index(0)?;
            let b = v.get_item_by_index(1)?;
            (
                a.as_str().unwrap_or(",").to_string(),
                b.as_str().unwrap_or(":").to_string(),
            )
        }
        _ if indent.is_some() => (",".to_string(), ": ".to_string()),
        _ => (", ".to_string(), ": ".to_string()),
    };
    let mut w = JsonWriter {
        out: String::new(),
        indent,
        item_sep,
        key_sep,
        ensure_ascii: ensure_ascii.unwrap_or(false),
        sort_keys: sort_keys.unwrap_or(false),
    };
    w.value(&value, 0)?;
    Ok(Value::from_safe_string(w.out))
}

struct JsonWriter {
    out: String,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    ensure_ascii: bool,
    sort_keys: bool,
}

impl JsonWriter {
    fn newline(&mut self, depth: usize) {
        if let Some(ind) = &self.indent {
            self.out.push('\n');
            for _ in 0..depth {
                self.out.push_str(ind);
            }
        }
    }

    fn value(&mut self, v: &Value, depth: usize) -> std::result::Result<(), Error> {
        if depth > template_sandbox::MAX_DEPTH {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "tojson: value nested too deeply",
            ));
        }
        // Indents and separators can make the text far larger than the value.
        if self.out.len() > template_sandbox::MAX_VALUE {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "tojson: the JSON text is too large",
            ));
        }
        match v.kind() {
            ValueKind::Undefined | ValueKind::None => self.out.push_str("null"),
            ValueKind::Bool => self
                .out
                .push_str(if v.is_true() { "true" } else { "false" }),
            ValueKind::Number => self.number(v),
            ValueKind::String => self.string(v.as_str().unwrap_or_default()),
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = v.try_iter()?.collect();
                self.seq(&items, depth)?;
            }
            ValueKind::Map => {
                let mut entries: Vec<(String, Value)> = Vec::new();
                for k in v.try_iter()? {
                    let item = v.get_item(&k)?;
                    let key = match k.as_str() {
                        Some(s) => s.to_string(),
                        None => {
                            let mut s = String::new();
                            let mut w = JsonWriter {
                                out: String::new(),
                                indent: None,
                                item_sep: String::new(),
                                key_sep: String::new(),
                                ensure_ascii: false,
                                sort_keys: false,
                            };
                            w.value(&k, depth + 1)?;
                            s.push_str(&w.out);
                            s
                        }
                    };
                    entries.push((key, item));
                }
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(&b.0));
                }
                self.map(&entries, depth)?;
            }
            ValueKind::Bytes | ValueKind::Plain | ValueKind::Invalid => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("tojson: a {} value is not JSON serializable", v.kind()),
                ));
            }
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: value is not JSON serializable",
                ));
            }
        }
        Ok(())
    }

    fn seq(&mut self, items: &[Value], depth: usize) -> std::result::Result<(), Error> {
        if items.is_empty() {
            self.out.push_str("[]");
            return Ok(());
        }
        self.out.push('[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                let sep = self.item_sep.clone();
                self.out.push_str(&sep);
            }
            self.newline(depth + 1);
            self.value(item, depth + 1)?;
        }
        self.newline(depth);
        self.out.push(']');
        Ok(())
    }

    fn map(&mut self, entries: &[(String, Value)], depth: usize) -> std::result::Result<(), Error> {
        if entries.is_empty() {
            self.out.push_str("{}");
            return Ok(());
        }
        self.out.push('{');
        for (i, (k, item)) in entries.iter().enumerate() {
            if i > 0 {
                let sep = self.item_sep.clone();
                self.out.push_str(&sep);
            }
            self.newline(depth + 1);
            self.string(k);
            let sep = self.key_sep.clone();
            self.out.push_str(&sep);
            self.value(item, depth + 1)?;
        }
        self.newline(depth);
        self.out.push('}');
        Ok(())
    }

    fn number(&mut self, v: &Value) {
        if v.is_integer() {
            let _ = write!(self.out, "{v}");
            return;
        }
        match f64::try_from(v.clone()) {
            Ok(x) if x.is_nan() => self.out.push_str("NaN"),
            Ok(x) if x.is_infinite() => {
                self.out
                    .push_str(if x > 0.0 { "Infinity" } else { "-Infinity" })
            }
            // Python writes integral floats with ".0".
            Ok(x) if x.fract() == 0.0 && x.abs() < 1e16 => {
                let _ = write!(self.out, "{x:.1}");
            }
            Ok(x) => {
                let _ = write!(self.out, "{x}");
            }
            Err(_) => {
                let _ = write!(self.out, "{v}");
            }
        }
    }

    fn string(&mut self, s: &str) {
        self.out.push('"');
        for c in s.chars() {
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                '\r' => self.out.push_str("\\r"),
                '\t' => self.out.push_str("\\t"),
                '\u{08}' => self.out.push_str("\\b"),
                '\u{0c}' => self.out.push_str("\\f"),
                c if (c as u32) < 0x20 || (self.ensure_ascii && (c as u32) > 0x7e) => {
                    let mut buf = [0u16; 2];
                    for unit in c.encode_utf16(&mut buf) {
                        let _ = write!(self.out, "\\u{:04x}", unit);
                    }
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }
}
