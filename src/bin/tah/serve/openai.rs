//! OpenAI's wire format: the request bodies of `/v1/chat/completions` and
//! `/v1/completions` checked and turned into an engine [`Job`], and the
//! responses, stream chunks and error objects built back from engine events.
//!
//! Requests are read field by field from a `serde_json::Value` rather than
//! derived, so that every wrong field gets a 400 naming it (`param`), as
//! OpenAI's does, and unknown fields are ignored (clients send extras).

use super::engine::{Event, Finish, FinishReason, Job, Prompt};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use tah::generate::{MAX_STOP_BYTES, MAX_STOP_STRINGS};
use tah::sample::{SamplingParams, MAX_REPEAT_LAST_N};
use tah::session::CancelFlag;
use tah::tah::ThinkMode;
use tah::text::ChatMessage;
use tokio::sync::mpsc::UnboundedSender;

/// An error answered as OpenAI's error object.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The request field at fault.
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Seconds for a `Retry-After` header (503).
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// A 400 about one field.
    pub fn bad(param: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            param: Some(param.to_string()),
            ..ApiError::new(StatusCode::BAD_REQUEST, message)
        }
    }

    pub fn busy() -> ApiError {
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is busy (every slot and the queue are taken): retry shortly",
            )
        }
    }

    /// OpenAI's `type`: the client's fault or the server's.
    fn kind(&self) -> &'static str {
        if self.status.is_server_error() {
            "server_error"
        } else {
            "invalid_request_error"
        }
    }

    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind(),
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completion,
}

/// What the request is checked against.
pub struct Limits {
    /// Context per session: the most `max_tokens` can be.
    pub ctx: usize,
    pub vocab: usize,
}

/// How a checked request wants its answer (the rest is in its [`Job`]).
pub struct Answer {
    pub stream: bool,
    /// `stream_options.include_usage`: a last chunk with the usage.
    pub include_usage: bool,
}

/// The body's fields; JSON `null` counts as absent, as in OpenAI's API.
struct Fields<'a>(&'a Map<String, Value>);

impl<'a> Fields<'a> {
    fn get(&self, k: &str) -> Option<&'a Value> {
        self.0.get(k).filter(|v| !v.is_null())
    }

    /// Field `k` converted by `conv`; `what` names the type it must have.
    fn typed<T>(
        &self,
        k: &str,
        conv: impl Fn(&'a Value) -> Option<T>,
        what: &str,
    ) -> Result<Option<T>, ApiError> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => conv(v)
                .map(Some)
                .ok_or_else(|| ApiError::bad(k, format!("'{k}' must be {what}"))),
        }
    }

    fn num(&self, k: &str) -> Result<Option<f64>, ApiError> {
        self.typed(k, Value::as_f64, "a number")
    }

    /// A number in `lo..=hi`, as f32.
    fn ranged(&self, k: &str, lo: f64, hi: f64) -> Result<Option<f32>, ApiError> {
        match self.num(k)? {
            Some(x) if !(lo..=hi).contains(&x) => Err(ApiError::bad(
                k,
                format!("'{k}' is {x}: it must be in [{lo}, {hi}]"),
            )),
            x => Ok(x.map(|x| x as f32)),
        }
    }

    fn int(&self, k: &str) -> Result<Option<i64>, ApiError> {
        // Above i64::MAX: larger than any limit here.
        let conv = |v: &Value| v.as_i64().or_else(|| v.as_u64().map(|_| i64::MAX));
        self.typed(k, conv, "an integer")
    }

    fn bool(&self, k: &str) -> Result<Option<bool>, ApiError> {
        self.typed(k, Value::as_bool, "true or false")
    }

    fn str(&self, k: &str) -> Result<Option<&'a str>, ApiError> {
        self.typed(k, Value::as_str, "a string")
    }
}

fn unsupported(k: &str, what: &str) -> ApiError {
    ApiError::bad(k, format!("'{k}': {what} is not supported by this server"))
}

