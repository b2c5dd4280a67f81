//! Choosing the next token from the final logits.
//!
//! The chain, in order (llama.cpp documents its sampler chain the same way):
//!
//! 1. logit bias: add each `(id, bias)` of the list to that token's logit
//!    (OpenAI's semantics: −100 effectively bans a token, +100 forces it),
//! 2. penalties over the last `repeat_last_n` tokens of the session (prompt
//!    included, as llama.cpp's CLI does), llama.cpp's `llama_sampler_penalties`:
//!    for each token seen `c ≥ 1` times there, a positive logit is divided by
//!    `repeat_penalty`, a non-positive one multiplied by it, then
//!    `c · frequency_penalty + presence_penalty` is subtracted,
//! 3. greedy settings stop here: the argmax, ties to the lowest id;
//!    otherwise, the order of the released TaH evaluation
//!    (docs/TAH_SEMANTICS.md §7):
//! 4. divide the logits by the temperature,
//! 5. softmax,
//! 6. min-p: keep tokens with `p ≥ min_p · p_max`,
//! 7. top-k: keep the `k` most probable of those,
//! 8. top-p: keep the smallest prefix of the survivors, sorted by probability
//!    (ties: lower id first), whose mass is `≥ top_p` — the mass measured on the
//!    survivors renormalised, as Hugging Face's warpers and llama.cpp's samplers
//!    do; always at least one token,
//! 9. renormalise and draw with a seeded PRNG of our own ([`Rng`]).
//!
//! `temperature ≤ 0` or `top_k == 1` is greedy. `top_k == 0`, `top_p ≥ 1` and
//! `min_p ≤ 0` switch their filter off; `repeat_penalty == 1` with zero
//! presence and frequency penalties, or `repeat_last_n == 0`, switch the
//! penalties off. [`SamplingParams::validate`] and [`validate_logit_bias`] say
//! which settings are allowed ([`crate::generate::generate`] refuses others).
//!
//! Non-finite logits never panic: a NaN logit is treated as `-inf` (the token can
//! never be chosen); when some logits are `+inf`, those tokens share all the mass
//! equally (the softmax limit); when no logit is usable (all NaN or `-inf`) the
//! sampler returns token 0.
//!
//! The sampler owns its scratch buffers: after the first call for a vocabulary
//! size (or [`Sampler::with_vocab`]) `sample` allocates nothing. The logits row
//! is copied into a scratch row only when a bias or a penalty is active.

/// Most `(id, bias)` entries in a logit-bias list.
pub const MAX_LOGIT_BIAS: usize = 1024;
/// Largest `repeat_last_n`.
pub const MAX_REPEAT_LAST_N: usize = 8192;

/// Sampling settings. `Default` is the released evaluation's setting (§7) with
/// seed 0 and no penalties; [`SamplingParams::greedy`] is argmax.
///
/// `Copy`, like the C ABI's `tah_sampling` it mirrors: the variable-length
/// settings (logit bias, stop strings) live in
/// [`crate::generate::GenerateOptions`], next to the other per-request lists.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingParams {
    /// `≤ 0` means greedy.
    pub temperature: f32,
    /// `0` = off; `1` = greedy.
    pub top_k: usize,
    /// `≥ 1.0` = off.
    pub top_p: f32,
    /// `≤ 0.0` = off.
    pub min_p: f32,
    pub seed: u64,
    /// `1.0` = off; `> 1` discourages the recent tokens.
    pub repeat_penalty: f32,
    /// Recent tokens the penalties look at; `0` = off.
    pub repeat_last_n: usize,
    /// Subtracted once from a token seen in the window; `0` = off.
    pub presence_penalty: f32,
    /// Subtracted per occurrence in the window; `0` = off.
    pub frequency_penalty: f32,
}

