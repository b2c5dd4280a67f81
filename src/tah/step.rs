//! The TaH step on one chunk of tokens, after their depth-1 pass
//! (docs/TAH_SEMANTICS.md §3–4): while tokens continue, decide which rows go
//! one depth further, run that depth on them only, and add its logits to
//! theirs. [`crate::session::Session::feed`] drives it chunk by chunk.
//!
//! A cancel ([`CancelFlag`]) is seen between depths and between layers; the
//! step then puts its own state (the budget controller, the hard-rate picks)
//! back as it was before the chunk, and the session truncates the cache.

use super::budget::Budget;
use super::decider::{self, DeciderScratch};
use super::soft_input;
use super::{TahOptions, ThinkMode, TokenInfo};
use crate::model::forward::{self, Caches, Capture, Scratch, MAX_DEPTH};
use crate::model::Model;
use crate::sample::Rng;
use crate::session::{CancelFlag, SessionError};

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

impl Think {
    /// The settings a session runs with: the caller's options over the file's.
    pub fn resolve(model: &Model, o: &TahOptions) -> Result<Think, SessionError> {
        let bad = |s: String| Err(SessionError::BadOption(s));
        if let Some(t) = o.threshold.filter(|t| !(0.0..=1.0).contains(t)) {
            return bad(format!("threshold {t} is outside [0, 1]"));
        }
        if let Some(r) = o.hard_rate.filter(|r| !(0.0..=1.0).contains(r)) {
            return bad(format!("hard rate {r} is outside [0, 1]"));
        }
        if o.max_depth == Some(0) {
            return bad("max depth must be at least 1".into());
        }
        if let Some(d) = o.max_depth.filter(|&d| d > MAX_DEPTH) {
            return bad(format!(
                "max depth {d} is above the engine's limit of {MAX_DEPTH}"
            ));
        }
        let Some(t) = model.cfg.tah.as_ref() else {
            if o.max_depth.is_some_and(|d| d > 1) {
                return bad("this model has no TaH parts: only depth 1 is possible".into());
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

    /// Whether tokens can go deeper than depth 1.
    pub fn deep(&self) -> bool {
        self.max_depth > 1
    }

    /// Whether the decider runs.
    pub fn uses_decider(&self) -> bool {
        self.deep() && self.mode.uses_decider()
    }
}

/// What a session's step decides with beyond the decider's output: the
/// adaptive threshold of `ThinkMode::Budget` and the `--hard-rate` picker.
/// Saved before each chunk so that a cancelled chunk leaves no decision behind.
#[derive(Clone)]
pub struct Decisions {
    budget: Option<Budget>,
    saved_budget: Option<Budget>,
    /// `--hard-rate`: systematic sampling, seeded (benchmarks are repeatable).
    hard_picks: HardPicks,
    saved_picks: u64,
}

impl Decisions {
    pub fn new(think: &Think) -> Decisions {
        Decisions {
            budget: match think.mode {
                ThinkMode::Budget(r) if think.uses_decider() => {
                    Some(Budget::new(r, think.threshold))
                }
                _ => None,
            },
            saved_budget: None,
            hard_picks: HardPicks::new(0x7a4),
            saved_picks: 0,
        }
    }

    /// The think-budget controller (`ThinkMode::Budget` on a TaH model).
    pub fn budget(&self) -> Option<&Budget> {
        self.budget.as_ref()
    }

    /// For saved sessions: the controller, writable.
    pub(crate) fn budget_mut(&mut self) -> Option<&mut Budget> {
        self.budget.as_mut()
    }

    /// For saved sessions: `--hard-rate` decisions made so far (the sampling
    /// phase is fixed, so this count is the picker's whole state).
    pub(crate) fn hard_decided(&self) -> u64 {
        self.hard_picks.decided
    }

    pub(crate) fn set_hard_decided(&mut self, n: u64) {
        self.hard_picks.decided = n;
    }

    fn save(&mut self) {
        // Copies of a few hundred bytes, no allocation (Budget is arrays).
        self.saved_budget.clone_from(&self.budget);
        self.saved_picks = self.hard_picks.decided;
    }

    fn restore(&mut self) {
        std::mem::swap(&mut self.budget, &mut self.saved_budget);
        self.hard_picks.decided = self.saved_picks;
    }
}

/// The sessions whose rows a step runs on ([`Caches`]), with each one's
/// settings and decisions: session `k` owns the `k`-th run of rows.
pub trait Parts: Caches + Sync {
    fn think(&self, k: usize) -> &Think;
    fn decisions(&mut self, k: usize) -> &mut Decisions;
}

/// The buffers of the step for chunks of up to `batch` rows, allocated once
/// (per session, or per batch of sessions); the step allocates nothing per
/// token.
pub struct TahStep {
    /// Logits of one deeper pass (batch × vocab).
    depth_logits: Vec<f32>,
    /// Decider input: the captured hidden states (batch × layers × dim).
    hidden: Vec<f32>,
    decider: Option<DeciderScratch>,
    /// Rows of the chunk still going deeper, and the ones that continue.
    active: Vec<usize>,
    next: Vec<usize>,
    positions: Vec<usize>,
    /// Rows per part going deeper.
    counts: Vec<usize>,
    top_ids: Vec<u32>,
    top_vals: Vec<f32>,
    embd_row: Vec<f32>,
}

impl TahStep {
    /// Buffers for chunks of `batch` rows of sessions thinking as `think`
    /// says (a batch of sessions passes the model's deepest settings).
    pub fn new(model: &Model, think: &Think, batch: usize) -> TahStep {
        let c = &model.cfg;
        let auto = think.uses_decider();
        let tah = c.tah.as_ref();
        let n_sel = tah.map_or(0, |t| t.decider_layers.len());
        let topk = tah.map_or(0, |t| t.input_topk.max(t.decider_topk));
        let deep = think.deep();
        TahStep {
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
            decider: match (&model.decider, auto) {
                (Some(w), true) => Some(DeciderScratch::new(w, n_sel * c.dim + c.dim)),
                _ => None,
            },
            active: Vec::with_capacity(batch),
            next: Vec::with_capacity(batch),
            positions: Vec::with_capacity(batch),
            counts: Vec::with_capacity(batch),
            top_ids: Vec::with_capacity(topk + 1),
            top_vals: Vec::with_capacity(topk + 1),
            embd_row: vec![0.0; c.dim],
        }
    }

    /// Where the depth-1 pass of `n` rows records the decider's hidden states;
    /// `None` when the decider does not run.
    pub fn capture<'a>(&'a mut self, model: &'a Model, n: usize) -> Option<Capture<'a>> {
        let dim = model.cfg.dim;
        match (&model.cfg.tah, &self.decider) {
            (Some(t), Some(_)) => Some(Capture {
                layers: &t.decider_layers,
                out: &mut self.hidden[..n * t.decider_layers.len() * dim],
            }),
            _ => None,
        }
    }

    /// Depths 2..=max_depth for a chunk whose depth-1 pass has run (its hidden
    /// states captured, its residual stream in `scratch`): `parts[k]` rows of
    /// session `k` of `sessions`, at `positions`. `logits` holds each row's
    /// depth-1 logits (rows × vocab) on entry and their sums over the depths
    /// each row ran on exit; `info` gets each row's depth and decider
    /// probability. The rows of all sessions that go on run each depth together.
    ///
    /// `cancel` is checked between depths (and between layers): when set, the
    /// sessions' decisions are restored and [`SessionError::Cancelled`]
    /// returned; the caller forgets the chunk (caches, tokens, info).
    #[allow(clippy::too_many_arguments)]
    pub fn run<P: Parts + ?Sized>(
        &mut self,
        model: &Model,
        sessions: &mut P,
        parts: &[usize],
        scratch: &mut Scratch,
        positions: &[usize],
        logits: &mut [f32],
        info: &mut [TokenInfo],
        cancel: &CancelFlag,
    ) -> Result<(), SessionError> {
        for k in 0..parts.len() {
            sessions.decisions(k).save();
        }
        let r = self.depths(
            model, sessions, parts, scratch, positions, logits, info, cancel,
        );
        if r.is_err() {
            for k in 0..parts.len() {
                sessions.decisions(k).restore();
            }
        }
        r
    }

    #[allow(clippy::too_many_arguments)]
    fn depths<P: Parts + ?Sized>(
        &mut self,
        model: &Model,
        sessions: &mut P,
        parts: &[usize],
        scratch: &mut Scratch,
        positions: &[usize],
        logits: &mut [f32],
        info: &mut [TokenInfo],
        cancel: &CancelFlag,
    ) -> Result<(), SessionError> {
        let c = &model.cfg;
        let (dim, vocab) = (c.dim, c.vocab);
        let Some(tah) = c.tah.as_ref() else {
            return Ok(());
        };
        let decider = model.decider();
        let n_sel = if self.decider.is_some() {
            tah.decider_layers.len()
        } else {
            0
        };
        let embd = model.mat(&model.token_embd);
        let max_depth = (0..parts.len())
            .map(|k| sessions.think(k).max_depth)
            .max()
            .unwrap_or(1);
        // `counts[k]`: how many of the active rows (in order) are part k's.
        self.active.clear();
        self.active.extend(0..positions.len());
        self.counts.clear();
        self.counts.extend_from_slice(parts);
        for depth in 1..max_depth {
            if cancel.is_cancelled() {
                return Err(SessionError::Cancelled);
            }
            // Which active rows continue (the decider is not consulted at a
            // session's last depth). `j` indexes the captured hidden states,
            // which follow the active rows in order.
            self.next.clear();
            let mut j = 0;
            for k in 0..parts.len() {
                let m = std::mem::take(&mut self.counts[k]);
                let think = sessions.think(k).clone();
                for _ in 0..m {
                    let row = self.active[j];
                    let go = depth < think.max_depth
                        && match think.mode {
                            ThinkMode::Always => true,
                            ThinkMode::Never => false,
                            ThinkMode::Auto | ThinkMode::Budget(_) => {
                                match (decider.as_ref(), self.decider.as_mut()) {
                                    (Some(d), Some(s)) => {
                                        let cum = &logits[row * vocab..(row + 1) * vocab];
                                        soft_input::top_k(
                                            cum,
                                            tah.decider_topk,
                                            &mut self.top_ids,
                                            &mut self.top_vals,
                                        );
                                        let h =
                                            &self.hidden[j * n_sel * dim..(j + 1) * n_sel * dim];
                                        let p = decider::probability(
                                            d,
                                            tah.normalize_input,
                                            h,
                                            &self.top_vals,
                                            s,
                                        );
                                        if depth == 1 {
                                            info[row].prob = p;
                                        }
                                        let dec = sessions.decisions(k);
                                        match (think.hard_rate, dec.budget.as_mut()) {
                                            (Some(rate), _) => dec.hard_picks.next(rate as f64),
                                            (None, Some(b)) if depth == 1 => b.decide(p),
                                            _ => p > think.threshold,
                                        }
                                    }
                                    _ => false,
                                }
                            }
                        };
                    if go {
                        self.next.push(row);
                        self.counts[k] += 1;
                    }
                    j += 1;
                }
            }
            if self.next.is_empty() {
                break;
            }
            std::mem::swap(&mut self.active, &mut self.next);

            // The next depth's input: soft embeddings of the continuing rows,
            // packed in order at their positions.
            self.positions.clear();
            for (j, &row) in self.active.iter().enumerate() {
                let cum = &logits[row * vocab..(row + 1) * vocab];
                soft_input::top_k(cum, tah.input_topk, &mut self.top_ids, &mut self.top_vals);
                let x = &mut scratch.x[j * dim..(j + 1) * dim];
                soft_input::soft_input(&embd, &self.top_ids, &self.top_vals, x, &mut self.embd_row);
                self.positions.push(positions[row]);
                info[row].depth = (depth + 1) as u8;
            }
            let m = self.active.len();
            let capture = if depth + 1 < max_depth && n_sel > 0 {
                Some(Capture {
                    layers: &tah.decider_layers,
                    out: &mut self.hidden[..m * n_sel * dim],
                })
            } else {
                None
            };
            forward::run_layers(
                model,
                sessions,
                &self.counts,
                scratch,
                &self.positions,
                depth + 1,
                capture,
                cancel,
            )?;

            // Their logits at this depth, added to their sums (batch rows 0..m
            // now hold the continuing tokens).
            self.next.clear();
            self.next.extend(0..m);
            forward::logits(model, scratch, &self.next, &mut self.depth_logits);
            for (j, &row) in self.active.iter().enumerate() {
                let add = &self.depth_logits[j * vocab..(j + 1) * vocab];
                for (a, b) in logits[row * vocab..(row + 1) * vocab].iter_mut().zip(add) {
                    *a += b;
                }
            }
        }
        Ok(())
    }
}

/// Which tokens `--hard-rate r` sends deeper: systematic sampling with a random
/// phase u, so the k-th decision of the session continues iff
/// ⌊u + (k+1)·r⌋ > ⌊u + k·r⌋. Any run of m decisions then holds ⌊m·r⌋ or
/// ⌈m·r⌉ picks (independent draws would give 64 tokens at r = 0.06 anywhere
/// from 1 to 8), and the count carries across `reset`, so repeated runs pick
/// other tokens.
#[derive(Clone)]
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