/// Parses and checks a request body into the engine job that will send its
/// events to `events` and watch `cancel`.
pub fn parse(
    endpoint: Endpoint,
    body: &[u8],
    lim: &Limits,
    events: UnboundedSender<Event>,
    cancel: CancelFlag,
) -> Result<(Job, Answer), ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    let Some(obj) = v.as_object() else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object",
        ));
    };
    let f = Fields(obj);
    check_unsupported(endpoint, &f)?;
    f.str("model")?;
    let prompt = match endpoint {
        Endpoint::Chat => Prompt::Chat(messages(&f)?),
        Endpoint::Completion => Prompt::Text(text_prompt(&f)?),
    };
    let max_tokens = match f.int("max_completion_tokens")? {
        Some(n) => Some((n, "max_completion_tokens")),
        None => f.int("max_tokens")?.map(|n| (n, "max_tokens")),
    };
    let max_tokens = match max_tokens {
        None => None,
        Some((n, k)) if n < 1 => return Err(ApiError::bad(k, format!("'{k}' must be at least 1"))),
        Some((n, k)) if n as u64 > lim.ctx as u64 => {
            return Err(ApiError::bad(
                k,
                format!(
                    "'{k}' is {n}, more than the context of {} tokens per request; ask for fewer",
                    lim.ctx
                ),
            ))
        }
        Some((n, _)) => Some(n as usize),
    };
    let stream = f.bool("stream")?.unwrap_or(false);
    let include_usage = match f.get("stream_options") {
        None => false,
        Some(Value::Object(o)) => Fields(o).bool("include_usage")?.unwrap_or(false),
        Some(_) => {
            return Err(ApiError::bad(
                "stream_options",
                "'stream_options' must be an object",
            ))
        }
    };
    let think = match f.str("think")? {
        None => None,
        Some(s) => Some(
            s.parse::<ThinkMode>()
                .map_err(|e| ApiError::bad("think", e))?,
        ),
    };
    let job = Job {
        prompt,
        max_tokens,
        sampling: sampling(&f, lim.ctx)?,
        logit_bias: logit_bias(&f, lim.vocab)?,
        stop: stop(&f)?,
        think,
        want_depths: f.bool("tah_depths")?.unwrap_or(false),
        events,
        cancel,
    };
    Ok((
        job,
        Answer {
            stream,
            include_usage,
        },
    ))
}

/// The listed OpenAI features this server does not have: a 400 rather than
/// an answer that silently ignores them.
fn check_unsupported(endpoint: Endpoint, f: &Fields) -> Result<(), ApiError> {
    if let Some(n) = f.int("n")? {
        if n != 1 {
            return Err(ApiError::bad(
                "n",
                format!("'n' is {n}: only n = 1 is supported"),
            ));
        }
    }
    let non_empty = |k: &str| match f.get(k) {
        None => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    };
    for k in ["tools", "functions"] {
        if non_empty(k) {
            return Err(unsupported(k, "tool and function calling"));
        }
    }
    for k in ["tool_choice", "function_call"] {
        if f.get(k).is_some_and(|v| v != "none") {
            return Err(unsupported(k, "tool and function calling"));
        }
    }
    if let Some(rf) = f.get("response_format") {
        let kind = rf.get("type").and_then(Value::as_str);
        if kind != Some("text") {
            return Err(unsupported(
                "response_format",
                "a response format other than {\"type\": \"text\"}",
            ));
        }
    }
    match endpoint {
        Endpoint::Chat => {
            if f.bool("logprobs")? == Some(true) {
                return Err(unsupported("logprobs", "logprobs"));
            }
            if f.int("top_logprobs")?.is_some_and(|n| n > 0) {
                return Err(unsupported("top_logprobs", "logprobs"));
            }
        }
        Endpoint::Completion => {
            if f.int("logprobs")?.is_some_and(|n| n > 0) {
                return Err(unsupported("logprobs", "logprobs"));
            }
            if f.bool("echo")? == Some(true) {
                return Err(unsupported("echo", "echoing the prompt"));
            }
            if f.int("best_of")?.is_some_and(|n| n != 1) {
                return Err(unsupported("best_of", "best_of other than 1"));
            }
            if f.str("suffix")?.is_some_and(|s| !s.is_empty()) {
                return Err(unsupported("suffix", "a suffix (insertion)"));
            }
        }
    }
    Ok(())
}

fn messages(f: &Fields) -> Result<Vec<ChatMessage>, ApiError> {
    let Some(v) = f.get("messages") else {
        return Err(ApiError::bad("messages", "'messages' is required"));
    };
    let Some(list) = v.as_array() else {
        return Err(ApiError::bad(
            "messages",
            "'messages' must be an array of messages",
        ));
    };
    if list.is_empty() {
        return Err(ApiError::bad("messages", "'messages' is empty"));
    }
    list.iter()
        .enumerate()
        .map(|(i, m)| message(i, m))
        .collect()
}

