//! The engine thread of `tah serve`: owns the sessions (slots), takes jobs from
//! the HTTP side through a bounded queue and sends each job's tokens back on
//! the job's own channel.
//!
//! INTERFACE (the HTTP side depends only on the pub items below).

use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use tah::api::{ApiModel, GenerateParams, SessionParams};
use tah::sample::SamplingParams;
use tah::session::CancelFlag;
use tah::tah::ThinkMode;
use tah::text::ChatMessage;
use tokio::sync::mpsc::UnboundedSender;

/// What to generate from.
pub enum Prompt {
    /// Rendered with the model's chat template, generation prompt added.
    Chat(Vec<ChatMessage>),
    /// Plain text (the completions endpoint), BOS added where the model wants one.
    Text(String),
}

/// One request, validated by the HTTP side.
pub struct Job {
    pub prompt: Prompt,
    /// Most new tokens; `None` = until the context is full.
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    pub logit_bias: Vec<(u32, f32)>,
    pub stop: Vec<String>,
    /// `None` = the server's `--think`.
    pub think: Option<ThinkMode>,
    /// Send each token's depth and decider probability in the final summary.
    pub want_depths: bool,
    pub events: UnboundedSender<Event>,
    /// Set by the HTTP side when the client goes away or the time limit passes.
    pub cancel: CancelFlag,
}

/// What the engine sends back for a job, in order: `Token`s, then one `Done`
/// or one `Error`.
#[derive(Debug)]
pub enum Event {
    Token {
        text: String,
        id: u32,
        depth: u8,
        /// Decider probability (NaN where it did not run).
        prob: f32,
    },
    Done(Finish),
    /// `status` 400: the request cannot be served as asked (prompt too long
    /// for the context, a bad setting the engine found); 500: an engine failure.
    Error { status: u16, message: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// End-of-generation token or a stop string.
    Stop,
    /// `max_tokens` or the context.
    Length,
    /// The job's cancel flag.
    Cancelled,
}

#[derive(Clone, Debug)]
pub struct Finish {
    pub reason: FinishReason,
    /// The whole prompt, in tokens, and how many of them were already cached.
    pub prompt_tokens: usize,
    pub cached_tokens: usize,
    pub completion_tokens: usize,
    /// Generated tokens whose deepest pass was depth i+1.
    pub tokens_per_depth: Vec<usize>,
    /// Share of generated tokens that ran depth ≥ 2.
    pub hard_rate: f64,
    /// Per generated token (when `want_depths`): depth, decider probability.
    pub depths: Option<Vec<u8>>,
    pub probs: Option<Vec<Option<f32>>>,
}

pub struct EngineConfig {
    /// Concurrent sessions.
    pub parallel: usize,
    /// Context per session.
    pub ctx: usize,
    /// Jobs waiting for a slot before `submit` refuses.
    pub queue: usize,
}

/// The queue is full: answer 503.
#[derive(Debug)]
pub struct Busy;

#[derive(Clone)]
pub struct Engine {
    tx: SyncSender<Job>,
    pub model: Arc<ApiModel>,
    pub ctx: usize,
    pub parallel: usize,
}

impl Engine {
    pub fn start(model: Arc<ApiModel>, cfg: EngineConfig) -> Result<Engine, String> {
        let (tx, rx) = mpsc::sync_channel::<Job>(cfg.queue);
        let mut session = tah::api::ApiSession::new(
            Arc::clone(&model),
            &SessionParams {
                ctx: cfg.ctx,
                ..SessionParams::default()
            },
        )?;
        let ctx = session.session().ctx();
        std::thread::Builder::new()
            .name("tah-engine".into())
            .spawn(move || {
                for job in rx {
                    run_one(&mut session, job);
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(Engine {
            tx,
            model,
            ctx,
            parallel: cfg.parallel,
        })
    }

    pub fn submit(&self, job: Job) -> Result<(), Busy> {
        match self.tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(Busy),
        }
    }
}

// Placeholder engine: one session, one job at a time (replaced by the batched one).
fn run_one(s: &mut tah::api::ApiSession, job: Job) {
    let fail = |m: String| {
        let _ = job.events.send(Event::Error { status: 400, message: m });
    };
    let queued = match &job.prompt {
        Prompt::Chat(m) => s.chat(m, true, None),
        Prompt::Text(t) => {
            s.reset();
            s.prompt_text(t, true, false)
        }
    };
    let queued = match queued {
        Ok(n) => n,
        Err(e) => return fail(e),
    };
    let total = s.n_tokens();
    let params = GenerateParams {
        max_tokens: job.max_tokens.unwrap_or(s.session().ctx()),
        sampling: job.sampling,
        logit_bias: job.logit_bias.clone(),
        stop: job.stop.clone(),
    };
    job.cancel.clear();
    let mut depths = Vec::new();
    let r = s.generate(&params, &mut |p| {
        depths.push(p.depth);
        let _ = job.events.send(Event::Token {
            text: p.text.to_string(),
            id: p.id,
            depth: p.depth,
            prob: f32::NAN,
        });
        !job.cancel.is_cancelled() && !job.events.is_closed()
    });
    if let Err(e) = r {
        return fail(e);
    }
    let st = s.stats();
    let mut per = vec![0usize; 2];
    for &d in &depths {
        per[(d as usize).clamp(1, 2) - 1] += 1;
    }
    let reason = match st.stop {
        Some(tah::generate::StopReason::MaxTokens | tah::generate::StopReason::ContextFull) => {
            FinishReason::Length
        }
        Some(tah::generate::StopReason::Cancelled | tah::generate::StopReason::Stopped) => {
            FinishReason::Cancelled
        }
        _ => FinishReason::Stop,
    };
    let _ = job.events.send(Event::Done(Finish {
        reason,
        prompt_tokens: total,
        cached_tokens: total - queued,
        completion_tokens: st.generated_tokens,
        tokens_per_depth: per,
        hard_rate: st.hard_rate,
        depths: job.want_depths.then(|| depths.clone()),
        probs: job.want_depths.then(|| vec![None; depths.len()]),
    }));
}
