//! A `Session` is one conversation with a model: its KV cache, position, scratch
//! buffers and logits. The `Model` is shared (read-only) between sessions.
//!
//! Feeding tokens runs each chunk's depth-1 pass here, then the TaH step
//! ([`crate::tah::step`], docs/TAH_SEMANTICS.md §3–4): while tokens continue,
//! the decider and the next depth on the continuing ones only, adding their
//! logits.
//!
//! Cancelling ([`CancelFlag::cancel`], from any thread) is seen between
//! chunks, between depths and between layers. A chunk is all or nothing: a
//! cancelled one is forgotten (cache slots at every depth, tokens, per-token
//! info, the TaH step's decisions), so after `feed` returns
//! [`SessionError::Cancelled`] the session holds exactly the chunks completed
//! before — a whole number of chunks of the fed tokens — and
//! [`Session::logits`] are the last completed token's. Feeding the rest then
//! gives what one uninterrupted feed would have.
//!
//! Context shift ([`Session::shift`]) forgets a range of positions and moves
//! the later tokens down without running them again: their cached keys are
//! re-rotated to the new positions (docs/TAH_SEMANTICS.md §9).

use crate::model::forward::{self, Caches, KeyRotation, Scratch};
use crate::model::kv_cache::{KvCache, KvType};
use crate::model::Model;
use crate::tah::budget::Budget;
use crate::tah::step::{Decisions, Parts, TahStep, Think};
use crate::tah::{TahOptions, TokenInfo};
mod batch;
pub use batch::Batch;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The longest context a session may have, the same as a file may declare:
/// positions stay exact in f32 RoPE angles up to 2^24, and the cache is
/// reserved (not touched) for all of it.
pub use crate::model::config::MAX_CTX;

/// The most tokens one forward pass takes (`SessionOptions::batch`): the
/// activation buffers grow with it (Qwen's chunk logits alone are 1.2 GB at
/// this size), and past a few hundred rows the matrix products gain nothing.
pub const MAX_BATCH: usize = 2048;

#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// Context length (tokens); 0 = the model's own, capped at 4096.
    pub ctx: usize,
    pub kv_type: KvType,
    /// Most tokens per forward pass in prefill (longer prompts go in chunks).
    pub batch: usize,
    pub tah: TahOptions,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            ctx: 0,
            kv_type: KvType::F16,
            batch: 64,
            tah: TahOptions::default(),
        }
    }
}

#[derive(Debug, PartialEq)]
pub enum SessionError {
    /// The context is full: no room for `need` more tokens.
    ContextFull {
        ctx: usize,
        used: usize,
        need: usize,
    },
    /// A token id outside the vocabulary.
    BadToken {
        id: u32,
        vocab: usize,
    },
    EmptyInput,
    BadOption(String),
    /// A buffer sized by the context could not be reserved.
    Memory(String),
    /// [`CancelFlag::cancel`] stopped the work; the cache holds what was
    /// completed before it.
    Cancelled,
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::ContextFull { ctx, used, need } => {
                write!(f, "context full: {used} of {ctx} tokens used, {need} more do not fit (raise --ctx)")
            }
            SessionError::BadToken { id, vocab } => {
                write!(f, "token id {id} is outside the vocabulary (size {vocab})")
            }
            SessionError::EmptyInput => write!(f, "no input tokens"),
            SessionError::BadOption(s) | SessionError::Memory(s) => f.write_str(s),
            SessionError::Cancelled => f.write_str("cancelled"),
        }
    }
}

impl std::error::Error for SessionError {}

/// Stops a session's running work from any thread: set by [`CancelFlag::cancel`],
/// seen by the session between chunks and between layers, cleared by the
/// caller that starts the next piece of work ([`CancelFlag::clear`]).
#[derive(Clone, Debug, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    pub fn clear(&self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// Per-token callback: `(index in the fed tokens, final logits, what happened)`.
pub type OnLogits<'a, 'b> = &'a mut (dyn FnMut(usize, &[f32], TokenInfo) + 'b);