fn message(i: usize, m: &Value) -> Result<ChatMessage, ApiError> {
    let at = |k: &str| format!("messages[{i}].{k}");
    let Some(m) = m.as_object() else {
        return Err(ApiError::bad(
            &format!("messages[{i}]"),
            format!("messages[{i}] must be an object"),
        ));
    };
    let role = match m.get("role").and_then(Value::as_str) {
        Some(r @ ("system" | "user" | "assistant")) => r,
        // OpenAI's newer name for the system role.
        Some("developer") => "system",
        Some(r) => {
            return Err(ApiError::bad(
                &at("role"),
                format!("role '{r}' is not supported (system, user, assistant)"),
            ))
        }
        None => {
            return Err(ApiError::bad(
                &at("role"),
                format!("{} must be a string", at("role")),
            ))
        }
    };
    let content = match m.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (j, p) in parts.iter().enumerate() {
                let param = format!("messages[{i}].content[{j}]");
                match (p.get("type").and_then(Value::as_str), p.get("text")) {
                    (Some("text"), Some(Value::String(t))) => texts.push(t.as_str()),
                    (Some("text"), _) => {
                        return Err(ApiError::bad(
                            &param,
                            format!("{param}.text must be a string"),
                        ))
                    }
                    (Some(t), _) => {
                        return Err(ApiError::bad(
                            &param,
                            format!("content parts of type '{t}' are not supported: text only"),
                        ))
                    }
                    (None, _) => {
                        return Err(ApiError::bad(&param, format!("{param} needs a 'type'")))
                    }
                }
            }
            texts.join("\n")
        }
        // An assistant turn that only called tools has none; we have no tools.
        Some(Value::Null) | None if role == "assistant" => String::new(),
        _ => {
            return Err(ApiError::bad(
                &at("content"),
                format!(
                    "{} must be a string or an array of text parts",
                    at("content")
                ),
            ))
        }
    };
    Ok(ChatMessage::new(role, content))
}

fn text_prompt(f: &Fields) -> Result<String, ApiError> {
    let s = match f.get("prompt") {
        None => return Err(ApiError::bad("prompt", "'prompt' is required")),
        Some(Value::String(s)) => s,
        Some(Value::Array(a)) => match a.as_slice() {
            [Value::String(s)] => s,
            _ => {
                return Err(ApiError::bad(
                    "prompt",
                    "'prompt' must be a string or an array of one string (batches and token ids are not supported)",
                ))
            }
        },
        Some(_) => return Err(ApiError::bad("prompt", "'prompt' must be a string")),
    };
    if s.is_empty() {
        return Err(ApiError::bad("prompt", "'prompt' is empty"));
    }
    Ok(s.clone())
}

/// OpenAI's sampling: temperature and top_p 1 unless given, no top-k or
/// min-p; penalties over the whole context (tah's window, capped).
fn sampling(f: &Fields, ctx: usize) -> Result<SamplingParams, ApiError> {
    let temperature = f.ranged("temperature", 0.0, 2.0)?.unwrap_or(1.0);
    let top_p = f.ranged("top_p", 0.0, 1.0)?.unwrap_or(1.0);
    if top_p <= 0.0 {
        return Err(ApiError::bad("top_p", "'top_p' must be above 0"));
    }
    let presence_penalty = f.ranged("presence_penalty", -2.0, 2.0)?.unwrap_or(0.0);
    let frequency_penalty = f.ranged("frequency_penalty", -2.0, 2.0)?.unwrap_or(0.0);
    let penalised = presence_penalty != 0.0 || frequency_penalty != 0.0;
    let seed = match f.int("seed")? {
        // Negative seeds are valid for OpenAI: any 64 bits will do.
        Some(s) => s as u64,
        None => super::random_u64(),
    };
    let p = SamplingParams {
        temperature,
        top_k: 0,
        top_p,
        min_p: 0.0,
        seed,
        repeat_penalty: 1.0,
        repeat_last_n: if penalised {
            ctx.min(MAX_REPEAT_LAST_N)
        } else {
            0
        },
        presence_penalty,
        frequency_penalty,
    };
    p.validate()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    Ok(p)
}

