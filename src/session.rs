//! A `Session` is one conversation with a model: its KV cache, position, scratch
//! buffers and logits. The `Model` is shared (read-only) between sessions.
//!
//! Feeding tokens runs the TaH step of `TAH_SPEC.md` §3–4 on each chunk: depth 1
//! for every token, then, while tokens continue, the decider and the next depth
//! on the continuing ones only, adding their logits.

use crate::model::forward::{self, Capture, Scratch};
use crate::model::kv_cache::{KvCache, KvType};
use crate::model::Model;
use crate::sample::Rng;
use crate::tah::budget::Budget;
use crate::tah::decider::{self, DeciderScratch};
use crate::tah::soft_input;
use crate::tah::{TahOptions, ThinkMode, TokenInfo};
use std::fmt;
use std::sync::Arc;

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
            SessionError::BadOption(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for SessionError {}

/// The TaH settings in force for a session.
#[derive(Clone, Debug)]
pub struct Think {
    pub mode: ThinkMode,
    /// Deepest depth a token may reach (1 = base model only).
    pub max_depth: usize,
    pub threshold: f32,
    /// See [`TahOptions::hard_rate`].
    pub hard_rate: Option<f32>,
}

/// Per-token callback: `(index in the fed tokens, final logits, what happened)`.
pub type OnLogits<'a, 'b> = &'a mut (dyn FnMut(usize, &[f32], TokenInfo) + 'b);

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
    /// Logits of one deeper pass (batch × vocab); empty when max_depth is 1.
    depth_logits: Vec<f32>,
    /// Decider input: the captured hidden states (batch × layers × dim).
    hidden: Vec<f32>,
    decider: Option<DeciderScratch>,
    /// The adaptive threshold of `ThinkMode::Budget`.
    budget: Option<Budget>,
    /// Rows of the chunk still going deeper, and the ones that continue.
    active: Vec<usize>,
    next: Vec<usize>,
    positions: Vec<usize>,
    top_ids: Vec<u32>,
    top_vals: Vec<f32>,
    embd_row: Vec<f32>,
    /// Tokens consumed so far (their positions are their indices) and their depths.
    tokens: Vec<u32>,
    info: Vec<TokenInfo>,
    ctx: usize,
    /// `--hard-rate`: systematic sampling, seeded (benchmarks are repeatable).
    hard_picks: HardPicks,
}