/// One conversation. After a cancelled `feed` it holds the chunks completed
/// before the cancel and nothing of the one running (module docs).
pub struct Session {
    pub model: Arc<Model>,
    pub cache: KvCache,
    pub think: Think,
    scratch: Scratch,
    /// Logits of the last token fed (vocab), unless `logits_row` says where.
    logits: Vec<f32>,
    /// The row of `chunk_logits` holding the last token's logits (no copy per
    /// token); `None`: they are in `logits`.
    logits_row: Option<usize>,
    /// Cumulative logits of the current chunk (batch × vocab).
    chunk_logits: Vec<f32>,
    /// The TaH step's buffers, and this session's decisions.
    step: TahStep,
    decisions: Decisions,
    positions: Vec<usize>,
    /// Tokens consumed so far (their positions are their indices) and their depths.
    tokens: Vec<u32>,
    info: Vec<TokenInfo>,
    ctx: usize,
    cancel: CancelFlag,
}

impl Session {
    pub fn new(model: Arc<Model>, opts: &SessionOptions) -> Result<Session, SessionError> {
        let c = &model.cfg;
        if opts.ctx > MAX_CTX {
            return Err(SessionError::BadOption(format!(
                "context length {} is above the limit of {MAX_CTX} tokens",
                opts.ctx
            )));
        }
        let ctx = if opts.ctx == 0 {
            c.ctx_len.min(4096)
        } else {
            opts.ctx
        };
        let think = Think::resolve(&model, &opts.tah)?;
        let batch = opts.batch.max(1);
        opts.kv_type
            .check_head_dim(c.head_dim)
            .map_err(SessionError::BadOption)?;
        if opts.batch > MAX_BATCH {
            return Err(SessionError::BadOption(format!(
                "batch size {} is above the limit of {MAX_BATCH} tokens per forward pass",
                opts.batch
            )));
        }
        let cache = KvCache::try_new(
            opts.kv_type,
            c.n_layers,
            c.n_kv_heads * c.head_dim,
            ctx,
            think.max_depth,
        )
        .map_err(|e| SessionError::Memory(e.to_string()))?;
        let memory = |what: &str| {
            SessionError::Memory(format!(
                "cannot reserve the {what} of a {ctx}-token context (lower the context length)"
            ))
        };
        let mut tokens = Vec::new();
        tokens
            .try_reserve_exact(ctx)
            .map_err(|_| memory("token list"))?;
        let mut info = Vec::new();
        info.try_reserve_exact(ctx)
            .map_err(|_| memory("token depths"))?;
        let mut scratch = Scratch::new(&model, batch);
        if !scratch.reserve_key_angles(&model, opts.kv_type, ctx) {
            return Err(memory("key angle table"));
        }
        Ok(Session {
            cache,
            scratch,
            logits: vec![0.0; c.vocab],
            logits_row: None,
            chunk_logits: if think.deep() {
                vec![0.0; batch * c.vocab]
            } else {
                Vec::new()
            },
            step: TahStep::new(&model, &think, batch),
            decisions: Decisions::new(&think),
            positions: Vec::with_capacity(batch),
            tokens,
            info,
            ctx,
            think,
            model,
            cancel: CancelFlag::default(),
        })
    }

    pub fn ctx(&self) -> usize {
        self.ctx
    }

    /// Tokens in the cache.
    pub fn n_past(&self) -> usize {
        self.tokens.len()
    }

    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Depth and decider probability of every token consumed.
    pub fn token_info(&self) -> &[TokenInfo] {
        &self.info
    }

    /// The think-budget controller (`ThinkMode::Budget` on a TaH model).
    pub fn budget(&self) -> Option<&Budget> {
        self.decisions.budget()
    }

    /// For [`crate::session_state`]: the TaH step's state (budget, hard picks).
    pub(crate) fn decisions(&self) -> &Decisions {
        &self.decisions
    }

    /// For [`crate::session_state`], which checked a saved state against this
    /// session: the parts it restores, emptied (the logits are those of the
    /// last token fed before; feed a token for fresh ones).
    pub(crate) fn restore_parts(
        &mut self,
    ) -> (
        &mut Vec<u32>,
        &mut Vec<TokenInfo>,
        &mut KvCache,
        &mut Decisions,
    ) {
        self.truncate(0);
        (
            &mut self.tokens,
            &mut self.info,
            &mut self.cache,
            &mut self.decisions,
        )
    }