fn logit_bias(f: &Fields, vocab: usize) -> Result<Vec<(u32, f32)>, ApiError> {
    const K: &str = "logit_bias";
    let Some(v) = f.get(K) else {
        return Ok(Vec::new());
    };
    let Some(map) = v.as_object() else {
        return Err(ApiError::bad(
            K,
            "'logit_bias' must be an object of token id -> bias",
        ));
    };
    let mut out = Vec::with_capacity(map.len());
    for (id, b) in map {
        let id: u32 = id
            .parse()
            .map_err(|_| ApiError::bad(K, format!("logit_bias key '{id}' is not a token id")))?;
        let b = b.as_f64().ok_or_else(|| {
            ApiError::bad(K, format!("logit_bias for token {id} must be a number"))
        })?;
        out.push((id, b as f32));
    }
    tah::sample::validate_logit_bias(&out, vocab).map_err(|e| ApiError::bad(K, e))?;
    Ok(out)
}

fn stop(f: &Fields) -> Result<Vec<String>, ApiError> {
    const K: &str = "stop";
    let list: Vec<&Value> = match f.get(K) {
        None => return Ok(Vec::new()),
        Some(v @ Value::String(_)) => vec![v],
        Some(Value::Array(a)) => a.iter().collect(),
        Some(_) => {
            return Err(ApiError::bad(
                K,
                "'stop' must be a string or an array of strings",
            ))
        }
    };
    if list.len() > MAX_STOP_STRINGS {
        return Err(ApiError::bad(
            K,
            format!("{} stop strings: at most {MAX_STOP_STRINGS}", list.len()),
        ));
    }
    list.into_iter()
        .map(|v| match v.as_str() {
            Some("") => Err(ApiError::bad(K, "a stop string is empty")),
            Some(s) if s.len() > MAX_STOP_BYTES => Err(ApiError::bad(
                K,
                format!(
                    "a stop string of {} bytes: at most {MAX_STOP_BYTES}",
                    s.len()
                ),
            )),
            Some(s) => Ok(s.to_string()),
            None => Err(ApiError::bad(
                K,
                "'stop' must be a string or an array of strings",
            )),
        })
        .collect()
}

/// Builds the JSON answers of one request: ids, chunks, the final object.
pub struct Reply {
    pub endpoint: Endpoint,
    pub id: String,
    pub created: u64,
    pub model: Arc<str>,
    pub want_depths: bool,
    pub include_usage: bool,
}

impl Reply {
    pub fn new(endpoint: Endpoint, model: Arc<str>, job: &Job, answer: &Answer) -> Reply {
        let prefix = match endpoint {
            Endpoint::Chat => "chatcmpl",
            Endpoint::Completion => "cmpl",
        };
        Reply {
            endpoint,
            id: format!("{prefix}-{:016x}", super::random_u64()),
            created: super::unix_now(),
            model,
            want_depths: job.want_depths,
            include_usage: answer.include_usage,
        }
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.endpoint, chunk) {
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
            (Endpoint::Completion, _) => "text_completion",
        }
    }

    /// A stream chunk with one choice; `delta` is the chat delta or the
    /// completion's text.
    fn chunk(&self, delta: Value, finish: Option<&str>) -> Map<String, Value> {
        let choice = match self.endpoint {
            Endpoint::Chat => {
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
            Endpoint::Completion => {
                json!({"index": 0, "text": delta, "logprobs": null, "finish_reason": finish})
            }
        };
        let mut m = self.head(true);
        m.insert("choices".into(), json!([choice]));
        if self.include_usage {
            // OpenAI: every chunk but the last has "usage": null.
            m.insert("usage".into(), Value::Null);
        }
        m
    }

    fn head(&self, chunk: bool) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("object".into(), json!(self.object(chunk)));
        m.insert("created".into(), json!(self.created));
        m.insert("model".into(), json!(&*self.model));
        m.insert("system_fingerprint".into(), Value::Null);
        m
    }

    /// The chat stream's opening chunk (the completions stream has none).
    pub fn first_chunk(&self) -> Option<Value> {
        (self.endpoint == Endpoint::Chat)
            .then(|| Value::Object(self.chunk(json!({"role": "assistant", "content": ""}), None)))
    }

    pub fn token_chunk(&self, text: &str, depth: u8, prob: f32) -> Value {
        let delta = match self.endpoint {
            Endpoint::Chat => json!({"content": text}),
            Endpoint::Completion => json!(text),
        };
        let mut m = self.chunk(delta, None);
        if self.want_depths {
            m.insert("tah".into(), json!({"depth": depth, "prob": finite(prob)}));
        }
        Value::Object(m)
    }

    /// The chunk with the finish reason and the `tah` summary, then the
    /// usage chunk when asked for.
    pub fn final_chunks(&self, fin: &Finish, reason: &str) -> Vec<Value> {
        let delta = match self.endpoint {
            Endpoint::Chat => json!({}),
            Endpoint::Completion => json!(""),
        };
        let mut last = self.chunk(delta, Some(reason));
        last.insert("tah".into(), self.tah(fin));
        let mut out = vec![Value::Object(last)];
        if self.include_usage {
            let mut u = self.head(true);
            u.insert("choices".into(), json!([]));
            u.insert("usage".into(), usage(fin));
            out.push(Value::Object(u));
        }
        out
    }

    /// The whole non-streaming answer.
    pub fn full(&self, text: &str, fin: &Finish, reason: &str) -> Value {
        let choice = match self.endpoint {
            Endpoint::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": null},
                "logprobs": null,
                "finish_reason": reason,
            }),
            Endpoint::Completion => json!({
                "index": 0, "text": text, "logprobs": null, "finish_reason": reason,
            }),
        };
        let mut m = self.head(false);
        m.insert("choices".into(), json!([choice]));
        m.insert("usage".into(), usage(fin));
        m.insert("tah".into(), self.tah(fin));
        Value::Object(m)
    }

    /// TaH's own summary: how deep the generated tokens ran.
    fn tah(&self, fin: &Finish) -> Value {
        let mut t = Map::new();
        t.insert("tokens_per_depth".into(), json!(fin.tokens_per_depth));
        t.insert("hard_rate".into(), json!(finite(fin.hard_rate as f32)));
        if self.want_depths {
            t.insert("depths".into(), json!(fin.depths.as_deref().unwrap_or(&[])));
            let probs: Vec<Option<f32>> = fin
                .probs
                .as_deref()
                .unwrap_or(&[])
                .iter()
                .map(|p| p.and_then(finite))
                .collect();
            t.insert("probs".into(), json!(probs));
        }
        Value::Object(t)
    }
}

