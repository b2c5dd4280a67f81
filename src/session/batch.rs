//! Batched decoding: one forward pass over the next tokens of several
//! sessions (continuous batching, as a server runs its concurrent requests).
//! Decode is memory-bound — every weight is read once per forward pass — so
//! sessions stepped together share that read: the matrix products run over
//! all their rows at once, and only the cache writes and attention are per
//! session. At depth ≥ 2 the hard tokens of all sessions run together too.
//!
//! A session's result is the same as feeding it alone (the products are
//! row-independent; the same kernels run), so a batched greedy stream gives
//! exactly its solo tokens.

use super::{Session, SessionError};
use crate::model::forward::{self, Caches, Scratch};
use crate::model::kv_cache::{KvCache, KvType};
use crate::model::Model;
use crate::session::CancelFlag;
use crate::tah::step::{Decisions, Parts, TahStep, Think};
use crate::tah::{TahOptions, TokenInfo};
use std::sync::Arc;

/// The buffers of batched forward passes of up to `max_rows` rows in all,
/// for sessions of one model with one KV cache type.
pub struct Batch {
    model: Arc<Model>,
    scratch: Scratch,
    step: TahStep,
    /// (rows × vocab) the rows' logits.
    logits: Vec<f32>,
    positions: Vec<usize>,
    rows: Vec<usize>,
    info: Vec<TokenInfo>,
    /// The sessions taking part in the current pass, and their row counts.
    members: Vec<usize>,
    counts: Vec<usize>,
    kv_type: KvType,
    ctx: usize,
    /// Every pass row-wise ([`Batch::set_exact`]).
    exact: bool,
}

impl Batch {
    /// Buffers for passes of up to `max_rows` rows over sessions of `model`
    /// with `kv_type` caches of at most `ctx` positions.
    pub fn new(
        model: Arc<Model>,
        max_rows: usize,
        ctx: usize,
        kv_type: KvType,
    ) -> Result<Batch, SessionError> {
        if max_rows == 0 || max_rows > super::MAX_BATCH {
            return Err(SessionError::BadOption(format!(
                "batch of {max_rows} rows: give 1 to {}",
                super::MAX_BATCH
            )));
        }
        // The deepest settings the model allows: any session's fit.
        let think = Think::resolve(&model, &TahOptions::default())?;
        let mut scratch = Scratch::new(&model, max_rows);
        if !scratch.reserve_key_angles(&model, kv_type, ctx) {
            return Err(SessionError::Memory(format!(
                "cannot reserve the key angle table of a {ctx}-token context"
            )));
        }
        let vocab = model.cfg.vocab;
        Ok(Batch {
            step: TahStep::new(&model, &think, max_rows),
            scratch,
            logits: vec![0.0; max_rows * vocab],
            positions: Vec::with_capacity(max_rows),
            rows: Vec::with_capacity(max_rows),
            info: Vec::with_capacity(max_rows),
            members: Vec::with_capacity(max_rows),
            counts: Vec::with_capacity(max_rows),
            kv_type,
            ctx,
            exact: false,
            model,
        })
    }

    /// Exact mode: prompt chunks too are computed row by row as decoding
    /// computes them (the one-row kernels), so every token's numbers depend
    /// on the tokens before it only — not on how a prompt was cut into
    /// chunks, on which of its tokens came from a cache reused from an
    /// earlier request, or on who shared the pass. A server's greedy answer
    /// is then a function of its prompt alone. Costs prompt speed: the
    /// panel products are not used.
    pub fn set_exact(&mut self, exact: bool) {
        self.exact = exact;
    }

    /// Most rows (tokens of all sessions) in one pass.
    pub fn max_rows(&self) -> usize {
        self.scratch.max_rows
    }