impl SamplingParams {
    /// Argmax decoding.
    pub fn greedy() -> SamplingParams {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 0,
            ..SamplingParams::default()
        }
    }

    /// True when these settings always pick the argmax.
    pub fn is_greedy(&self) -> bool {
        // NaN temperature counts as greedy too.
        !matches!(
            self.temperature.partial_cmp(&0.0),
            Some(std::cmp::Ordering::Greater)
        ) || self.top_k == 1
    }

    /// True when the penalties change some logit.
    pub fn has_penalties(&self) -> bool {
        self.repeat_last_n > 0
            && (self.repeat_penalty != 1.0
                || self.presence_penalty != 0.0
                || self.frequency_penalty != 0.0)
    }

    /// Checks the settings: temperature finite and `≥ 0` (NaN is an error, not
    /// greedy); `top_p` in `(0, 1]`; `min_p` in `[0, 1]`; `repeat_penalty`
    /// finite and `> 0`; presence and frequency penalties finite in `[-2, 2]`
    /// (OpenAI's range); `repeat_last_n ≤` [`MAX_REPEAT_LAST_N`].
    pub fn validate(&self) -> Result<(), String> {
        let t = self.temperature;
        if !(t.is_finite() && t >= 0.0) {
            return Err(format!("temperature {t} must be finite and ≥ 0"));
        }
        let p = self.top_p;
        if !(p > 0.0 && p <= 1.0) {
            return Err(format!("top_p {p} must be in (0, 1]"));
        }
        let m = self.min_p;
        if !(0.0..=1.0).contains(&m) {
            return Err(format!("min_p {m} must be in [0, 1]"));
        }
        let r = self.repeat_penalty;
        if !(r.is_finite() && r > 0.0) {
            return Err(format!("repeat_penalty {r} must be finite and > 0"));
        }
        for (name, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if !(-2.0..=2.0).contains(&v) {
                return Err(format!("{name} {v} must be in [-2, 2]"));
            }
        }
        if self.repeat_last_n > MAX_REPEAT_LAST_N {
            return Err(format!(
                "repeat_last_n {} is above {MAX_REPEAT_LAST_N}",
                self.repeat_last_n
            ));
        }
        Ok(())
    }
}

/// Checks a logit-bias list: at most [`MAX_LOGIT_BIAS`] entries, ids inside the
/// vocabulary, biases finite in `[-100, 100]`.
pub fn validate_logit_bias(bias: &[(u32, f32)], vocab: usize) -> Result<(), String> {
    if bias.len() > MAX_LOGIT_BIAS {
        return Err(format!(
            "{} logit-bias entries: at most {MAX_LOGIT_BIAS}",
            bias.len()
        ));
    }
    for &(id, b) in bias {
        if id as usize >= vocab {
            return Err(format!(
                "logit bias for token {id}: outside the vocabulary (size {vocab})"
            ));
        }
        if !(-100.0..=100.0).contains(&b) {
            return Err(format!(
                "logit bias {b} for token {id} must be in [-100, 100]"
            ));
        }
    }
    Ok(())
}

impl Default for SamplingParams {
    /// temperature 0.6, top_k 20, top_p 0.95, min_p 0 (docs/TAH_SEMANTICS.md §7), seed 0;
    /// penalties off (repeat_penalty 1, presence and frequency 0, window 64 as llama.cpp's).
    fn default() -> SamplingParams {
        SamplingParams {
            temperature: 0.6,
            top_k: 20,
            top_p: 0.95,
            min_p: 0.0,
            seed: 0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
        }
    }
}

/// xoshiro256** (Blackman & Vigna), its state filled from the seed by splitmix64.
/// Small, fast and fully determined by the seed on every platform.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            // splitmix64
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        // splitmix64 never yields four zeros in a row, so the state is valid.
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// The argmax of `logits`, ties to the lowest id; NaN never wins. Returns 0 for an
/// empty or all-NaN slice.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    let mut found = false;
    for (i, &v) in logits.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        if !found || v > best_v {
            best = i;
            best_v = v;
            found = true;
        }
    }
    best as u32
}