fn usage(fin: &Finish) -> Value {
    json!({
        "prompt_tokens": fin.prompt_tokens,
        "completion_tokens": fin.completion_tokens,
        "total_tokens": fin.prompt_tokens + fin.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": fin.cached_tokens},
    })
}

/// JSON has no NaN: a missing probability is `null`.
fn finite(x: f32) -> Option<f32> {
    x.is_finite().then_some(x)
}

/// OpenAI's `finish_reason`; `None` for a cancelled job (its stream just ends).
pub fn finish_reason(r: FinishReason, timed_out: bool) -> Option<&'static str> {
    match r {
        FinishReason::Stop => Some("stop"),
        FinishReason::Length => Some("length"),
        // The time limit cuts an answer short, like max_tokens.
        FinishReason::Cancelled if timed_out => Some("length"),
        FinishReason::Cancelled => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIM: Limits = Limits {
        ctx: 1024,
        vocab: 1000,
    };

    fn parse_as(endpoint: Endpoint, body: &str) -> Result<(Job, Answer), ApiError> {
        let (tx, _) = tokio::sync::mpsc::unbounded_channel();
        parse(endpoint, body.as_bytes(), &LIM, tx, CancelFlag::default())
    }

    fn chat(body: &str) -> Result<(Job, Answer), ApiError> {
        parse_as(Endpoint::Chat, body)
    }

    fn param_of(body: &str) -> Option<String> {
        chat(body).err().expect("a 400").param
    }

    #[test]
    fn defaults_are_openai_s() {
        let (r, a) = chat(r#"{"model":"x","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        assert_eq!(r.sampling.temperature, 1.0);
        assert_eq!(r.sampling.top_p, 1.0);
        assert_eq!(r.sampling.top_k, 0);
        assert_eq!(r.sampling.repeat_last_n, 0);
        assert_eq!(r.max_tokens, None);
        assert!(!a.stream);
    }

    #[test]
    fn fields_are_read() {
        let (r, a) = chat(
            r#"{"messages":[{"role":"developer","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
                {"role":"user","content":"hi"}],
              "max_tokens":5,"max_completion_tokens":7,"temperature":0,"seed":-1,
              "stop":"x","presence_penalty":0.5,"logit_bias":{"3":-100},
              "stream":true,"stream_options":{"include_usage":true},
              "think":"budget:0.1","tah_depths":true,"n":1,"tools":[],"response_format":{"type":"text"},
              "user":"extra fields are ignored"}"#,
        )
        .unwrap();
        let Prompt::Chat(m) = &r.prompt else { panic!() };
        assert_eq!(
            (m[0].role.as_str(), m[0].content.as_str()),
            ("system", "a\nb")
        );
        assert_eq!(r.max_tokens, Some(7));
        assert_eq!(r.sampling.seed, u64::MAX);
        assert_eq!(r.sampling.repeat_last_n, 1024);
        assert_eq!(r.stop, ["x"]);
        assert_eq!(r.logit_bias, [(3, -100.0)]);
        assert!(a.stream && a.include_usage && r.want_depths);
        assert_eq!(r.think, Some(ThinkMode::Budget(0.1)));
    }

    #[test]
    fn bad_fields_name_themselves() {
        let m = r#""messages":[{"role":"user","content":"hi"}]"#;
        for (extra, param) in [
            (r#""n":2"#, "n"),
            (r#""tools":[{"type":"function"}]"#, "tools"),
            (r#""tool_choice":"auto""#, "tool_choice"),
            (
                r#""response_format":{"type":"json_object"}"#,
                "response_format",
            ),
            (r#""logprobs":true"#, "logprobs"),
            (r#""temperature":-1"#, "temperature"),
            (r#""temperature":"hot""#, "temperature"),
            (r#""top_p":0"#, "top_p"),
            (r#""max_tokens":1025"#, "max_tokens"),
            (r#""max_tokens":0"#, "max_tokens"),
            (r#""max_tokens":1.5"#, "max_tokens"),
            (r#""think":"sometimes""#, "think"),
            (r#""logit_bias":{"1000":1}"#, "logit_bias"),
            (r#""logit_bias":{"x":1}"#, "logit_bias"),
            (r#""logit_bias":{"1":101}"#, "logit_bias"),
            (r#""stop":["a",""]"#, "stop"),
            (r#""stop":3"#, "stop"),
            (r#""stream":"yes""#, "stream"),
        ] {
            assert_eq!(
                param_of(&format!("{{{m},{extra}}}")).as_deref(),
                Some(param),
                "{extra}"
            );
        }
        let many: Vec<String> = (0..=MAX_STOP_STRINGS)
            .map(|i| format!("\"s{i}\""))
            .collect();
        assert_eq!(
            param_of(&format!("{{{m},\"stop\":[{}]}}", many.join(","))).as_deref(),
            Some("stop")
        );
    }

    #[test]
    fn bad_messages() {
        for (body, param) in [
            (r#"{}"#, "messages"),
            (r#"{"messages":[]}"#, "messages"),
            (r#"{"messages":"hi"}"#, "messages"),
            (
                r#"{"messages":[{"role":"tool","content":"x"}]}"#,
                "messages[0].role",
            ),
            (r#"{"messages":[{"role":"user"}]}"#, "messages[0].content"),
            (
                r#"{"messages":[{"role":"user","content":5}]}"#,
                "messages[0].content",
            ),
            (
                r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}"#,
                "messages[0].content[0]",
            ),
        ] {
            assert_eq!(param_of(body).as_deref(), Some(param), "{body}");
        }
        for body in ["{", "[1]", "null"] {
            let e = chat(body).err().unwrap();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn completion_prompts() {
        let p = |b: &str| parse_as(Endpoint::Completion, b);
        assert!(
            matches!(p(r#"{"prompt":["one"]}"#).unwrap().0.prompt, Prompt::Text(t) if t == "one")
        );
        for b in [
            r#"{}"#,
            r#"{"prompt":["a","b"]}"#,
            r#"{"prompt":[1,2]}"#,
            r#"{"prompt":""}"#,
            r#"{"prompt":"a","echo":true}"#,
        ] {
            assert!(p(b).is_err(), "{b}");
        }
    }

    #[test]
    fn nan_probabilities_are_null() {
        let (r, a) =
            chat(r#"{"messages":[{"role":"user","content":"hi"}],"tah_depths":true}"#).unwrap();
        let reply = Reply::new(Endpoint::Chat, "m".into(), &r, &a);
        let c = reply.token_chunk("a", 1, f32::NAN);
        assert_eq!(c["tah"], json!({"depth": 1, "prob": null}));
        assert_eq!(c["choices"][0]["delta"]["content"], "a");
    }
}
