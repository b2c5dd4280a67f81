//! The engine thread of `tah serve`: owns one session per slot, takes jobs
//! from the HTTP side through a bounded queue and sends each job's tokens
//! back on the job's own channel.
//!
//! Continuous batching: each turn of the loop is one decode pass over the
//! next token of every generating slot ([`tah::session::Batch`]: the weights
//! are read once for all of them; each stream's tokens are exactly its solo
//! ones), then one chunk of one waiting prompt, so running streams keep
//! flowing while a new request's prompt goes in. Jobs join and leave between
//! passes. A new job takes the free slot whose cached tokens share the
//! longest prefix with its prompt (a chat's earlier turns), and feeds only
//! the rest.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::Instant;
use tah::api::ApiModel;
use tah::generate::{GenerateOptions, Generation, Generator, StopReason};
use tah::sample::SamplingParams;
use tah::session::{Batch, CancelFlag, Session, SessionOptions};
use tah::tah::{TahOptions, ThinkMode};
use tah::text::{ChatMessage, Tokenizer};
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
        #[allow(dead_code)] // for clients of the engine that want ids
        id: u32,
        depth: u8,
        /// Decider probability (NaN where it did not run).
        prob: f32,
    },
    Done(Finish),
    /// `status` 400: the request cannot be served as asked (prompt too long
    /// for the context, a bad setting the engine found); 500: an engine failure.
    Error {
        status: u16,
        message: String,
    },
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

/// Tokens of a waiting prompt fed per pass: `Session::feed`'s chunk, so a
/// prompt gives the same logits as `tah run`.
const PROMPT_CHUNK: usize = 64;

impl Engine {
    pub fn start(model: Arc<ApiModel>, cfg: EngineConfig) -> Result<Engine, String> {
        if cfg.parallel == 0 {
            return Err("--parallel must be at least 1".into());
        }
        let opts = SessionOptions {
            ctx: if cfg.ctx == 0 {
                model.params.ctx
            } else {
                cfg.ctx
            },
            kv_type: model.params.kv_type,
            batch: 1,
            tah: TahOptions {
                mode: model.params.think,
                threshold: model.params.threshold,
                max_depth: model.params.max_depth,
                hard_rate: None,
            },
        };
        let mut sessions = Vec::with_capacity(cfg.parallel);
        for _ in 0..cfg.parallel {
            // Every slot's cache holds the model's depths: any request may think.
            let deep = SessionOptions {
                tah: TahOptions {
                    mode: ThinkMode::Always,
                    ..opts.tah.clone()
                },
                ..opts.clone()
            };
            let mut s = Session::new(Arc::clone(&model.model), &deep).map_err(|e| e.to_string())?;
            s.set_think(&opts.tah).map_err(|e| e.to_string())?;
            sessions.push(s);
        }
        let ctx = sessions[0].ctx();
        let batch = Batch::new(
            Arc::clone(&model.model),
            PROMPT_CHUNK.max(cfg.parallel),
            ctx,
            opts.kv_type,
        )
        .map_err(|e| e.to_string())?;
        // Answers that depend on their prompt only (not on batching, chunking
        // or a reused prefix): reproducible greedy output, for the price of
        // prompt speed.
        let mut batch = batch;
        batch.set_exact(true);
        let (tx, rx) = mpsc::sync_channel::<Job>(cfg.queue);
        let m = Arc::clone(&model);
        let default_think = opts.tah;
        std::thread::Builder::new()
            .name("tah-engine".into())
            .spawn(move || {
                let mut eng = Loop {
                    model: &m,
                    tok: m.model.tokenizer.as_ref(),
                    sessions,
                    slots: Vec::new(),
                    batch,
                    default_think,
                    never: CancelFlag::default(),
                    parts: Vec::new(),
                    tokens: Vec::new(),
                    clock: 0,
                };
                eng.slots = (0..eng.sessions.len()).map(|_| Slot::default()).collect();
                m.install(|| eng.run(rx));
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

#[derive(Default)]
struct Slot<'t> {
    active: Option<Active<'t>>,
    /// When the slot was last given a job (free slots are reused
    /// least-recently first when no cached prefix decides).
    used: u64,
}

struct Active<'t> {
    job: Job,
    gen: Generator<'t>,
    /// Prompt tokens still to feed (after the reused prefix).
    pending: Vec<u32>,
    fed: usize,
    prompt_tokens: usize,
    cached_tokens: usize,
    t0: Instant,
}

struct Loop<'t> {
    model: &'t ApiModel,
    tok: Option<&'t Tokenizer>,
    sessions: Vec<Session>,
    slots: Vec<Slot<'t>>,
    batch: Batch,
    default_think: TahOptions,
    /// Passes are never cancelled as a whole: a job's cancel ends it between passes.
    never: CancelFlag,
    parts: Vec<usize>,
    tokens: Vec<u32>,
    clock: u64,
}

impl<'t> Loop<'t> {
    fn run(&mut self, rx: Receiver<Job>) {
        loop {
            // A panic (a bug) fails the jobs in flight, never the server.
            match catch_unwind(AssertUnwindSafe(|| self.turn(&rx))) {
                Ok(true) => {}
                Ok(false) => return, // the server is gone
                Err(_) => {
                    for (k, slot) in self.slots.iter_mut().enumerate() {
                        if let Some(a) = slot.active.take() {
                            fail(
                                &a.job,
                                500,
                                "internal error in the engine (the request was dropped)",
                            );
                        }
                        self.sessions[k].reset();
                    }
                }
            }
        }
    }

