//! One submitted job seen from the HTTP side: its events, its time limit, the
//! server's shutdown, and the cancel that must reach the engine whatever way
//! the request ends (answer sent, client gone, handler dropped, panic).

use super::engine::{Engine, Event, Job};
use super::openai::ApiError;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tah::session::CancelFlag;
use tokio::sync::{mpsc, watch};

/// How long a cancelled job gets to report its end (and its usage) before
/// the answer is closed without it.
const GRACE: Duration = Duration::from_secs(2);

/// The one log line of a request, printed when the last holder drops it: the
/// middleware for plain answers, the response stream for streamed ones (so
/// the line has the tokens and the whole time).
pub struct ReqLog {
    method: String,
    path: String,
    start: Instant,
    /// The answer's status; 499 (nginx's "client closed request") until
    /// one is made, so a client that left before it shows as such.
    pub status: AtomicU16,
    pub tokens: AtomicUsize,
    note: Mutex<Option<String>>,
}

impl ReqLog {
    pub fn new(method: &str, path: &str) -> ReqLog {
        ReqLog {
            method: method.to_string(),
            path: path.to_string(),
            start: Instant::now(),
            status: AtomicU16::new(499),
            tokens: AtomicUsize::new(0),
            note: Mutex::new(None),
        }
    }

    /// Adds a word on how the request ended ("timeout", "client gone").
    pub fn note(&self, s: impl Into<String>) {
        // Never held across an await; a poisoned lock still holds a string.
        *self.note.lock().unwrap_or_else(|e| e.into_inner()) = Some(s.into());
    }
}

impl Drop for ReqLog {
    fn drop(&mut self) {
        let note = self
            .note
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        eprintln!(
            "tah serve: {} {} {} {} tok {} ms{note}",
            self.method,
            self.path,
            self.status.load(Ordering::Relaxed),
            self.tokens.load(Ordering::Relaxed),
            self.start.elapsed().as_millis(),
        );
    }
}

/// A job in the engine. Dropping it before the job's end cancels the job:
/// the response stream or handler future owns it, so a client that goes
/// away frees its slot at once.
pub struct Run {
    rx: mpsc::UnboundedReceiver<Event>,
    cancel: CancelFlag,
    /// The end (`Done` / `Error`) arrived: nothing to cancel.
    ended: bool,
    deadline: Option<tokio::time::Instant>,
    shutdown: watch::Receiver<bool>,
    /// The time limit passed and the job was cancelled.
    pub timed_out: bool,
    /// The server is shutting down and the job was cancelled.
    pub shut: bool,
    pub log: Arc<ReqLog>,
}

impl Run {
    /// Submits `job`, whose events come on `rx` and whose cancel flag is
    /// `cancel`; a full queue is a 503.
    pub fn submit(
        engine: &Engine,
        job: Job,
        rx: mpsc::UnboundedReceiver<Event>,
        timeout: Option<Duration>,
        shutdown: watch::Receiver<bool>,
        log: Arc<ReqLog>,
    ) -> Result<Run, ApiError> {
        let cancel = job.cancel.clone();
        engine.submit(job).map_err(|_| ApiError::busy())?;
        Ok(Run {
            rx,
            cancel,
            ended: false,
            deadline: timeout.map(|t| tokio::time::Instant::now() + t),
            shutdown,
            timed_out: false,
            shut: false,
            log,
        })
    }

    /// The job's next event; `None` once it has ended, or when it was
    /// cancelled (time limit, shutdown) and did not report its end in time.
    pub async fn next(&mut self) -> Option<Event> {
        if self.ended {
            return None;
        }
        loop {
            let deadline = self.deadline;
            tokio::select! {
                biased;
                ev = self.rx.recv() => {
                    match &ev {
                        Some(Event::Token { .. }) => {
                            self.log.tokens.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(Event::Done(f)) => {
                            self.log.tokens.store(f.completion_tokens, Ordering::Relaxed);
                            self.ended = true;
                        }
                        Some(Event::Error { message, .. }) => {
                            self.log.note(format!("engine: {message}"));
                            self.ended = true;
                        }
                        // The engine dropped the job without an end.
                        None => self.ended = true,
                    }
                    return ev;
                }
                () = sleep_until(deadline), if deadline.is_some() => {
                    if self.timed_out || self.shut {
                        // Cancelled and the grace is over.
                        self.ended = true;
                        return None;
                    }
                    self.timed_out = true;
                    self.log.note("timeout: cancelled");
                    self.stop();
                }
                r = self.shutdown.changed(), if !self.shut => {
                    // An error means the server is gone: shut down as well.
                    if r.is_err() || *self.shutdown.borrow() {
                        self.shut = true;
                        self.log.note("shutdown: cancelled");
                        self.stop();
                    }
                }
            }
        }
    }

    /// Cancels the job and leaves it the grace period to say it ended.
    fn stop(&mut self) {
        self.cancel.cancel();
        self.deadline = Some(tokio::time::Instant::now() + GRACE);
    }
}

async fn sleep_until(d: Option<tokio::time::Instant>) {
    match d {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if !self.ended {
            self.cancel.cancel();
            self.log.note("client gone: cancelled");
        }
    }
}
