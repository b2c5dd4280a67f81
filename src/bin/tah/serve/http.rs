//! The routes of `tah serve`, and what every request passes through first:
//! the log line, CORS, the API key, a panic turned into a 500.

use super::engine::{Engine, Event, Finish, FinishReason};
use super::openai::{self, ApiError, Endpoint, Limits, Reply};
use super::page;
use super::run::{ReqLog, Run};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures_util::{FutureExt as _, StreamExt as _};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tah::session::CancelFlag;
use tokio::sync::watch;

/// What the handlers share.
pub struct Shared {
    pub engine: Engine,
    /// The model's name in the API: the file's stem.
    pub model_id: Arc<str>,
    pub created: u64,
    pub api_key: Option<String>,
    pub cors: Option<HeaderValue>,
    pub max_body: usize,
    pub timeout: Option<Duration>,
    /// Becomes true when the server starts shutting down.
    pub shutdown: watch::Receiver<bool>,
}

type St = State<Arc<Shared>>;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        // The page and its assets, or a 404.
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), gate))
        // Bodies are read by `read_body`, which has its own limit.
        .layer(DefaultBodyLimit::disable())
        .with_state(shared)
}

/// Runs around every request: log line, CORS, API key, panics.
async fn gate(State(st): St, mut req: Request, next: Next) -> Response {
    let path: String = req.uri().path().chars().take(200).collect();
    let log = Arc::new(ReqLog::new(req.method().as_str(), &path));
    req.extensions_mut().insert(Arc::clone(&log));
    let mut resp = if st.cors.is_some() && req.method() == Method::OPTIONS {
        preflight()
    } else if !is_public(req.method(), req.uri().path()) && !authorized(&st, &req) {
        unauthorized()
    } else {
        // One request's panic is one 500, not a dropped connection.
        match AssertUnwindSafe(next.run(req)).catch_unwind().await {
            Ok(r) => r,
            Err(_) => {
                log.note("panic");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the server failed on this request",
                )
                .into_response()
            }
        }
    };
    if let Some(origin) = &st.cors {
        resp.headers_mut()
            .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    }
    log.status.store(resp.status().as_u16(), Ordering::Relaxed);
    resp
}

/// `/health` and the page's static files (no data in them) need no key.
fn is_public(method: &Method, path: &str) -> bool {
    path == "/health"
        || ((method == Method::GET || method == Method::HEAD) && page_path(path).is_some())
}

fn page_path(path: &str) -> Option<(&'static [u8], &'static str)> {
    page::asset(path.strip_prefix('/')?)
}

fn authorized(st: &Shared, req: &Request) -> bool {
    let Some(key) = &st.api_key else {
        return true;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    same_secret(given.trim().as_bytes(), key.as_bytes())
}

/// Compares in time that depends on the lengths only, not on where the
/// first difference is.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
        diff |= std::hint::black_box(x) as usize;
    }
    diff == 0
}

fn unauthorized() -> Response {
    let mut e = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "missing or wrong API key: send 'Authorization: Bearer KEY'",
    );
    e.code = Some("invalid_api_key");
    let mut r = e.into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

fn preflight() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    r
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

fn model_object(st: &Shared) -> Value {
    json!({"id": &*st.model_id, "object": "model", "created": st.created, "owned_by": "tah"})
}

async fn models(State(st): St) -> Json<Value> {
    Json(json!({"object": "list", "data": [model_object(&st)]}))
}

async fn model(State(st): St, Path(id): Path<String>) -> Response {
    if id == *st.model_id {
        Json(model_object(&st)).into_response()
    } else {
        let mut e = ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no model '{id}': this server has '{}'", st.model_id),
        );
        e.code = Some("model_not_found");
        e.into_response()
    }
}

async fn fallback(method: Method, uri: Uri) -> Response {
    if method == Method::GET || method == Method::HEAD {
        if let Some((bytes, kind)) = page_path(uri.path()) {
            return (
                [
                    (header::CONTENT_TYPE, kind),
                    (header::CACHE_CONTROL, "no-cache"),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                ],
                bytes,
            )
                .into_response();
        }
    }
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such route: {method} {}", uri.path()),
    )
    .into_response()
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not take {method}", uri.path()),
    )
}