    /// One forward pass: `sessions[k]` is fed the next `parts[k]` tokens of
    /// `tokens` (0: it sits this pass out). Afterwards each fed session holds
    /// its tokens, their depths, and the logits of its last one, as
    /// [`Session::feed`] of the same tokens would leave it: exactly so for a
    /// decode pass (one token each) and for a pass of one session (fed as
    /// `Session::feed` chunks it); a pass mixing several sessions' chunks
    /// agrees up to the rounding of the prefill products.
    ///
    /// All or nothing: on an error (a bad token, a full context, `cancel`)
    /// no session has changed.
    pub fn feed(
        &mut self,
        sessions: &mut [Session],
        parts: &[usize],
        tokens: &[u32],
        cancel: &CancelFlag,
    ) -> Result<(), SessionError> {
        let n: usize = parts.iter().sum();
        if parts.len() != sessions.len() || n != tokens.len() {
            return Err(SessionError::BadOption(format!(
                "batch: {} sessions, {} token counts adding up to {n}, {} tokens",
                sessions.len(),
                parts.len(),
                tokens.len()
            )));
        }
        if n == 0 {
            return Err(SessionError::EmptyInput);
        }
        if n > self.max_rows() {
            return Err(SessionError::BadOption(format!(
                "batch of {n} tokens is above its {} rows",
                self.max_rows()
            )));
        }
        self.members.clear();
        self.counts.clear();
        self.positions.clear();
        let mut at = 0;
        for (k, (s, &m)) in sessions.iter().zip(parts).enumerate() {
            let own = &tokens[at..at + m];
            at += m;
            if m == 0 {
                continue;
            }
            if !Arc::ptr_eq(&s.model, &self.model) || s.cache.ty != self.kv_type {
                return Err(SessionError::BadOption(
                    "batch: a session of another model or KV cache type".into(),
                ));
            }
            if s.ctx > self.ctx {
                return Err(SessionError::BadOption(format!(
                    "batch: a session's context ({}) is above the batch's ({})",
                    s.ctx, self.ctx
                )));
            }
            s.check(own)?;
            self.members.push(k);
            self.counts.push(m);
            self.positions.extend(s.n_past()..s.n_past() + m);
        }
        let r = self.run(sessions, tokens, cancel);
        if r.is_err() {
            // The tokens were not recorded yet: cut the caches back to them.
            for &k in &self.members {
                let s = &mut sessions[k];
                s.cache.truncate(s.tokens.len());
            }
        }
        r
    }

    fn run(
        &mut self,
        sessions: &mut [Session],
        tokens: &[u32],
        cancel: &CancelFlag,
    ) -> Result<(), SessionError> {
        let model = Arc::clone(&self.model);
        let (dim, vocab, n) = (model.cfg.dim, model.cfg.vocab, tokens.len());
        let embd = model.mat(&model.token_embd);
        for (i, &t) in tokens.iter().enumerate() {
            embd.dequantize_row(t as usize, &mut self.scratch.x[i * dim..(i + 1) * dim]);
        }
        let deep = self.members.iter().any(|&k| sessions[k].think.deep());
        // A decode pass (one token per session) gives each session exactly
        // what decoding alone gives it: no panel products, whose rounding
        // differs from a single row's (logits off by up to ~1 on a Q4_1
        // model, enough to change greedy tokens).
        self.scratch.lin.mm.rowwise = self.exact || self.counts.iter().all(|&m| m == 1);
        let capture = self.step.capture(&model, n);
        let mut members = Members {
            sessions,
            idx: &self.members,
        };
        forward::run_layers(
            &model,
            &mut members,
            &self.counts,
            &mut self.scratch,
            &self.positions,
            1,
            capture,
            cancel,
        )?;
        // The rows whose logits are needed: every row when a session thinks
        // deeper (the decider and the soft input read them), else each
        // session's last.
        self.rows.clear();
        if deep {
            self.rows.extend(0..n);
        } else {
            let mut end = 0;
            for &m in &self.counts {
                end += m;
                self.rows.push(end - 1);
            }
        }
        forward::logits(&model, &mut self.scratch, &self.rows, &mut self.logits);
        let depth1 = TokenInfo {
            depth: 1,
            prob: f32::NAN,
        };
        self.info.clear();
        self.info.resize(n, depth1);
        if deep {
            self.step.run(
                &model,
                &mut members,
                &self.counts,
                &mut self.scratch,
                &self.positions,
                &mut self.logits[..n * vocab],
                &mut self.info,
                cancel,
            )?;
        }
        // Hand each session its tokens, their depths and its last logits.
        let (mut at, mut j) = (0, 0);
        for (&k, &m) in self.members.iter().zip(&self.counts) {
            let s = &mut members.sessions[k];
            s.tokens.extend_from_slice(&tokens[at..at + m]);
            s.info.extend_from_slice(&self.info[at..at + m]);
            // Row of its last token among the rows with logits.
            let r = if deep { at + m - 1 } else { j };
            s.logits
                .copy_from_slice(&self.logits[r * vocab..(r + 1) * vocab]);
            s.logits_row = None;
            at += m;
            j += 1;
        }
        Ok(())
    }
}

/// The sessions of a batched pass that take part in it (`idx`), as the
/// forward pass and the TaH step see them.
struct Members<'a> {
    sessions: &'a mut [Session],
    idx: &'a [usize],
}

impl Caches for Members<'_> {
    fn count(&self) -> usize {
        self.idx.len()
    }
    fn cache(&self, k: usize) -> &KvCache {
        &self.sessions[self.idx[k]].cache
    }
    fn cache_mut(&mut self, k: usize) -> &mut KvCache {
        &mut self.sessions[self.idx[k]].cache
    }
}

impl Parts for Members<'_> {
    fn think(&self, k: usize) -> &Think {
        &self.sessions[self.idx[k]].think
    }
    fn decisions(&mut self, k: usize) -> &mut Decisions {
        &mut self.sessions[self.idx[k]].decisions
    }
}