    /// Changes how the session thinks from the next token on (a server's
    /// per-request `think`): checked against the model and against the depths
    /// the cache was made with; the decisions (budget controller) start anew.
    pub fn set_think(&mut self, opts: &TahOptions) -> Result<(), SessionError> {
        let think = Think::resolve(&self.model, opts)?;
        if think.max_depth > self.cache.max_depth() {
            return Err(SessionError::BadOption(format!(
                "depth {} is deeper than this session's cache ({} depths)",
                think.max_depth,
                self.cache.max_depth()
            )));
        }
        let batch = self.scratch.max_rows;
        self.step = TahStep::new(&self.model, &think, batch);
        if think.deep() && self.chunk_logits.is_empty() {
            self.chunk_logits = vec![0.0; batch * self.model.cfg.vocab];
        }
        self.decisions = Decisions::new(&think);
        self.think = think;
        Ok(())
    }

    /// The flag that cancels this session's work (a clone shares it).
    pub fn cancel_flag(&self) -> CancelFlag {
        self.cancel.clone()
    }

    /// Forgets everything (keeps the buffers).
    pub fn reset(&mut self) {
        self.truncate(0);
    }

    /// Forgets every token from position `n` on, at every depth.
    pub fn truncate(&mut self, n: usize) {
        self.tokens.truncate(n);
        self.info.truncate(n);
        self.cache.truncate(n);
    }

    /// Context shift: forgets the tokens at positions `keep..keep + drop` (at
    /// every depth) and moves the later ones down by `drop`; their cached keys
    /// are re-rotated to the new positions, nothing is run again. The later
    /// tokens keep what they computed while the dropped ones were visible
    /// (that is the approximation of a shift). [`Session::logits`] stay the
    /// last token's.
    pub fn shift(&mut self, keep: usize, drop: usize) -> Result<(), SessionError> {
        let n = self.tokens.len();
        if keep.checked_add(drop).is_none_or(|end| end > n) {
            return Err(SessionError::BadOption(format!(
                "context shift: cannot drop {drop} tokens after the first {keep} of {n}"
            )));
        }
        if drop == 0 {
            return Ok(());
        }
        let mut rot = KeyRotation::new(&self.model.cfg);
        self.cache
            .shift(keep, drop, |row, delta| rot.rotate(row, delta));
        self.tokens.drain(keep..keep + drop);
        self.info.drain(keep..keep + drop);
        Ok(())
    }

    /// Keeps the longest cached prefix that `ids` starts with, but at most
    /// `ids.len() - 1` tokens (at least one is left to feed: generation starts
    /// from its logits), and forgets the rest; returns the number kept. A chat
    /// re-rendered each turn then feeds only what changed.
    pub fn keep_shared_prefix(&mut self, ids: &[u32]) -> usize {
        let keep = self
            .tokens
            .iter()
            .zip(ids)
            .take_while(|(a, b)| a == b)
            .count()
            .min(ids.len().saturating_sub(1));
        self.truncate(keep);
        keep
    }

    /// Logits after the last token fed.
    pub fn logits(&self) -> &[f32] {
        match self.logits_row {
            Some(r) => {
                let vocab = self.logits.len();
                &self.chunk_logits[r * vocab..(r + 1) * vocab]
            }
            None => &self.logits,
        }
    }