    /// One turn: take new jobs while slots are free (sleeping on the queue
    /// when idle), end the cancelled ones, one decode pass, one prompt chunk.
    /// False when the queue's sender is gone.
    fn turn(&mut self, rx: &Receiver<Job>) -> bool {
        while self.slots.iter().any(|s| s.active.is_none()) {
            let idle = self.slots.iter().all(|s| s.active.is_none());
            let job = if idle {
                match rx.recv() {
                    Ok(j) => j,
                    Err(_) => return false,
                }
            } else {
                match rx.try_recv() {
                    Ok(j) => j,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return false,
                }
            };
            self.admit(job);
        }
        self.reap();
        self.decode_pass();
        self.prompt_pass();
        true
    }

    /// Prepares `job` in the free slot that shares the longest cached prefix
    /// with its prompt.
    fn admit(&mut self, job: Job) {
        let ids = match self.prompt_ids(&job.prompt) {
            Ok(ids) => ids,
            Err(e) => return fail(&job, 400, &e),
        };
        let ctx = self.sessions[0].ctx();
        if ids.is_empty() {
            return fail(&job, 400, "the prompt is empty");
        }
        if ids.len() >= ctx {
            return fail(
                &job,
                400,
                &format!(
                    "the prompt ({} tokens) does not fit the context ({ctx} tokens) with room to answer",
                    ids.len()
                ),
            );
        }
        let shared = |s: &Session| {
            s.tokens()
                .iter()
                .zip(&ids)
                .take_while(|(a, b)| a == b)
                .count()
        };
        let Some(k) = (0..self.slots.len())
            .filter(|&k| self.slots[k].active.is_none())
            .max_by_key(|&k| (shared(&self.sessions[k]), u64::MAX - self.slots[k].used))
        else {
            return fail(&job, 503, "no free slot");
        };
        let session = &mut self.sessions[k];
        let think = TahOptions {
            mode: job.think.unwrap_or(self.default_think.mode),
            ..self.default_think.clone()
        };
        if let Err(e) = session.set_think(&think) {
            return fail(&job, 400, &e.to_string());
        }
        // The think budget's controller decides every token from the first
        // on, so its state is that of the whole prompt: no reuse under it.
        let keep = match think.mode {
            ThinkMode::Budget(_) => {
                session.reset();
                0
            }
            _ => session.keep_shared_prefix(&ids),
        };
        let pending = ids[keep..].to_vec();
        let room = ctx - session.n_past() - pending.len();
        let opts = GenerateOptions {
            max_tokens: job.max_tokens.unwrap_or(room).min(room + 1),
            sampling: job.sampling,
            stop_at_eog: true,
            logit_bias: job.logit_bias.clone(),
            stop: job.stop.clone(),
            context_shift: None,
        };
        let gen = match Generator::new(session, self.tok, &pending, &opts) {
            Ok(g) => g,
            Err(e) => return fail(&job, 400, &e.to_string()),
        };
        self.clock += 1;
        self.slots[k].used = self.clock;
        self.slots[k].active = Some(Active {
            job,
            gen,
            prompt_tokens: ids.len(),
            cached_tokens: keep,
            pending,
            fed: 0,
            t0: Instant::now(),
        });
    }

    fn prompt_ids(&self, p: &Prompt) -> Result<Vec<u32>, String> {
        let tok = self.tok.ok_or("the model has no tokenizer")?;
        match p {
            Prompt::Chat(messages) => {
                let tmpl = self
                    .model
                    .model
                    .chat_template
                    .as_ref()
                    .ok_or("the model has no chat template: use /v1/completions")?;
                tmpl.encode(tok, messages, true, None, true)
                    .map_err(|e| e.to_string())
            }
            Prompt::Text(t) => tok.encode_with(t, true, false).map_err(|e| e.to_string()),
        }
    }

