//! `tah serve`: an OpenAI-compatible HTTP API (`/v1/chat/completions`,
//! `/v1/completions`, `/v1/models`) and a tutor page, over one model shared
//! by `--parallel` sessions.
//!
//! The engine thread ([`engine`]) generates; the HTTP side (axum on a small
//! tokio runtime: [`http`], [`openai`], [`run`]) checks requests, queues jobs
//! and streams their tokens back.

mod engine;
mod http;
mod openai;
mod page;
mod run;

use crate::common::{parse_kv, parse_think, Error};
use clap::Args;
use std::future::IntoFuture as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tah::api::{ApiModel, ModelParams};
use tah::model::kv_cache::KvType;
use tah::tah::ThinkMode;
use tokio::sync::watch;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The .tah (or .gguf) model file; its stem is the model's id in the API.
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// Address to listen on. The default answers this machine only; another
    /// address (0.0.0.0: every interface) should go with --api-key.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port; 0 picks a free one (the address is printed at start).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Worker threads of the model (default: all cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Requests generated at the same time, each in its own session.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Context length per session in tokens (default: the model's, capped at
    /// 4096): a request's prompt and answer must fit in it.
    #[arg(long, default_value_t = 0)]
    pub ctx: usize,
    /// KV cache element type: f16, f32 or q8_0.
    #[arg(long, default_value = "f16", value_parser = parse_kv)]
    pub kv_type: KvType,
    /// Require `Authorization: Bearer KEY` on the API (/v1/…); also read from
    /// the TAH_API_KEY environment variable, which `ps` does not show.
    /// /health and the tutor page's static files stay open (they hold no
    /// data); the page has a field for the key.
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Think mode of requests that do not set one (a request's "think"
    /// field): auto, never, always or budget:R.
    #[arg(long, default_value = "auto", value_parser = parse_think)]
    pub think: ThinkMode,
    /// Let web pages from ORIGIN (e.g. http://localhost:3000, or *) call the
    /// API: answer CORS preflights and send Access-Control-Allow-Origin.
    /// Off by default (browsers then refuse other origins' calls).
    #[arg(long, value_name = "ORIGIN")]
    pub cors: Option<String>,
    /// Largest request body in bytes (larger: 413).
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    pub max_body: usize,
    /// Requests that may wait for a free session; more get 503 with
    /// Retry-After.
    #[arg(long, default_value_t = 16)]
    pub queue: usize,
    /// Time limit per request in seconds (0 = none); an answer cut by it ends
    /// with finish_reason "length".
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub timeout: u64,
}

pub fn serve(a: ServeArgs) -> Result<(), Error> {
    if a.parallel == 0 {
        return Err("--parallel must be at least 1".into());
    }
    if a.threads == Some(0) {
        return Err("--threads must be at least 1".into());
    }
    if a.max_body == 0 {
        return Err("--max-body must be at least 1".into());
    }
    let api_key = a
        .api_key
        .clone()
        .or_else(|| std::env::var("TAH_API_KEY").ok().filter(|k| !k.is_empty()));
    if api_key
        .as_deref()
        .is_some_and(|k| k.is_empty() || k.contains(char::is_whitespace))
    {
        return Err("--api-key must be non-empty, without spaces".into());
    }
    let cors = match &a.cors {
        None => None,
        Some(o) => Some(
            axum::http::HeaderValue::from_str(o)
                .map_err(|_| format!("--cors '{o}': not a valid origin"))?,
        ),
    };
    let model_id: Arc<str> = a
        .model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into())
        .into();

    // The library's load and kernel lines go to stderr with the request log.
    tah::log::set_sink(Some(Arc::new(|level, msg: &str| {
        if level <= tah::log::Level::Info {
            eprintln!("tah serve: {msg}");
        }
    })));
    let model = ApiModel::load(
        &a.model,
        ModelParams {
            threads: a.threads.unwrap_or(0),
            ctx: a.ctx,
            think: a.think,
            threshold: None,
            max_depth: None,
            kv_type: a.kv_type,
        },
    )?;
    let engine = engine::Engine::start(
        model,
        engine::EngineConfig {
            parallel: a.parallel,
            ctx: a.ctx,
            queue: a.queue,
        },
    )?;
    eprintln!(
        "tah serve: {} sessions of {} tokens, queue {}",
        engine.parallel, engine.ctx, a.queue
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(http::Shared {
        engine,
        model_id,
        created: unix_now(),
        api_key,
        cors,
        max_body: a.max_body,
        timeout: (a.timeout > 0).then(|| Duration::from_secs(a.timeout)),
        shutdown: stop_rx,
    });
    // The HTTP side only parses and forwards: two threads are plenty, and
    // leave the cores to the model.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tah-http")
        .enable_all()
        .build()?;
    rt.block_on(listen(&a.host, a.port, shared, stop_tx))
}

/// Serves until SIGINT / SIGTERM, then stops taking connections, cancels
/// the running jobs and waits a little for their answers to close.
async fn listen(
    host: &str,
    port: u16,
    shared: Arc<http::Shared>,
    stop: watch::Sender<bool>,
) -> Result<(), Error> {
    let listener = tokio::net::TcpListener::bind((host, port))
        .await
        .map_err(|e| format!("cannot listen on {host}:{port}: {e}"))?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() && shared.api_key.is_none() {
        eprintln!(
            "tah serve: warning: {addr} is reachable from other machines and there is no --api-key: anyone who can connect can use the model"
        );
    }
    eprintln!("tah serve: listening on http://{addr}");

    let mut stopping = shared.shutdown.clone();
    let app = http::router(shared);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stopping.wait_for(|&s| s).await;
    });
    let mut server = std::pin::pin!(server.into_future());
    tokio::select! {
        r = &mut server => return Ok(r?),
        () = signal() => {}
    }
    eprintln!("tah serve: shutting down (a second signal stops at once)");
    let _ = stop.send(true);
    tokio::select! {
        r = &mut server => r?,
        () = signal() => eprintln!("tah serve: stopped"),
        () = tokio::time::sleep(Duration::from_secs(10)) => {
            eprintln!("tah serve: connections still open after 10 s: stopped");
        }
    }
    Ok(())
}

/// SIGINT or SIGTERM.
async fn signal() {
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// Seeds and ids: random per process and per call, no extra crate.
pub fn random_u64() -> u64 {
    use std::hash::BuildHasher;
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    std::collections::hash_map::RandomState::new().hash_one(N.fetch_add(1, Ordering::Relaxed))
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
