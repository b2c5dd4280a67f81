//! Library log messages (model loading, choices made, warnings) go to a sink the
//! embedding app sets — the C ABI's `tah_set_log_callback`, Java's logger, the
//! CLI's stderr. With no sink set the library is silent: it never writes to the
//! host process's stderr on its own.

use std::sync::{Arc, RwLock};

/// How much a message matters (the C ABI's `TAH_LOG_*` values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(i32)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
}

/// Where messages go; it may be called from any thread.
pub type Sink = Arc<dyn Fn(Level, &str) + Send + Sync>;

static SINK: RwLock<Option<Sink>> = RwLock::new(None);

/// Sets (or with `None` removes) the process-wide sink.
pub fn set_sink(sink: Option<Sink>) {
    // A poisoned lock only means a sink panicked; the slot itself is fine.
    *SINK.write().unwrap_or_else(|e| e.into_inner()) = sink;
}

/// Sends a message to the sink, if one is set.
pub fn emit(level: Level, msg: &str) {
    let sink = SINK.read().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(f) = sink {
        f(level, msg);
    }
}