async fn chat(State(st): St, Extension(log): Extension<Arc<ReqLog>>, body: Body) -> Response {
    complete(&st, log, Endpoint::Chat, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn completions(
    State(st): St,
    Extension(log): Extension<Arc<ReqLog>>,
    body: Body,
) -> Response {
    complete(&st, log, Endpoint::Completion, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Bytes read past the limit before a 413, so that a client still sending
/// its body sees the answer instead of a reset connection.
const DRAIN_MAX: usize = 16 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(5);
/// The most time a request body may take to arrive.
const BODY_TIME: Duration = Duration::from_secs(30);

async fn read_body(body: Body, max: usize) -> Result<Bytes, ApiError> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}"),
            )
        })?;
        if buf.len() + chunk.len() > max {
            let mut drained = 0usize;
            let _ = tokio::time::timeout(DRAIN_TIME, async {
                while let Some(Ok(c)) = stream.next().await {
                    drained += c.len();
                    if drained > DRAIN_MAX {
                        break;
                    }
                }
            })
            .await;
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than the server's limit of {max} bytes"),
            ));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.into())
}

async fn complete(
    st: &Shared,
    log: Arc<ReqLog>,
    endpoint: Endpoint,
    body: Body,
) -> Result<Response, ApiError> {
    // A client that trickles its body must not hold a connection and a
    // buffer for ever.
    let body = tokio::time::timeout(BODY_TIME, read_body(body, st.max_body))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("the body did not arrive within {} s", BODY_TIME.as_secs()),
            )
        })??;
    let limits = Limits {
        ctx: st.engine.ctx,
        vocab: st.engine.model.model.cfg.vocab,
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (job, answer) = openai::parse(endpoint, &body, &limits, tx, CancelFlag::default())?;
    let reply = Reply::new(endpoint, Arc::clone(&st.model_id), &job, &answer);
    let mut run = Run::submit(&st.engine, job, rx, st.timeout, st.shutdown.clone(), log)?;
    // The first event decides the status: a job the engine refuses (prompt
    // longer than the context) is an HTTP error, not a stream.
    let first = run.next().await;
    if let Some(Event::Error { status, message }) = first {
        return Err(engine_error(status, message));
    }
    if answer.stream {
        Ok(sse(run, reply, first))
    } else {
        collect(run, reply, first).await
    }
}

fn engine_error(status: u16, message: String) -> ApiError {
    let status = StatusCode::from_u16(status)
        .ok()
        .filter(|s| s.is_client_error() || s.is_server_error())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    ApiError::new(status, message)
}

/// What the answer so far adds up to, for a job cut off without its
/// summary (time limit passed and the engine did not report in time).
#[derive(Default)]
struct Tally {
    depths: Vec<u8>,
    probs: Vec<Option<f32>>,
}

impl Tally {
    fn push(&mut self, depth: u8, prob: f32) {
        self.depths.push(depth);
        self.probs.push(prob.is_finite().then_some(prob));
    }

    fn finish(self, want_depths: bool) -> Finish {
        let deepest = self.depths.iter().copied().max().unwrap_or(1).max(1) as usize;
        let mut per = vec![0usize; deepest];
        for &d in &self.depths {
            per[(d as usize).clamp(1, deepest) - 1] += 1;
        }
        let n = self.depths.len();
        let hard = n - per[0];
        Finish {
            reason: FinishReason::Length,
            // Unknown here: the engine did not say.
            prompt_tokens: 0,
            cached_tokens: 0,
            completion_tokens: n,
            tokens_per_depth: per,
            hard_rate: if n == 0 { 0.0 } else { hard as f64 / n as f64 },
            depths: want_depths.then_some(self.depths),
            probs: want_depths.then_some(self.probs),
        }
    }
}