    fn check(&self, tokens: &[u32]) -> Result<(), SessionError> {
        if tokens.is_empty() {
            return Err(SessionError::EmptyInput);
        }
        let vocab = self.model.cfg.vocab;
        if let Some(&id) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(SessionError::BadToken { id, vocab });
        }
        if self.tokens.len() + tokens.len() > self.ctx {
            return Err(SessionError::ContextFull {
                ctx: self.ctx,
                used: self.tokens.len(),
                need: tokens.len(),
            });
        }
        Ok(())
    }

    /// Feeds `tokens` in chunks of at most the batch size and returns the final
    /// logits of the last one. `on_logits` (if given) sees every token's final
    /// logits; asking for them costs an LM-head product per token.
    ///
    /// A cancel returns [`SessionError::Cancelled`] with the completed chunks
    /// kept and the running one forgotten (see the module docs); `on_logits`
    /// has then seen the completed chunks' tokens only.
    pub fn feed(
        &mut self,
        tokens: &[u32],
        mut on_logits: Option<OnLogits<'_, '_>>,
    ) -> Result<&[f32], SessionError> {
        self.check(tokens)?;
        let batch = self.scratch.max_rows;
        for (ci, chunk) in tokens.chunks(batch).enumerate() {
            if self.cancel.is_cancelled() {
                return Err(SessionError::Cancelled);
            }
            let start = self.tokens.len();
            let cb = on_logits.as_mut().map(|f| &mut **f as OnLogits<'_, '_>);
            if let Err(e) = self.feed_chunk(chunk, ci * batch, cb) {
                // All or nothing: forget the chunk at every depth.
                self.truncate(start);
                return Err(e);
            }
        }
        Ok(self.logits())
    }

    /// Feeds one token; returns its final logits.
    pub fn decode(&mut self, token: u32) -> Result<&[f32], SessionError> {
        self.feed(&[token], None)
    }

    /// One chunk: embeddings, the depth-1 pass of every token, then (TaH) the
    /// deeper depths of the tokens that continue; the logits the caller asked for.
    /// On a cancel the caller truncates what was appended.
    fn feed_chunk(
        &mut self,
        chunk: &[u32],
        first_index: usize,
        on_logits: Option<OnLogits<'_, '_>>,
    ) -> Result<(), SessionError> {
        let model = Arc::clone(&self.model);
        let (dim, vocab, n) = (model.cfg.dim, model.cfg.vocab, chunk.len());
        let start = self.tokens.len();
        let embd = model.mat(&model.token_embd);
        for (i, &t) in chunk.iter().enumerate() {
            embd.dequantize_row(t as usize, &mut self.scratch.x[i * dim..(i + 1) * dim]);
        }
        self.positions.clear();
        self.positions.extend(start..start + n);
        let capture = self.step.capture(&model, n);
        let mut one = One {
            cache: &mut self.cache,
            think: &self.think,
            decisions: &mut self.decisions,
        };
        forward::run_layers(
            &model,
            &mut one,
            &[n],
            &mut self.scratch,
            &self.positions,
            1,
            capture,
            &self.cancel,
        )?;
        let first_info = self.info.len();
        let depth1 = TokenInfo {
            depth: 1,
            prob: f32::NAN,
        };
        self.info.extend(std::iter::repeat_n(depth1, n));
        self.tokens.extend_from_slice(chunk);

        let all_rows = self.think.deep() || on_logits.is_some();
        if !all_rows {
            // Only the last token's logits are needed.
            forward::logits(&model, &mut self.scratch, &[n - 1], &mut self.logits);
            self.logits_row = None;
            return Ok(());
        }
        // The chunk buffer is about to be overwritten and the chunk may still
        // be cancelled: the last token's logits move to `logits` (one row).
        if let Some(r) = self.logits_row.take() {
            self.logits
                .copy_from_slice(&self.chunk_logits[r * vocab..(r + 1) * vocab]);
        }
        // Every row's logits, through the chunk buffer (sized on first use when
        // the session is not deep): the decider, the soft input and the
        // callback need them.
        self.chunk_logits.resize(self.scratch.max_rows * vocab, 0.0);
        // The positions buffer is free again: it now lists the rows (all of them).
        self.positions.clear();
        self.positions.extend(0..n);
        forward::logits(
            &model,
            &mut self.scratch,
            &self.positions,
            &mut self.chunk_logits,
        );
        if self.think.deep() {
            // The positions buffer lists the rows; the step wants positions.
            self.positions.clear();
            self.positions.extend(start..start + n);
            let mut one = One {
                cache: &mut self.cache,
                think: &self.think,
                decisions: &mut self.decisions,
            };
            self.step.run(
                &model,
                &mut one,
                &[n],
                &mut self.scratch,
                &self.positions,
                &mut self.chunk_logits[..n * vocab],
                &mut self.info[first_info..],
                &self.cancel,
            )?;
        }
        if let Some(cb) = on_logits {
            for i in 0..n {
                let logits = &self.chunk_logits[i * vocab..(i + 1) * vocab];
                cb(first_index + i, logits, self.info[first_info + i]);
            }
        }
        self.logits_row = Some(n - 1);
        Ok(())
    }
}

/// One session's parts, borrowed field by field beside its buffers.
struct One<'a> {
    cache: &'a mut KvCache,
    think: &'a Think,
    decisions: &'a mut Decisions,
}

impl Caches for One<'_> {
    fn count(&self) -> usize {
        1
    }
    fn cache(&self, _: usize) -> &KvCache {
        self.cache
    }
    fn cache_mut(&mut self, _: usize) -> &mut KvCache {
        self.cache
    }
}

impl Parts for One<'_> {
    fn think(&self, _: usize) -> &Think {
        self.think
    }
    fn decisions(&mut self, _: usize) -> &mut Decisions {
        self.decisions
    }
}