impl Session {
    pub fn new(model: Arc<Model>, opts: &SessionOptions) -> Result<Session, SessionError> {
        let c = &model.cfg;
        let ctx = if opts.ctx == 0 {
            c.ctx_len.min(4096)
        } else {
            opts.ctx
        };
        let think = resolve_think(&model, &opts.tah)?;
        let batch = opts.batch.max(1);
        let cache = KvCache::new(
            opts.kv_type,
            c.n_layers,
            c.n_kv_heads * c.head_dim,
            ctx,
            think.max_depth,
        );
        let scratch = Scratch::new(&model, batch);
        let deep = think.max_depth > 1;
        let auto = deep && think.mode.uses_decider();
        let tah = c.tah.as_ref();
        let n_sel = tah.map_or(0, |t| t.decider_layers.len());
        let decider = match (&model.decider, auto) {
            (Some(w), true) => Some(DeciderScratch::new(w, n_sel * c.dim + c.dim)),
            _ => None,
        };
        let topk = tah.map_or(0, |t| t.input_topk.max(t.decider_topk));
        Ok(Session {
            cache,
            scratch,
            logits: vec![0.0; c.vocab],
            logits_row: None,
            chunk_logits: if deep {
                vec![0.0; batch * c.vocab]
            } else {
                Vec::new()
            },
            depth_logits: if deep {
                vec![0.0; batch * c.vocab]
            } else {
                Vec::new()
            },
            hidden: if auto {
                vec![0.0; batch * n_sel * c.dim]
            } else {
                Vec::new()
            },
            decider,
            budget: match think.mode {
                ThinkMode::Budget(r) if auto => Some(Budget::new(r, think.threshold)),
                _ => None,
            },
            active: Vec::with_capacity(batch),
            next: Vec::with_capacity(batch),
            positions: Vec::with_capacity(batch),
            top_ids: Vec::with_capacity(topk + 1),
            top_vals: Vec::with_capacity(topk + 1),
            embd_row: vec![0.0; c.dim],
            tokens: Vec::with_capacity(ctx),
            info: Vec::with_capacity(ctx),
            ctx,
            think,
            model,
            hard_picks: HardPicks::new(0x7a4),
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
        self.budget.as_ref()
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
    pub fn feed(
        &mut self,
        tokens: &[u32],
        mut on_logits: Option<OnLogits<'_, '_>>,
    ) -> Result<&[f32], SessionError> {
        self.check(tokens)?;
        let batch = self.scratch.max_rows;
        for (ci, chunk) in tokens.chunks(batch).enumerate() {
            let cb = match on_logits {
                Some(ref mut f) => Some(&mut **f as OnLogits<'_, '_>),
                None => None,
            };
            self.feed_chunk(chunk, ci * batch, cb);
        }
        Ok(self.logits())
    }

    /// Feeds one token; returns its final logits.
    pub fn decode(&mut self, token: u32) -> Result<&[f32], SessionError> {
        self.feed(&[token], None)
    }

    fn feed_chunk(
        &mut self,
        chunk: &[u32],
        first_index: usize,
        on_logits: Option<OnLogits<'_, '_>>,
    ) {
        let model = Arc::clone(&self.model);
        let c = &model.cfg;
        let (dim, vocab, n) = (c.dim, c.vocab, chunk.len());
        let start = self.tokens.len();
        let embd = model.mat(&model.token_embd);
        for (i, &t) in chunk.iter().enumerate() {
            embd.dequantize_row(t as usize, &mut self.scratch.x[i * dim..(i + 1) * dim]);
        }
        self.positions.clear();
        self.positions.extend(start..start + n);
        let deep = self.think.max_depth > 1;
        let layers: &[usize] = match (&c.tah, &self.decider) {
            (Some(t), Some(_)) => &t.decider_layers,
            _ => &[],
        };

        // Depth 1: every token.
        let mut capture = Capture {
            layers,
            out: &mut self.hidden[..n * layers.len() * dim],
        };
        let cap = if layers.is_empty() {
            None
        } else {
            Some(&mut capture)
        };
        forward::run_layers(
            &model,
            &mut self.cache,
            &mut self.scratch,
            n,
            &self.positions,
            1,
            cap,
        );
        let first_info = self.info.len();
        for _ in 0..n {
            self.info.push(TokenInfo {
                depth: 1,
                prob: f32::NAN,
            });
        }
        self.tokens.extend_from_slice(chunk);

        if !deep {
            match on_logits {
                Some(cb) => {
                    // All rows' logits, through the chunk buffer (sized on first use).
                    self.chunk_logits.resize(self.scratch.max_rows * vocab, 0.0);
                    self.active.clear();
                    self.active.extend(0..n);
                    forward::logits(
                        &model,
                        &mut self.scratch,
                        &self.active,
                        &mut self.chunk_logits,
                    );
                    for i in 0..n {
                        cb(
                            first_index + i,
                            &self.chunk_logits[i * vocab..(i + 1) * vocab],
                            self.info[first_info + i],
                        );
                    }
                    self.logits_row = Some(n - 1);
                }
                None => {
                    forward::logits(&model, &mut self.scratch, &[n - 1], &mut self.logits);
                    self.logits_row = None;
                }
            }
            return;
        }

        // Depth-1 logits of every row: the decider and the soft input need them.
        self.active.clear();
        self.active.extend(0..n);
        forward::logits(
            &model,
            &mut self.scratch,
            &self.active,
            &mut self.chunk_logits,
        );
        let tah = c.tah.as_ref().expect("deep sessions have TaH settings");
        for depth in 1..self.think.max_depth {
            // Decide which active rows continue.
            self.next.clear();
            for (j, &row) in self.active.iter().enumerate() {
                let go = match self.think.mode {
                    ThinkMode::Always => true,
                    ThinkMode::Never => false,
                    ThinkMode::Auto | ThinkMode::Budget(_) => {
                        let cum = &self.chunk_logits[row * vocab..(row + 1) * vocab];
                        soft_input::top_k(
                            cum,
                            tah.decider_topk,
                            &mut self.top_ids,
                            &mut self.top_vals,
                        );
                        let h = &self.hidden[j * layers.len() * dim..(j + 1) * layers.len() * dim];
                        let s = self
                            .decider
                            .as_mut()
                            .expect("auto sessions have decider scratch");
                        let p =
                            decider::probability(&model, tah.normalize_input, h, &self.top_vals, s);
                        if depth == 1 {
                            self.info[first_info + row].prob = p;
                        }
                        match (self.think.hard_rate, self.budget.as_mut()) {
                            (Some(rate), _) => self.hard_picks.next(rate as f64),
                            (None, Some(b)) if depth == 1 => b.decide(p),
                            _ => p > self.think.threshold,
                        }
                    }
                };
                if go {
                    self.next.push(row);
                }
            }
            if self.next.is_empty() {
                break;
            }
            std::mem::swap(&mut self.active, &mut self.next);

            // Soft inputs and positions of the continuing rows, packed in order.
            self.positions.clear();
            for (j, &row) in self.active.iter().enumerate() {
                let cum = &self.chunk_logits[row * vocab..(row + 1) * vocab];
                soft_input::top_k(cum, tah.input_topk, &mut self.top_ids, &mut self.top_vals);
                let x = &mut self.scratch.x[j * dim..(j + 1) * dim];
                soft_input::soft_input(&embd, &self.top_ids, &self.top_vals, x, &mut self.embd_row);
                self.positions.push(start + row);
                self.info[first_info + row].depth = (depth + 1) as u8;
            }
            let m = self.active.len();
            let capture_next = depth + 1 < self.think.max_depth && !layers.is_empty();
            let mut capture = Capture {
                layers,
                out: &mut self.hidden[..m * layers.len() * dim],
            };
            let cap = if capture_next {
                Some(&mut capture)
            } else {
                None
            };
            forward::run_layers(
                &model,
                &mut self.cache,
                &mut self.scratch,
                m,
                &self.positions,
                depth + 1,
                cap,
            );
            // The batch rows 0..m now hold the continuing tokens.
            self.next.clear();
            self.next.extend(0..m);
            forward::logits(
                &model,
                &mut self.scratch,
                &self.next,
                &mut self.depth_logits,
            );
            for (j, &row) in self.active.iter().enumerate() {
                let (cum, add) = (
                    &mut self.chunk_logits[row * vocab..(row + 1) * vocab],
                    &self.depth_logits[j * vocab..(j + 1) * vocab],
                );
                for (a, b) in cum.iter_mut().zip(add) {
                    *a += b;
                }
            }
        }
        if let Some(cb) = on_logits {
            for i in 0..n {
                cb(
                    first_index + i,
                    &self.chunk_logits[i * vocab..(i + 1) * vocab],
                    self.info[first_info + i],
                );
            }
        }
        self.logits_row = Some(n - 1);
    }
}

/// Which tokens `--hard-rate r` sends deeper: systematic sampling with a random
/// phase u, so the k-th decision of the session continues iff
/// ⌊u + (k+1)·r⌋ > ⌊u + k·r⌋. Any run of m decisions then holds ⌊m·r⌋ or
/// ⌈m·r⌉ picks (independent draws would give 64 tokens at r = 0.06 anywhere
/// from 1 to 8), and the count carries across `reset`, so repeated runs pick
/// other tokens.
struct HardPicks {
    phase: f64,
    decided: u64,
}

impl HardPicks {
    fn new(seed: u64) -> HardPicks {
        HardPicks {
            phase: Rng::new(seed).next_f64(),
            decided: 0,
        }
    }

    fn next(&mut self, rate: f64) -> bool {
        let k = self.decided as f64;
        self.decided += 1;
        (self.phase + (k + 1.0) * rate).floor() > (self.phase + k * rate).floor()
    }
}

fn resolve_think(model: &Model, o: &TahOptions) -> Result<Think, SessionError> {
    let tah = model.cfg.tah.as_ref();
    if let Some(t) = o.threshold {
        if !(0.0..=1.0).contains(&t) {
            return Err(SessionError::BadOption(format!(
                "threshold {t} is outside [0, 1]"
            )));
        }
    }
    if let Some(r) = o.hard_rate {
        if !(0.0..=1.0).contains(&r) {
            return Err(SessionError::BadOption(format!(
                "hard rate {r} is outside [0, 1]"
            )));
        }
    }
    if o.max_depth == Some(0) {
        return Err(SessionError::BadOption(
            "max depth must be at least 1".into(),
        ));
    }
    if let Some(d) = o
        .max_depth
        .filter(|&d| d > crate::model::forward::MAX_DEPTH)
    {
        return Err(SessionError::BadOption(format!(
            "max depth {d} is above the engine's limit of {}",
            crate::model::forward::MAX_DEPTH
        )));
    }
    let Some(t) = tah else {
        if o.max_depth.is_some_and(|d| d > 1) {
            return Err(SessionError::BadOption(
                "this model has no TaH parts: only depth 1 is possible".into(),
            ));
        }
        return Ok(Think {
            mode: ThinkMode::Never,
            max_depth: 1,
            threshold: 1.0,
            hard_rate: None,
        });
    };
    let max_depth = if o.mode == ThinkMode::Never {
        1
    } else {
        o.max_depth.unwrap_or(t.max_iter)
    };
    Ok(Think {
        mode: o.mode,
        max_depth,
        threshold: o.threshold.unwrap_or(t.threshold),
        hard_rate: o.hard_rate,
    })
}

#[cfg(test)]
mod tests {
    use super::HardPicks;

    #[test]
    fn hard_picks_hold_the_rate_in_every_window() {
        let mut h = HardPicks::new(7);
        let picks: Vec<bool> = (0..1000).map(|_| h.next(0.06)).collect();
        for m in [17, 64, 256] {
            for w in picks.windows(m) {
                let n = w.iter().filter(|&&p| p).count() as f64;
                assert!((n - m as f64 * 0.06).abs() < 1.0, "{n} picks in {m}");
            }
        }
    }
}