/// A token sampler: settings, logit bias, PRNG and scratch buffers.
#[derive(Clone, Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    /// `(id, bias)` added to the logits first.
    bias: Vec<(u32, f32)>,
    /// Per token: unnormalised probability `exp((l - max) / T)`, then 0 for
    /// filtered-out tokens. (vocab)
    weights: Vec<f64>,
    /// Candidate token ids, after the filters the surviving prefix. (vocab)
    cand: Vec<u32>,
    /// The logits after bias and penalties, when some are active. (vocab)
    adjusted: Vec<f32>,
    /// Occurrences of each token in the penalty window; all zero between
    /// calls. (vocab, when penalties are active)
    counts: Vec<u32>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Sampler {
        Sampler {
            params,
            rng: Rng::new(params.seed),
            bias: Vec::new(),
            weights: Vec::new(),
            cand: Vec::new(),
            adjusted: Vec::new(),
            counts: Vec::new(),
        }
    }

    /// A sampler whose scratch buffers are already sized for `n_vocab` tokens.
    pub fn with_vocab(params: SamplingParams, n_vocab: usize) -> Sampler {
        let mut s = Sampler::new(params);
        s.weights.reserve_exact(n_vocab);
        s.cand.reserve_exact(n_vocab);
        if params.has_penalties() {
            s.adjusted.reserve_exact(n_vocab);
            s.counts.resize(n_vocab, 0);
        }
        s
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Sets the logit-bias list (replacing any earlier one). Entries whose id
    /// is outside a logits row are skipped when sampling; see
    /// [`validate_logit_bias`] for the checked form.
    pub fn set_logit_bias(&mut self, bias: &[(u32, f32)]) {
        self.bias.clear();
        self.bias.extend_from_slice(bias);
    }

    /// Restart the random stream from `seed` (the settings stay).
    pub fn reseed(&mut self, seed: u64) {
        self.params.seed = seed;
        self.rng = Rng::new(seed);
    }

    /// Choose the next token from one row of logits, without penalties (no
    /// history).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        self.sample_with(logits, &[])
    }

    /// Choose the next token from one row of logits; `history` is the
    /// session's tokens so far (its last `repeat_last_n` are penalised).
    pub fn sample_with(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let penalise = self.params.has_penalties() && !history.is_empty();
        if !penalise && self.bias.is_empty() {
            return self.choose(logits);
        }
        // Steps 1–2 on a copy; `take` lets `choose` borrow `self` mutably.
        let mut row = std::mem::take(&mut self.adjusted);
        row.clear();
        row.extend_from_slice(logits);
        for &(id, b) in &self.bias {
            if let Some(l) = row.get_mut(id as usize) {
                *l += b;
            }
        }
        if penalise {
            let n = self.params.repeat_last_n.min(history.len());
            self.penalise(&mut row, &history[history.len() - n..]);
        }
        let id = self.choose(&row);
        self.adjusted = row;
        id
    }

    /// Step 2, llama.cpp's formula, on `row` for the tokens of `window`.
    fn penalise(&mut self, row: &mut [f32], window: &[u32]) {
        if self.counts.len() < row.len() {
            self.counts.resize(row.len(), 0);
        }
        let p = self.params;
        for &t in window {
            if let Some(c) = self.counts.get_mut(t as usize) {
                *c += 1;
            }
        }
        // Each distinct token once: its count is reset to 0 as it is applied,
        // which also leaves `counts` all zero for the next call.
        for &t in window {
            let (Some(c), Some(l)) = (self.counts.get_mut(t as usize), row.get_mut(t as usize))
            else {
                continue;
            };
            if *c == 0 {
                continue;
            }
            if *l <= 0.0 {
                *l *= p.repeat_penalty;
            } else {
                *l /= p.repeat_penalty;
            }
            *l -= *c as f32 * p.frequency_penalty + p.presence_penalty;
            *c = 0;
        }
        // Ids outside the row were counted but not applied: clear them too.
        for &t in window {
            if let Some(c) = self.counts.get_mut(t as usize) {
                *c = 0;
            }
        }
    }

    /// Steps 3–9 on the (adjusted) logits.
    fn choose(&mut self, logits: &[f32]) -> u32 {
        if self.params.is_greedy() || logits.is_empty() {
            return argmax(logits);
        }
        let n = self.filter(logits);
        if n == 0 {
            return 0;
        }
        let total: f64 = self.cand[..n]
            .iter()
            .map(|&i| self.weights[i as usize])
            .sum();
        let mut u = self.rng.next_f64() * total;
        for &id in &self.cand[..n] {
            let w = self.weights[id as usize];
            if u < w {
                return id;
            }
            u -= w;
        }
        // Rounding left `u` just past the end: the last candidate.
        self.cand[n - 1]
    }

    /// Steps 4–8: fills `weights` (unnormalised probabilities) and leaves the
    /// surviving ids in `cand[..n]`, most probable first when a sort was needed.
    /// Returns `n` (0 only when no logit is usable).
    fn filter(&mut self, logits: &[f32]) -> usize {
        let p = self.params;
        let t = p.temperature as f64;
        self.weights.clear();
        self.cand.clear();

        // 1–2. temperature and softmax (unnormalised: relative to the max, so the
        // most probable token has weight 1).
        let mut max = f32::NEG_INFINITY;
        for &v in logits {
            if v > max {
                max = v;
            }
        }
        if max == f32::NEG_INFINITY {
            return 0; // all NaN or -inf
        }
        if max == f32::INFINITY {
            self.weights.extend(
                logits
                    .iter()
                    .map(|&v| if v == f32::INFINITY { 1.0 } else { 0.0 }),
            );
        } else {
            let max = max as f64;
            self.weights.extend(logits.iter().map(|&v| {
                if v.is_nan() {
                    0.0
                } else {
                    ((v as f64 - max) / t).exp()
                }
            }));
        }

        // 3. min-p: p ≥ min_p · p_max, and p_max has weight 1.
        let min_w = if p.min_p > 0.0 { p.min_p as f64 } else { 0.0 };
        for (i, &w) in self.weights.iter().enumerate() {
            if w > 0.0 && w >= min_w {
                self.cand.push(i as u32);
            }
        }
        let weights = &self.weights;
        let order = |a: &u32, b: &u32| {
            weights[*b as usize]
                .total_cmp(&weights[*a as usize])
                .then(a.cmp(b))
        };

        // 4. top-k.
        let mut n = self.cand.len();
        let mut sorted = false;
        if p.top_k > 0 && p.top_k < n {
            self.cand.select_nth_unstable_by(p.top_k - 1, order);
            n = p.top_k;
            self.cand.truncate(n);
            self.cand.sort_unstable_by(order);
            sorted = true;
        }

        // 5. top-p over the survivors, renormalised.
        if p.top_p < 1.0 && n > 1 {
            if !sorted {
                self.cand.sort_unstable_by(order);
            }
            let total: f64 = self.cand.iter().map(|&i| weights[i as usize]).sum();
            let target = p.top_p as f64 * total;
            let mut acc = 0.0;
            let mut keep = n;
            for (j, &i) in self.cand.iter().enumerate() {
                acc += weights[i as usize];
                if acc >= target {
                    keep = j + 1;
                    break;
                }
            }
            n = keep;
            self.cand.truncate(n);
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logits whose softmax at T = 1 is exactly `probs`.
    fn logits_of(probs: &[f64]) -> Vec<f32> {
        probs.iter().map(|p| p.ln() as f32).collect()
    }

    /// The surviving tokens, sorted by id, with their renormalised probabilities.
    fn survivors(s: &mut Sampler, logits: &[f32]) -> Vec<(u32, f64)> {
        let n = s.filter(logits);
        let total: f64 = s.cand[..n].iter().map(|&i| s.weights[i as usize]).sum();
        let mut v: Vec<(u32, f64)> = s.cand[..n]
            .iter()
            .map(|&i| (i, s.weights[i as usize] / total))
            .collect();
        v.sort_by_key(|x| x.0);
        v
    }

    fn ids(v: &[(u32, f64)]) -> Vec<u32> {
        v.iter().map(|x| x.0).collect()
    }

    fn params(temperature: f32, top_k: usize, top_p: f32, min_p: f32) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k,
            top_p,
            min_p,
            seed: 7,
            ..SamplingParams::default()
        }
    }

    // The hand-worked example: p = [0.05, 0.40, 0.10, 0.30, 0.15] at T = 1.
    // Sorted: id1 0.40, id3 0.30, id4 0.15, id2 0.10, id0 0.05.
    const P5: [f64; 5] = [0.05, 0.40, 0.10, 0.30, 0.15];

    #[test]
    fn greedy_is_argmax_with_lowest_id_on_ties() {
        let mut s = Sampler::new(SamplingParams::greedy());
        assert_eq!(s.sample(&[0.1, 2.0, -1.0, 2.0]), 1);
        assert_eq!(s.sample(&[-3.0, -2.0, -5.0]), 1);
        // top_k == 1 is greedy whatever the temperature.
        let mut s = Sampler::new(params(1.5, 1, 1.0, 0.0));
        for _ in 0..10 {
            assert_eq!(s.sample(&logits_of(&P5)), 1);
        }
        // temperature ≤ 0 is greedy.
        let mut s = Sampler::new(params(-1.0, 0, 1.0, 0.0));
        assert_eq!(s.sample(&logits_of(&P5)), 1);
    }

    #[test]
    fn no_filter_keeps_the_softmax() {
        let mut s = Sampler::new(params(1.0, 0, 1.0, 0.0));
        let v = survivors(&mut s, &logits_of(&P5));
        assert_eq!(ids(&v), vec![0, 1, 2, 3, 4]);
        for (i, p) in v {
            assert!((p - P5[i as usize]).abs() < 1e-6);
        }
    }

    #[test]
    fn temperature_sharpens_and_flattens() {
        // T = 0.5: p ∝ p^2 → [.0025, .16, .01, .09, .0225] / .285
        let mut s = Sampler::new(params(0.5, 0, 1.0, 0.0));
        let v = survivors(&mut s, &logits_of(&P5));
        let sq: Vec<f64> = P5.iter().map(|p| p * p).collect();
        let z: f64 = sq.iter().sum();
        for (i, p) in v {
            assert!((p - sq[i as usize] / z).abs() < 1e-6, "{i}: {p}");
        }
        // T = 2: p ∝ sqrt(p).
        let mut s = Sampler::new(params(2.0, 0, 1.0, 0.0));
        let v = survivors(&mut s, &logits_of(&P5));
        let rt: Vec<f64> = P5.iter().map(|p| p.sqrt()).collect();
        let z: f64 = rt.iter().sum();
        for (i, p) in v {
            assert!((p - rt[i as usize] / z).abs() < 1e-6, "{i}: {p}");
        }
    }

    #[test]
    fn min_p_keeps_tokens_above_a_fraction_of_the_max() {
        // p_max = 0.40; min_p 0.3 → threshold 0.12: ids 1 (.40), 3 (.30), 4 (.15).
        let mut s = Sampler::new(params(1.0, 0, 1.0, 0.3));
        let v = survivors(&mut s, &logits_of(&P5));
        assert_eq!(ids(&v), vec![1, 3, 4]);
        // Renormalised over 0.85.
        assert!((v[0].1 - 0.40 / 0.85).abs() < 1e-6);
        // min_p 0.2 → threshold 0.08: also id 2 (.10), not id 0 (.05).
        let mut s = Sampler::new(params(1.0, 0, 1.0, 0.2));
        assert_eq!(ids(&survivors(&mut s, &logits_of(&P5))), vec![1, 2, 3, 4]);
    }

    #[test]
    fn top_k_keeps_the_k_most_probable() {
        let mut s = Sampler::new(params(1.0, 2, 1.0, 0.0));
        let v = survivors(&mut s, &logits_of(&P5));
        assert_eq!(ids(&v), vec![1, 3]);
        assert!((v[0].1 - 0.40 / 0.70).abs() < 1e-6);
        // Ties: the lower id wins the last place.
        let mut s = Sampler::new(params(1.0, 2, 1.0, 0.0));
        assert_eq!(
            ids(&survivors(&mut s, &[0.0, 1.0, 0.5, 0.5, 0.5])),
            vec![1, 2]
        );
        // k larger than the vocabulary keeps everything.
        let mut s = Sampler::new(params(1.0, 50, 1.0, 0.0));
        assert_eq!(ids(&survivors(&mut s, &logits_of(&P5))).len(), 5);
    }

    #[test]
    fn top_p_keeps_the_smallest_prefix_reaching_the_mass() {
        // Prefix masses: .40, .70, .85, .95, 1.0.
        let cases: [(f32, &[u32]); 5] = [
            (0.30, &[1]),
            (0.65, &[1, 3]),
            (0.80, &[1, 3, 4]),
            (0.90, &[1, 2, 3, 4]),
            (0.99, &[0, 1, 2, 3, 4]),
        ];
        for (top_p, want) in cases {
            let mut s = Sampler::new(params(1.0, 0, top_p, 0.0));
            assert_eq!(
                ids(&survivors(&mut s, &logits_of(&P5))),
                want,
                "top_p {top_p}"
            );
        }
        // Always at least one token, even for top_p = 0.
        let mut s = Sampler::new(params(1.0, 0, 0.0, 0.0));
        assert_eq!(ids(&survivors(&mut s, &logits_of(&P5))), vec![1]);
    }

    #[test]
    fn filters_apply_in_order_min_p_top_k_top_p() {
        // min_p 0.2 → {1, 2, 3, 4} (mass .95); top_k 3 → {1, 3, 4} (mass .85);
        // top_p 0.8 over those renormalised: .40/.85 = .47, .70/.85 = .82 ≥ .8
        // → {1, 3}. (Measured on the unrenormalised softmax, .70 < .8 would keep
        // id 4 too.)
        let mut s = Sampler::new(params(1.0, 3, 0.8, 0.2));
        let v = survivors(&mut s, &logits_of(&P5));
        assert_eq!(ids(&v), vec![1, 3]);
        assert!((v[0].1 - 0.4 / 0.7).abs() < 1e-6);
        assert!((v[1].1 - 0.3 / 0.7).abs() < 1e-6);
    }

    #[test]
    fn draws_follow_the_renormalised_distribution() {
        // min_p 0.2, top_k 3 → {1: .40, 3: .30, 4: .15} / .85.
        let mut s = Sampler::new(SamplingParams {
            seed: 12345,
            ..params(1.0, 3, 1.0, 0.2)
        });
        let logits = logits_of(&P5);
        let n = 200_000;
        let mut counts = [0usize; 5];
        for _ in 0..n {
            counts[s.sample(&logits) as usize] += 1;
        }
        let want = [0.0, 0.40 / 0.85, 0.0, 0.30 / 0.85, 0.15 / 0.85];
        for i in 0..5 {
            let f = counts[i] as f64 / n as f64;
            // The standard error is ≤ 0.0012; 0.005 is > 4 of them.
            assert!((f - want[i]).abs() < 0.005, "token {i}: {f} vs {}", want[i]);
        }
    }

    #[test]
    fn same_seed_same_tokens() {
        let logits: Vec<f32> = (0..1000).map(|i| ((i * 37) % 101) as f32 * 0.05).collect();
        let run = |seed| {
            let mut s = Sampler::new(SamplingParams {
                seed,
                ..SamplingParams::default()
            });
            (0..200).map(|_| s.sample(&logits)).collect::<Vec<u32>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
        // reseed restarts the stream.
        let mut s = Sampler::new(SamplingParams {
            seed: 42,
            ..SamplingParams::default()
        });
        let a: Vec<u32> = (0..50).map(|_| s.sample(&logits)).collect();
        s.reseed(42);
        let b: Vec<u32> = (0..50).map(|_| s.sample(&logits)).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn rng_is_uniform_enough_and_in_range() {
        let mut r = Rng::new(0);
        let mut sum = 0.0;
        for _ in 0..100_000 {
            let x = r.next_f64();
            assert!((0.0..1.0).contains(&x));
            sum += x;
        }
        assert!((sum / 100_000.0 - 0.5).abs() < 0.01);
    }

    #[test]
    fn non_finite_logits_do_not_panic() {
        let nan = f32::NAN;
        let inf = f32::INFINITY;
        for p in [SamplingParams::greedy(), SamplingParams::default()] {
            let mut s = Sampler::new(p);
            // NaN never chosen.
            for _ in 0..100 {
                let t = s.sample(&[nan, 1.0, nan, 0.5]);
                assert!(t == 1 || t == 3);
            }
            // +inf tokens take all the mass.
            for _ in 0..100 {
                let t = s.sample(&[0.0, inf, 3.0, inf]);
                assert!(t == 1 || t == 3, "{t}");
            }
            // Nothing usable: token 0.
            assert_eq!(s.sample(&[nan, nan, nan]), 0);
            assert_eq!(s.sample(&[f32::NEG_INFINITY; 4]), 0);
            assert_eq!(s.sample(&[]), 0);
        }
    }

    #[test]
    fn no_reallocation_after_the_first_call() {
        let logits: Vec<f32> = (0..5000).map(|i| (i % 97) as f32 * 0.1).collect();
        let mut s = Sampler::with_vocab(SamplingParams::default(), logits.len());
        s.sample(&logits);
        let (pw, pc) = (s.weights.as_ptr(), s.cand.as_ptr());
        for _ in 0..20 {
            s.sample(&logits);
        }
        assert_eq!((pw, pc), (s.weights.as_ptr(), s.cand.as_ptr()));
    }

    /// Penalty settings over greedy decoding.
    fn penalties(repeat: f32, last_n: usize, presence: f32, frequency: f32) -> SamplingParams {
        SamplingParams {
            repeat_penalty: repeat,
            repeat_last_n: last_n,
            presence_penalty: presence,
            frequency_penalty: frequency,
            ..SamplingParams::greedy()
        }
    }

    /// The adjusted row the sampler chose from.
    fn adjusted(s: &mut Sampler, logits: &[f32], history: &[u32]) -> Vec<f32> {
        s.sample_with(logits, history);
        s.adjusted.clone()
    }

    #[test]
    fn penalties_follow_llama_cpp_formula() {
        let logits = [2.0f32, -1.0, 0.5, 3.0, -0.25, 0.0];
        // Token 3 twice, 1 once, 4 three times, 0 outside the window of 6.
        let history = [0u32, 3, 1, 4, 3, 4, 4];
        let mut s = Sampler::new(penalties(1.5, 6, 0.25, 0.125));
        let got = adjusted(&mut s, &logits, &history);
        // Worked by hand: positive / 1.5, non-positive · 1.5, then
        // − count · 0.125 − 0.25.
        let want = [
            2.0,
            -1.5 - 0.125 - 0.25, // -1.0 · 1.5
            0.5,
            3.0 / 1.5 - 2.0 * 0.125 - 0.25,
            -0.25 * 1.5 - 3.0 * 0.125 - 0.25,
            0.0,
        ];
        assert_eq!(got, want);
        // The counts scratch is left all zero.
        assert!(s.counts.iter().all(|&c| c == 0));
        // Greedy on the raw row picks 3 (3.0); after the penalties 0 (2.0 > 1.5).
        assert_eq!(s.sample_with(&logits, &history), 0);
        assert_eq!(s.sample(&logits), 3);
    }

    #[test]
    fn presence_counts_once_frequency_per_occurrence() {
        let logits = [1.0f32, 1.0, 1.0];
        let history = [1u32, 1, 1, 1, 2];
        let mut s = Sampler::new(penalties(1.0, 64, 0.5, 0.0));
        assert_eq!(adjusted(&mut s, &logits, &history), [1.0, 0.5, 0.5]);
        let mut s = Sampler::new(penalties(1.0, 64, 0.0, 0.5));
        assert_eq!(adjusted(&mut s, &logits, &history), [1.0, -1.0, 0.5]);
        // repeat_last_n = 2: only [1, 2] count.
        let mut s = Sampler::new(penalties(1.0, 2, 0.0, 0.5));
        assert_eq!(adjusted(&mut s, &logits, &history), [1.0, 0.5, 0.5]);
        // repeat_last_n = 0 switches them off: the raw argmax (0 on ties).
        let mut s = Sampler::new(penalties(2.0, 0, 1.0, 1.0));
        assert_eq!(s.sample_with(&[1.0, 3.0, 1.0], &history), 1);
    }

    #[test]
    fn logit_bias_bans_and_forces() {
        let logits = logits_of(&P5);
        let mut s = Sampler::new(SamplingParams::greedy());
        s.set_logit_bias(&[(1, -100.0)]);
        // Without id 1 (0.40) the argmax is id 3 (0.30).
        assert_eq!(s.sample(&logits), 3);
        s.set_logit_bias(&[(0, 100.0)]);
        assert_eq!(s.sample(&logits), 0);
        // Sampling: a banned token is never drawn.
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            ..SamplingParams::default()
        });
        s.set_logit_bias(&[(1, -100.0), (3, -100.0)]);
        for _ in 0..2000 {
            let t = s.sample(&logits);
            assert!(t != 1 && t != 3, "{t}");
        }
        // An id outside the row is skipped, not a panic.
        s.set_logit_bias(&[(99, 5.0)]);
        s.sample(&logits);
    }

    #[test]
    fn validation_names_the_bad_setting() {
        let ok = SamplingParams::default();
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(SamplingParams::greedy().validate(), Ok(()));
        let bad = |p: SamplingParams, word: &str| {
            let e = p.validate().unwrap_err();
            assert!(e.starts_with(word), "{e}");
        };
        bad(
            SamplingParams {
                temperature: f32::NAN,
                ..ok
            },
            "temperature NaN",
        );
        bad(
            SamplingParams {
                temperature: -0.5,
                ..ok
            },
            "temperature -0.5",
        );
        bad(
            SamplingParams {
                temperature: f32::INFINITY,
                ..ok
            },
            "temperature inf",
        );
        bad(
            SamplingParams {
                top_p: f32::NAN,
                ..ok
            },
            "top_p NaN",
        );
        bad(SamplingParams { top_p: 0.0, ..ok }, "top_p 0");
        bad(SamplingParams { top_p: 1.5, ..ok }, "top_p 1.5");
        bad(SamplingParams { min_p: 2.0, ..ok }, "min_p 2");
        bad(
            SamplingParams {
                min_p: f32::NAN,
                ..ok
            },
            "min_p NaN",
        );
        bad(
            SamplingParams {
                repeat_penalty: 0.0,
                ..ok
            },
            "repeat_penalty 0",
        );
        bad(
            SamplingParams {
                repeat_penalty: f32::NAN,
                ..ok
            },
            "repeat_penalty NaN",
        );
        bad(
            SamplingParams {
                presence_penalty: 2.5,
                ..ok
            },
            "presence_penalty 2.5",
        );
        bad(
            SamplingParams {
                frequency_penalty: f32::NAN,
                ..ok
            },
            "frequency_penalty NaN",
        );
        bad(
            SamplingParams {
                repeat_last_n: 8193,
                ..ok
            },
            "repeat_last_n 8193",
        );
        assert_eq!(
            SamplingParams {
                repeat_last_n: 8192,
                top_p: 1.0,
                min_p: 1.0,
                ..ok
            }
            .validate(),
            Ok(())
        );

        assert_eq!(validate_logit_bias(&[(9, -100.0), (0, 100.0)], 10), Ok(()));
        assert_eq!(
            validate_logit_bias(&[(10, 1.0)], 10).unwrap_err(),
            "logit bias for token 10: outside the vocabulary (size 10)"
        );
        assert!(validate_logit_bias(&[(1, f32::NAN)], 10).is_err());
        assert!(validate_logit_bias(&[(1, 100.5)], 10).is_err());
        assert!(validate_logit_bias(&vec![(1, 1.0); 1025], 10).is_err());
    }

    #[test]
    fn penalties_allocate_nothing_after_the_first_call() {
        let logits: Vec<f32> = (0..5000).map(|i| (i % 97) as f32 * 0.1).collect();
        let history: Vec<u32> = (0..200).map(|i| (i * 31) % 5000).collect();
        let p = SamplingParams {
            repeat_penalty: 1.3,
            ..SamplingParams::default()
        };
        let mut s = Sampler::with_vocab(p, logits.len());
        s.set_logit_bias(&[(5, -100.0)]);
        s.sample_with(&logits, &history);
        let ptrs = (
            s.weights.as_ptr(),
            s.cand.as_ptr(),
            s.adjusted.as_ptr(),
            s.counts.as_ptr(),
        );
        for _ in 0..20 {
            s.sample_with(&logits, &history);
        }
        assert_eq!(
            ptrs,
            (
                s.weights.as_ptr(),
                s.cand.as_ptr(),
                s.adjusted.as_ptr(),
                s.counts.as_ptr()
            )
        );
    }
}