    /// Ends the jobs whose client went away or whose time ran out.
    fn reap(&mut self) {
        for (k, slot) in self.slots.iter_mut().enumerate() {
            let gone = slot
                .active
                .as_ref()
                .is_some_and(|a| a.job.cancel.is_cancelled() || a.job.events.is_closed());
            if gone {
                let mut a = slot.active.take().expect("checked");
                a.gen.cancelled();
                finish(a, &self.sessions[k]);
            }
        }
    }

    /// The next token of every slot that is generating, in one pass.
    fn decode_pass(&mut self) {
        self.parts.clear();
        self.tokens.clear();
        for (k, slot) in self.slots.iter_mut().enumerate() {
            let mut part = 0;
            if let Some(a) = slot.active.as_mut().filter(|a| a.pending.is_empty()) {
                match a.gen.next_token(&mut self.sessions[k]) {
                    Ok(Some(t)) => {
                        self.tokens.push(t);
                        part = 1;
                    }
                    Ok(None) => finish(slot.active.take().expect("active"), &self.sessions[k]),
                    Err(e) => {
                        fail(&a.job, 500, &e.to_string());
                        slot.active = None;
                    }
                }
            }
            self.parts.push(part);
        }
        if self.tokens.is_empty() {
            return;
        }
        if let Err(e) = self
            .batch
            .feed(&mut self.sessions, &self.parts, &self.tokens, &self.never)
        {
            for (k, slot) in self.slots.iter_mut().enumerate() {
                if self.parts[k] > 0 {
                    if let Some(a) = slot.active.take() {
                        fail(&a.job, 500, &e.to_string());
                    }
                }
            }
            return;
        }
        let tok = self.tok;
        for (k, slot) in self.slots.iter_mut().enumerate() {
            if self.parts[k] == 0 {
                continue;
            }
            let Some(a) = slot.active.as_mut() else {
                continue;
            };
            let events = &a.job.events;
            a.gen.token_fed(&self.sessions[k], &mut |e| {
                let mut text = e.piece;
                if let Some(t) = tok.filter(|t| t.is_eog(e.id)) {
                    // The end token's own text is not part of the answer.
                    if let Some(own) = t.token_text(e.id) {
                        text = text.strip_suffix(own.as_str()).unwrap_or(text);
                    }
                    if text.is_empty() {
                        return true;
                    }
                }
                events
                    .send(Event::Token {
                        text: text.to_string(),
                        id: e.id,
                        depth: e.depth,
                        prob: e.prob,
                    })
                    .is_ok()
            });
        }
    }

    /// One chunk of the prompt of the slot that has waited longest.
    fn prompt_pass(&mut self) {
        let Some(k) = (0..self.slots.len())
            .filter(|&k| {
                self.slots[k]
                    .active
                    .as_ref()
                    .is_some_and(|a| !a.pending.is_empty())
            })
            .min_by_key(|&k| self.slots[k].used)
        else {
            return;
        };
        let a = self.slots[k].active.as_mut().expect("filtered");
        let n = a.pending.len().min(PROMPT_CHUNK);
        self.parts.clear();
        self.parts.resize(self.sessions.len(), 0);
        self.parts[k] = n;
        let r = self.batch.feed(
            &mut self.sessions,
            &self.parts,
            &a.pending[..n],
            &self.never,
        );
        if let Err(e) = r {
            fail(&a.job, 400, &e.to_string());
            self.slots[k].active = None;
            return;
        }
        a.pending.drain(..n);
        a.fed += n;
        if a.pending.is_empty() {
            a.gen
                .prompt_fed(&self.sessions[k], false, a.t0.elapsed().as_secs_f64());
        }
    }
}

fn fail(job: &Job, status: u16, message: &str) {
    let _ = job.events.send(Event::Error {
        status,
        message: message.to_string(),
    });
}

/// Sends a finished job's summary.
fn finish(a: Active, session: &Session) {
    let g: Generation = a.gen.finish(session);
    let reason = match g.stop {
        StopReason::Eog | StopReason::StopString => FinishReason::Stop,
        StopReason::MaxTokens | StopReason::ContextFull => FinishReason::Length,
        StopReason::Cancelled | StopReason::Stopped => FinishReason::Cancelled,
    };
    let s = &g.stats;
    let _ = a.job.events.send(Event::Done(Finish {
        reason,
        prompt_tokens: a.prompt_tokens,
        cached_tokens: a.cached_tokens,
        completion_tokens: s.generated_tokens,
        tokens_per_depth: s.tokens_per_depth.clone(),
        hard_rate: s.hard_rate,
        depths: a.job.want_depths.then(|| g.depths.clone()),
        probs: a.job.want_depths.then(|| g.probs.clone()),
    }));
}
