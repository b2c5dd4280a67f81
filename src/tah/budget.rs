//! Think budget (`--think budget:R`): instead of the file's fixed decider
//! threshold, an adaptive one that keeps the share of depth-2 tokens near `R`.
//!
//! The controller remembers the decider probabilities of the last [`WINDOW`]
//! decided tokens in a fixed-size ring (no allocation per token) and the
//! running *debt* `Σ (R − continued)` over the tokens it decided, which says
//! how far the achieved rate is behind (> 0) or ahead (< 0) of the target. For
//! the next token, with probability `p`:
//!
//! ```text
//! level     = clamp(R + debt / DEBT_TOKENS, 0, 1)
//! threshold = the value that `level · n` of the window's n probabilities exceed
//! continue  = p > threshold  or  (p == threshold and debt > 0)
//! ```
//!
//! The quantile alone keeps the rate at `R` when the probabilities are
//! stationary; the debt term is an integral controller that pulls the long-run
//! rate back to `R` when they drift; the tie rule handles a greedy loop that
//! repeats a few probabilities exactly (a quantile over a window of repeated
//! values can only step between coarse rates — the tie rule dithers).
//! Until [`WARMUP`] tokens have been decided the file's threshold applies.
//!
//! Only the depth-1 decision (whether a token becomes "hard") is budgeted;
//! deeper decisions, when `max_iter` > 2, use the fixed threshold.

/// Decided tokens the controller looks back over.
pub const WINDOW: usize = 128;
/// Decided tokens before the adaptive threshold takes over (the file's
/// threshold decides these).
pub const WARMUP: usize = 32;
/// Tokens of debt that move the quantile level by 1 (the integral gain).
const DEBT_TOKENS: f32 = 32.0;
/// The debt is kept within ± this many tokens (no wind-up).
const DEBT_MAX: f32 = 16.0;

#[derive(Clone, Debug)]
pub struct Budget {
    /// Target share of depth-2 tokens, in [0, 1].
    target: f32,
    /// The threshold used during warm-up.
    fallback: f32,
    probs: [f32; WINDOW],
    /// Scratch for the quantile (a copy of the ring's live part).
    sorted: [f32; WINDOW],
    /// Ring position of the next entry.
    next: usize,
    /// Tokens decided so far (monotonic; the ring holds the last min(seen, WINDOW)).
    seen: u64,
    /// Σ (target − continued) over the adaptive decisions, clamped.
    debt: f32,
}

impl Budget {
    /// A controller for target share `target` (in [0, 1]) that decides with
    /// `fallback` until warmed up.
    pub fn new(target: f32, fallback: f32) -> Budget {
        Budget {
            target: target.clamp(0.0, 1.0),
            fallback,
            probs: [0.0; WINDOW],
            sorted: [0.0; WINDOW],
            next: 0,
            seen: 0,
            debt: 0.0,
        }
    }

    pub fn target(&self) -> f32 {
        self.target
    }

    /// Tokens decided so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Whether the adaptive threshold is in force.
    pub fn warmed_up(&self) -> bool {
        self.seen >= WARMUP as u64
    }

    /// How many depth-2 tokens the controller is behind its target (negative:
    /// ahead), over the tokens it decided after warm-up.
    pub fn debt(&self) -> f32 {
        self.debt
    }

    fn len(&self) -> usize {
        (self.seen as usize).min(WINDOW)
    }

    /// The threshold the next decision would use.
    pub fn threshold(&mut self) -> f32 {
        if !self.warmed_up() {
            return self.fallback;
        }
        let n = self.len();
        let level = (self.target + self.debt / DEBT_TOKENS).clamp(0.0, 1.0);
        // k of the n window values should lie strictly above the threshold.
        let k = (level * n as f32).round() as usize;
        if k >= n {
            return f32::NEG_INFINITY;
        }
        let s = &mut self.sorted[..n];
        s.copy_from_slice(&self.probs[..n]);
        // The (n-k)-th smallest value: the k values above it continue.
        let (_, v, _) = s.select_nth_unstable_by(n - 1 - k, f32::total_cmp);
        *v
    }

    /// Decides one token with decider probability `p` and records it.
    pub fn decide(&mut self, p: f32) -> bool {
        let go = if self.warmed_up() {
            let t = self.threshold();
            let go = p > t || (p == t && self.debt > 0.0);
            self.debt = (self.debt + self.target - go as u8 as f32).clamp(-DEBT_MAX, DEBT_MAX);
            go
        } else {
            p > self.fallback
        };
        self.probs[self.next] = p;
        self.next = (self.next + 1) % WINDOW;
        self.seen += 1;
        go
    }

    /// What a saved session keeps of the controller (its settings come from
    /// the session): the ring of probabilities, the decision count and the debt.
    pub(crate) fn state(&self) -> (&[f32; WINDOW], u64, f32) {
        (&self.probs, self.seen, self.debt)
    }

    /// Whether a saved debt is one the controller can reach.
    pub(crate) fn valid_debt(debt: f32) -> bool {
        (-DEBT_MAX..=DEBT_MAX).contains(&debt)
    }

    /// Restores [`Budget::state`] (the ring position follows from the count).
    pub(crate) fn set_state(&mut self, probs: &[f32; WINDOW], seen: u64, debt: f32) {
        self.probs = *probs;
        self.seen = seen;
        self.next = (seen % WINDOW as u64) as usize;
        self.debt = debt;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic stream of pseudo-random probabilities.
    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 40) as f32 / (1u64 << 24) as f32
    }

    fn rate_after_warmup(target: f32, mut next_p: impl FnMut(usize) -> f32) -> f32 {
        let mut b = Budget::new(target, 0.5);
        let (mut hard, mut n) = (0, 0);
        for i in 0..2000 {
            let go = b.decide(next_p(i));
            if i >= WINDOW {
                hard += go as usize;
                n += 1;
            }
        }
        hard as f32 / n as f32
    }

    #[test]
    fn holds_the_rate_on_uniform_probabilities() {
        for r in [0.0, 0.06, 0.2, 0.5, 1.0] {
            let mut seed = 7;
            let got = rate_after_warmup(r, |_| lcg(&mut seed));
            assert!((got - r).abs() < 0.02, "target {r}: {got}");
        }
    }

    #[test]
    fn holds_the_rate_on_a_short_cycle() {
        // A greedy loop: the same 7 probabilities over and over. The quantile
        // alone could only give multiples of 1/7.
        let cycle = [0.9, 0.1, 0.4, 0.8, 0.3, 0.6, 0.2];
        for r in [0.06, 0.2] {
            let got = rate_after_warmup(r, |i| cycle[i % cycle.len()]);
            assert!((got - r).abs() < 0.02, "target {r}: {got}");
        }
    }

    #[test]
    fn holds_the_rate_on_a_drifting_distribution() {
        for r in [0.06, 0.2] {
            let mut seed = 3;
            let got = rate_after_warmup(r, |i| {
                let drift = i as f32 / 2000.0;
                (0.5 * lcg(&mut seed) + 0.5 * drift).min(1.0)
            });
            assert!((got - r).abs() < 0.02, "target {r}: {got}");
        }
    }

    #[test]
    fn warm_up_uses_the_fallback_threshold() {
        let mut b = Budget::new(0.0, 0.5);
        for _ in 0..WARMUP {
            assert!(b.decide(0.6));
        }
        assert!(b.warmed_up());
        assert!(!b.decide(0.6));
    }
}