/// How a job ended, as the answer will say it.
enum End {
    /// Finished (or cut by the time limit): the finish reason and summary.
    Finished(&'static str, Finish),
    /// Cancelled (shutdown, or the engine cancelled it): no answer.
    Cancelled,
    Failed(ApiError),
}

/// The end of a run from its last event (`None`: no end came).
fn end_of(run: &Run, ev: Option<Event>, tally: Tally, want_depths: bool) -> End {
    match ev {
        Some(Event::Done(fin)) => match openai::finish_reason(fin.reason, run.timed_out) {
            Some(r) => End::Finished(r, fin),
            None => End::Cancelled,
        },
        Some(Event::Error { status, message }) => End::Failed(engine_error(status, message)),
        None if run.timed_out => End::Finished("length", tally.finish(want_depths)),
        None if run.shut => End::Cancelled,
        None => End::Failed(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the engine dropped the request",
        )),
        // Callers pass the event that ended the token loop.
        Some(Event::Token { .. }) => End::Failed(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "a token after the end",
        )),
    }
}

async fn collect(mut run: Run, reply: Reply, first: Option<Event>) -> Result<Response, ApiError> {
    let mut text = String::new();
    let mut tally = Tally::default();
    let mut ev = first;
    while let Some(Event::Token {
        text: t,
        depth,
        prob,
        ..
    }) = ev
    {
        text.push_str(&t);
        tally.push(depth, prob);
        ev = run.next().await;
    }
    match end_of(&run, ev, tally, reply.want_depths) {
        End::Finished(reason, fin) => Ok(Json(reply.full(&text, &fin, reason)).into_response()),
        End::Cancelled => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the request was cancelled (the server is shutting down)",
        )),
        End::Failed(e) => Err(e),
    }
}

fn push_sse(out: &mut String, v: &Value) {
    out.push_str("data: ");
    out.push_str(&v.to_string());
    out.push_str("\n\n");
}

struct SseState {
    run: Run,
    reply: Reply,
    pending: Option<Event>,
    started: bool,
    tally: Tally,
}

/// A streamed answer: `data: {chunk}` events, then `data: [DONE]`. The
/// stream owns the run: a client that disconnects drops it, which cancels
/// the job.
fn sse(run: Run, reply: Reply, first: Option<Event>) -> Response {
    let state = SseState {
        run,
        reply,
        pending: first,
        started: false,
        tally: Tally::default(),
    };
    let events = futures_util::stream::unfold(Some(state), |state| async move {
        let mut st = state?;
        let mut out = String::new();
        if !st.started {
            st.started = true;
            if let Some(c) = st.reply.first_chunk() {
                push_sse(&mut out, &c);
            }
        }
        loop {
            let ev = match st.pending.take() {
                Some(e) => Some(e),
                None => st.run.next().await,
            };
            if let Some(Event::Token {
                text, depth, prob, ..
            }) = &ev
            {
                st.tally.push(*depth, *prob);
                // Pieces held back (a split character, a possible stop
                // string) carry no text; the depth view still wants them.
                if !text.is_empty() || st.reply.want_depths {
                    push_sse(&mut out, &st.reply.token_chunk(text, *depth, *prob));
                }
                if out.is_empty() {
                    continue;
                }
                return Some((Ok::<_, Infallible>(out), Some(st)));
            }
            let tally = std::mem::take(&mut st.tally);
            match end_of(&st.run, ev, tally, st.reply.want_depths) {
                End::Finished(reason, fin) => {
                    for c in st.reply.final_chunks(&fin, reason) {
                        push_sse(&mut out, &c);
                    }
                    out.push_str("data: [DONE]\n\n");
                }
                End::Cancelled => {}
                // The status is sent already: the error goes in the stream.
                End::Failed(e) => push_sse(&mut out, &e.body()),
            }
            return (!out.is_empty()).then_some((Ok(out), None));
        }
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            // Proxies (nginx) would otherwise hold the events back.
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(events),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
        assert!(!same_secret(b"", b"a"));
        assert!(same_secret(b"", b""));
    }

    #[test]
    fn tally_of_a_cut_answer() {
        let mut t = Tally::default();
        t.push(1, f32::NAN);
        t.push(2, 0.9);
        t.push(1, 0.1);
        let f = t.finish(true);
        assert_eq!(f.tokens_per_depth, [2, 1]);
        assert_eq!(f.completion_tokens, 3);
        assert!((f.hard_rate - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(f.probs.unwrap(), [None, Some(0.9), Some(0.1)]);
    }
}
