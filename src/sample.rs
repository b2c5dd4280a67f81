//! Choosing the next token from the final logits.
//!
//! The order is the one of the released TaH evaluation (docs/TAH_SEMANTICS.md §7):
//!
//! 1. divide the logits by the temperature,
//! 2. softmax,
//! 3. min-p: keep tokens with `p ≥ min_p · p_max`,
//! 4. top-k: keep the `k` most probable of those,
//! 5. top-p: keep the smallest prefix of the survivors, sorted by probability
//!    (ties: lower id first), whose mass is `≥ top_p` — the mass measured on the
//!    survivors renormalised, as Hugging Face's warpers and llama.cpp's samplers
//!    do; always at least one token,
//! 6. renormalise and draw with a seeded PRNG of our own ([`Rng`]).
//!
//! `temperature ≤ 0` or `top_k == 1` is greedy: the argmax, ties to the lowest
//! id. `top_k == 0`, `top_p ≥ 1` and `min_p ≤ 0` switch their filter off.
//!
//! Non-finite logits never panic: a NaN logit is treated as `-inf` (the token can
//! never be chosen); when some logits are `+inf`, those tokens share all the mass
//! equally (the softmax limit); when no logit is usable (all NaN or `-inf`) the
//! sampler returns token 0.
//!
//! The sampler owns its scratch buffers: after the first call for a vocabulary
//! size (or [`Sampler::with_vocab`]) `sample` allocates nothing.

/// Sampling settings. `Default` is the released evaluation's setting (§7) with
/// seed 0; [`SamplingParams::greedy`] is argmax.
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
}

impl Default for SamplingParams {
    /// temperature 0.6, top_k 20, top_p 0.95, min_p 0 (docs/TAH_SEMANTICS.md §7), seed 0.
    fn default() -> SamplingParams {
        SamplingParams {
            temperature: 0.6,
            top_k: 20,
            top_p: 0.95,
            min_p: 0.0,
            seed: 0,
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

/// A token sampler: settings, PRNG and scratch buffers.
#[derive(Clone, Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    /// Per token: unnormalised probability `exp((l - max) / T)`, then 0 for
    /// filtered-out tokens. (vocab)
    weights: Vec<f64>,
    /// Candidate token ids, after the filters the surviving prefix. (vocab)
    cand: Vec<u32>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Sampler {
        Sampler {
            params,
            rng: Rng::new(params.seed),
            weights: Vec::new(),
            cand: Vec::new(),
        }
    }

    /// A sampler whose scratch buffers are already sized for `n_vocab` tokens.
    pub fn with_vocab(params: SamplingParams, n_vocab: usize) -> Sampler {
        let mut s = Sampler::new(params);
        s.weights.reserve_exact(n_vocab);
        s.cand.reserve_exact(n_vocab);
        s
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Restart the random stream from `seed` (the settings stay).
    pub fn reseed(&mut self, seed: u64) {
        self.params.seed = seed;
        self.rng = Rng::new(seed);
    }

    /// Choose the next token from one row of logits.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
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

    /// Steps 1–5: fills `weights` (unnormalised probabilities) and leaves the
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
}
