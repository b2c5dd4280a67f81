//! Generation: prompt → streamed tokens, with the statistics a user asks for.
//! The CLI, the C ABI and the evaluator all go through [`generate`].
//!
//! Stop strings: generation ends when the generated text contains one; the
//! stop text is neither streamed nor kept in [`Generation::text`], even when it
//! spans several tokens. To make that possible, text whose tail could still be
//! the start of a stop string is held back and released once it cannot (or
//! when generation ends for another reason, with the last token's event).
//!
//! Context shift ([`GenerateOptions::context_shift`], on by default): when the
//! context fills during generation, [`shift_range`] picks tokens to forget —
//! whole oldest turns after the kept prefix when the caller gave the turn
//! boundaries, else half of the tokens after it (llama.cpp's
//! `n_discard = n_left / 2`) — and [`Session::shift`] drops them without
//! re-processing anything; generation goes on.

use crate::sample::{validate_logit_bias, Sampler, SamplingParams};
use crate::session::{Session, SessionError};
use crate::tah::TokenInfo;
use crate::text::Tokenizer;
use serde::Serialize;
use std::time::Instant;

/// Most stop strings in [`GenerateOptions::stop`].
pub const MAX_STOP_STRINGS: usize = 16;
/// Longest stop string, in bytes.
pub const MAX_STOP_BYTES: usize = 256;

#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Most new tokens.
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Stop at the model's end-of-generation tokens (needs the tokenizer).
    pub stop_at_eog: bool,
    /// `(token id, bias)` added to the logits before sampling (OpenAI's
    /// semantics: −100 bans, +100 forces). Checked by
    /// [`crate::sample::validate_logit_bias`].
    pub logit_bias: Vec<(u32, f32)>,
    /// Stop strings (at most [`MAX_STOP_STRINGS`], each non-empty and at most
    /// [`MAX_STOP_BYTES`] bytes); they need the tokenizer (no text otherwise).
    pub stop: Vec<String>,
    /// What to do when the context fills during generation: shift (`Some`,
    /// the default) or stop with [`StopReason::ContextFull`] (`None`).
    pub context_shift: Option<ContextShift>,
}

/// How a context shift during generation chooses what to forget.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContextShift {
    /// Tokens kept at the start (a system prompt). The first token always
    /// stays (models lean on it as an attention sink; llama.cpp keeps BOS too).
    pub keep: usize,
    /// Positions in the session where turns begin, ascending, when the caller
    /// knows them (a chat): a shift then drops whole oldest turns.
    pub turn_starts: Vec<usize>,
}

/// One context shift: positions `keep..keep + drop` were forgotten.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Shift {
    pub keep: usize,
    pub drop: usize,
}

/// What a shift of a full session (`n_past` tokens, context `ctx`) forgets:
/// `(keep, drop)`, keeping `keep` tokens (at least 1). With `turn_starts`
/// (positions where turns begin) after the kept prefix, the fewest oldest
/// whole turns that free at least a quarter of the context; otherwise (no
/// boundaries, or the turns are too short) half of the tokens after the kept
/// prefix. `None` when there is nothing to drop.
pub fn shift_range(
    n_past: usize,
    ctx: usize,
    keep: usize,
    turn_starts: &[usize],
) -> Option<(usize, usize)> {
    let keep = keep.max(1);
    if keep >= n_past {
        return None;
    }
    let want = (ctx / 4).max(1);
    let turn = turn_starts
        .iter()
        .find(|&&t| t > keep && t < n_past && t - keep >= want);
    let drop = match turn {
        Some(&t) => t - keep,
        None => (n_past - keep) / 2,
    };
    (drop > 0).then_some((keep, drop))
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 256,
            sampling: SamplingParams::default(),
            stop_at_eog: true,
            logit_bias: Vec::new(),
            stop: Vec::new(),
            context_shift: Some(ContextShift::default()),
        }
    }
}

impl GenerateOptions {
    /// Checks the sampling settings, the logit bias against `vocab` and the
    /// stop strings; the error names the bad option.
    pub fn validate(&self, vocab: usize) -> Result<(), SessionError> {
        let bad = |s: String| Err(SessionError::BadOption(s));
        if let Err(e) = self.sampling.validate() {
            return bad(e);
        }
        if let Err(e) = validate_logit_bias(&self.logit_bias, vocab) {
            return bad(e);
        }
        if self.stop.len() > MAX_STOP_STRINGS {
            return bad(format!(
                "{} stop strings: at most {MAX_STOP_STRINGS}",
                self.stop.len()
            ));
        }
        for s in &self.stop {
            if s.is_empty() {
                return bad("an empty stop string".into());
            }
            if s.len() > MAX_STOP_BYTES {
                return bad(format!(
                    "a stop string of {} bytes: at most {MAX_STOP_BYTES}",
                    s.len()
                ));
            }
        }
        Ok(())
    }
}

/// One generated token, as the per-token callback sees it.
pub struct TokenEvent<'a> {
    pub id: u32,
    /// The text this token completes (may be empty while a character is split).
    pub piece: &'a str,
    pub depth: u8,
    /// The decider's depth-1 continue-probability (NaN where it did not run).
    pub prob: f32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// An end-of-generation token.
    Eog,
    MaxTokens,
    /// The context is full.
    ContextFull,
    /// The callback asked to stop.
    Stopped,
    /// The text reached one of the stop strings.
    StopString,
    /// [`crate::session::CancelFlag::cancel`] stopped it (during the prompt or
    /// generation); the session holds what was completed.
    Cancelled,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// Generated tokens that ran depth ≥ 2.
    pub hard_tokens: usize,
    /// `hard_tokens / generated_tokens`.
    pub hard_rate: f64,
    /// Mean depth of the generated tokens.
    pub avg_depth: f64,
    /// Generated tokens whose deepest pass was depth i+1.
    pub tokens_per_depth: Vec<usize>,
    /// Prompt tokens that ran depth ≥ 2.
    pub prompt_hard_tokens: usize,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
    /// KV cache bytes in use per depth at the end.
    pub kv_bytes_per_depth: Vec<usize>,
    /// `--think budget:R`: the target share R of depth-2 tokens.
    pub budget_target: Option<f64>,
    /// `--think budget:R`: the achieved share of depth-2 tokens among the
    /// generated tokens decided after the controller's warm-up (the first
    /// `tah::budget::WARMUP` decided tokens of the session, prompt included).
    pub budget_rate: Option<f64>,
    /// The generated tokens `budget_rate` counts.
    pub budget_tokens: Option<usize>,
}

impl Stats {
    /// Adds another generation's figures to these (an evaluation's totals):
    /// counts add up; rates, mean depth and speeds are recomputed over the
    /// sums; the KV bytes per depth keep the largest seen. `budget_target` is
    /// this one's.
    pub fn add(&mut self, o: &Stats) {
        let secs = |n: usize, per_s: f64| if per_s > 0.0 { n as f64 / per_s } else { 0.0 };
        let decode_s = secs(self.generated_tokens, self.decode_tokens_per_s)
            + secs(o.generated_tokens, o.decode_tokens_per_s);
        let prefill_s = secs(self.prompt_tokens, self.prefill_tokens_per_s)
            + secs(o.prompt_tokens, o.prefill_tokens_per_s);
        let depth_sum =
            self.avg_depth * self.generated_tokens as f64 + o.avg_depth * o.generated_tokens as f64;
        let budget_hard = |s: &Stats| {
            s.budget_rate
                .zip(s.budget_tokens)
                .map_or(0.0, |(r, n)| (r * n as f64).round())
        };
        let budget_hard = budget_hard(self) + budget_hard(o);
        self.prompt_tokens += o.prompt_tokens;
        self.generated_tokens += o.generated_tokens;
        self.hard_tokens += o.hard_tokens;
        self.prompt_hard_tokens += o.prompt_hard_tokens;
        add_elementwise(&mut self.tokens_per_depth, &o.tokens_per_depth, |a, b| {
            a + b
        });
        add_elementwise(
            &mut self.kv_bytes_per_depth,
            &o.kv_bytes_per_depth,
            usize::max,
        );
        if o.budget_tokens.is_some() || self.budget_tokens.is_some() {
            let n = self.budget_tokens.unwrap_or(0) + o.budget_tokens.unwrap_or(0);
            self.budget_tokens = Some(n);
            self.budget_rate = Some(budget_hard / n.max(1) as f64);
        }
        let g = self.generated_tokens.max(1) as f64;
        self.hard_rate = self.hard_tokens as f64 / g;
        self.avg_depth = depth_sum / g;
        self.decode_tokens_per_s = self.generated_tokens as f64 / decode_s.max(1e-9);
        self.prefill_tokens_per_s = self.prompt_tokens as f64 / prefill_s.max(1e-9);
    }
}

/// `a[i] = f(a[i], b[i])`, `a` first grown to `b`'s length with zeros.
fn add_elementwise(a: &mut Vec<usize>, b: &[usize], f: impl Fn(usize, usize) -> usize) {
    if a.len() < b.len() {
        a.resize(b.len(), 0);
    }
    for (x, y) in a.iter_mut().zip(b) {
        *x = f(*x, *y);
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Generation {
    pub prompt_ids: Vec<u32>,
    pub prompt_depths: Vec<u8>,
    pub tokens: Vec<u32>,
    pub depths: Vec<u8>,
    /// Depth-1 decider probability of each generated token (NaN → null in JSON).
    pub probs: Vec<Option<f32>>,
    /// The generated text, without a stop string that ended it (and what
    /// followed it).
    pub text: String,
    pub stop: StopReason,
    pub stats: Stats,
    /// The context shifts made while generating, in order.
    pub shifts: Vec<Shift>,
}

/// Where per-forward logits go when the caller wants them (`--logits-out`).
#[derive(Default)]
pub struct LogitsLog {
    /// Prompt rows (T × vocab).
    pub prefill: Vec<f32>,
    /// One row per decode forward (the forward that consumed generated token i).
    pub decode: Vec<f32>,
}

/// Feeds `prompt` to `session` (after what it already holds) and generates.
/// `on_token` sees every generated token; returning false stops.
pub fn generate(
    session: &mut Session,
    tokenizer: Option<&Tokenizer>,
    prompt: &[u32],
    opts: &GenerateOptions,
    mut logits_log: Option<&mut LogitsLog>,
    on_token: &mut dyn FnMut(&TokenEvent) -> bool,
) -> Result<Generation, SessionError> {
    let vocab = session.model.cfg.vocab;
    let mut gen = Generator::new(session, tokenizer, prompt, opts)?;
    let t0 = Instant::now();
    let fed = match logits_log.as_deref_mut() {
        Some(log) => {
            log.prefill.reserve(prompt.len() * vocab);
            let mut cb = |_: usize, row: &[f32], _: TokenInfo| log.prefill.extend_from_slice(row);
            session.feed(prompt, Some(&mut cb)).map(|_| ())
        }
        None => session.feed(prompt, None).map(|_| ()),
    };
    // A cancelled prompt is a result (nothing generated), not an error.
    let cancelled = match fed {
        Err(SessionError::Cancelled) => true,
        other => {
            other?;
            false
        }
    };
    gen.prompt_fed(session, cancelled, t0.elapsed().as_secs_f64());
    while let Some(next) = gen.next_token(session)? {
        // Feed the chosen token: its forward gives its depth and the next logits.
        match session.decode(next) {
            Err(SessionError::Cancelled) => {
                gen.cancelled();
                break;
            }
            Err(e) => return Err(e),
            Ok(logits) => {
                if let Some(log) = logits_log.as_deref_mut() {
                    log.decode.extend_from_slice(logits);
                }
            }
        }
        gen.token_fed(session, on_token);
    }
    Ok(gen.finish(session))
}

/// One generation as a state machine, for a caller that runs the forward
/// passes itself (a server stepping several sessions in one batch):
/// [`Generator::new`], feed the prompt, [`Generator::prompt_fed`]; then while
/// [`Generator::next_token`] gives a token, feed it and call
/// [`Generator::token_fed`]; then [`Generator::finish`]. [`generate`] is
/// exactly that loop.
pub struct Generator<'t> {
    opts: GenerateOptions,
    tokenizer: Option<&'t Tokenizer>,
    sampler: Sampler,
    decoder: Option<crate::text::StreamDecoder<'t>>,
    g: Generation,
    /// `g.text[..released]` has been given to the callback; the rest is held
    /// back while it could begin a stop string.
    released: usize,
    /// The turn boundaries, renumbered by each shift.
    turns: Vec<usize>,
    start_pos: usize,
    /// Decisions the budget controller had made before the first generated token.
    budget_seen: Option<u64>,
    prefill_s: f64,
    t_decode: Instant,
    /// The token chosen to be fed next; `None` once generation is over.
    next: Option<u32>,
}

impl<'t> Generator<'t> {
    /// Checks the options; `prompt` is what will be fed to `session` next.
    pub fn new(
        session: &Session,
        tokenizer: Option<&'t Tokenizer>,
        prompt: &[u32],
        opts: &GenerateOptions,
    ) -> Result<Generator<'t>, SessionError> {
        let vocab = session.model.cfg.vocab;
        opts.validate(vocab)?;
        if !opts.stop.is_empty() && tokenizer.is_none() {
            return Err(SessionError::BadOption(
                "stop strings need the model's tokenizer".into(),
            ));
        }
        let mut sampler = Sampler::with_vocab(opts.sampling, vocab);
        sampler.set_logit_bias(&opts.logit_bias);
        Ok(Generator {
            turns: opts
                .context_shift
                .as_ref()
                .map_or_else(Vec::new, |c| c.turn_starts.clone()),
            opts: opts.clone(),
            tokenizer,
            sampler,
            decoder: tokenizer.map(|t| t.stream_decoder()),
            g: Generation {
                prompt_ids: prompt.to_vec(),
                prompt_depths: Vec::new(),
                tokens: Vec::new(),
                depths: Vec::new(),
                probs: Vec::new(),
                text: String::new(),
                stop: StopReason::MaxTokens,
                stats: Stats::default(),
                shifts: Vec::new(),
            },
            released: 0,
            start_pos: session.n_past(),
            budget_seen: None,
            prefill_s: 0.0,
            t_decode: Instant::now(),
            next: None,
        })
    }

    /// The prompt went in (or was cancelled, leaving nothing to generate):
    /// chooses the first token from the session's logits.
    pub fn prompt_fed(&mut self, session: &Session, cancelled: bool, prefill_s: f64) {
        self.prefill_s = prefill_s;
        let prompt_info = &session.token_info()[self.start_pos.min(session.n_past())..];
        self.g.prompt_depths = prompt_info.iter().map(|i| i.depth).collect();
        self.budget_seen = session.budget().map(|b| b.seen());
        self.t_decode = Instant::now();
        if cancelled {
            self.g.stop = StopReason::Cancelled;
        } else if self.opts.max_tokens > 0 {
            self.next = Some(self.sampler.sample_with(session.logits(), session.tokens()));
        }
    }

    /// What a shift would forget now (`None`: full means stop).
    fn shift_at(&self, session: &Session) -> Option<(usize, usize)> {
        let cs = self.opts.context_shift.as_ref()?;
        shift_range(session.n_past(), session.ctx(), cs.keep, &self.turns)
    }

    /// The token to feed next — after a context shift when the context is
    /// full — or `None` when generation is over.
    pub fn next_token(&mut self, session: &mut Session) -> Result<Option<u32>, SessionError> {
        if self.next.is_some() && session.n_past() >= session.ctx() {
            let Some((keep, drop)) = self.shift_at(session) else {
                self.g.stop = StopReason::ContextFull;
                self.next = None;
                return Ok(None);
            };
            session.shift(keep, drop)?;
            self.turns.retain(|&t| t < keep || t >= keep + drop);
            for t in self.turns.iter_mut().filter(|t| **t >= keep + drop) {
                *t -= drop;
            }
            self.g.shifts.push(Shift { keep, drop });
        }
        Ok(self.next)
    }

    /// Generation was cancelled while feeding the token `next_token` gave.
    pub fn cancelled(&mut self) {
        self.g.stop = StopReason::Cancelled;
        self.next = None;
    }

    /// The token `next_token` gave was fed: records it, gives `on_token`
    /// its event and chooses the next one (unless generation ends here).
    pub fn token_fed(&mut self, session: &Session, on_token: &mut dyn FnMut(&TokenEvent) -> bool) {
        let Some(next) = self.next.take() else {
            return;
        };
        let g = &mut self.g;
        let info = *session.token_info().last().expect("a token was just fed");
        let piece = self.decoder.as_mut().map_or("", |d| d.push(next));
        g.text.push_str(piece);
        g.tokens.push(next);
        g.depths.push(info.depth);
        g.probs.push(if info.prob.is_nan() {
            None
        } else {
            Some(info.prob)
        });
        let opts = &self.opts;
        let eog = opts.stop_at_eog && self.tokenizer.is_some_and(|t| t.is_eog(next));
        // This token's event is the last one unless a stop string ends it.
        let full = session.n_past() >= session.ctx() && self.shift_at(session).is_none();
        let g = &mut self.g;
        let last = eog || g.tokens.len() >= opts.max_tokens || full;
        let (end, hit) = match find_stop(&g.text, self.released, &opts.stop) {
            Some(at) => (at, true),
            None if last => (g.text.len(), false),
            None => (hold_back(&g.text, self.released, &opts.stop), false),
        };
        let go_on = on_token(&TokenEvent {
            id: next,
            piece: &g.text[self.released..end],
            depth: info.depth,
            prob: info.prob,
        });
        self.released = end;
        if hit {
            g.text.truncate(end);
            g.stop = StopReason::StopString;
        } else if eog {
            g.stop = StopReason::Eog;
        } else if !go_on {
            g.stop = StopReason::Stopped;
        } else if g.tokens.len() >= opts.max_tokens {
            g.stop = StopReason::MaxTokens;
        } else if full {
            g.stop = StopReason::ContextFull;
        } else {
            self.next = Some(self.sampler.sample_with(session.logits(), session.tokens()));
        }
    }

    /// Tokens generated so far.
    pub fn generated(&self) -> usize {
        self.g.tokens.len()
    }

    /// The generation, with its statistics.
    pub fn finish(mut self, session: &Session) -> Generation {
        let g = &mut self.g;
        if let Some(d) = self.decoder.as_mut() {
            let rest = d.flush();
            if g.stop != StopReason::StopString {
                g.text.push_str(rest);
                // What the flush completed may still hold a stop string.
                if let Some(at) = find_stop(&g.text, self.released, &self.opts.stop) {
                    g.text.truncate(at);
                }
            }
        }
        let decode_s = self.t_decode.elapsed().as_secs_f64();
        let s = &mut g.stats;
        s.prompt_tokens = g.prompt_ids.len();
        s.generated_tokens = g.tokens.len();
        s.tokens_per_depth = vec![0; session.think.max_depth];
        for &d in &g.depths {
            s.tokens_per_depth[d as usize - 1] += 1;
        }
        s.hard_tokens = g.depths.iter().filter(|&&d| d >= 2).count();
        s.prompt_hard_tokens = g.prompt_depths.iter().filter(|&&d| d >= 2).count();
        let n = g.tokens.len().max(1) as f64;
        s.hard_rate = s.hard_tokens as f64 / n;
        s.avg_depth = g.depths.iter().map(|&d| d as f64).sum::<f64>() / n;
        s.prefill_tokens_per_s = g.prompt_ids.len() as f64 / self.prefill_s.max(1e-9);
        s.decode_tokens_per_s = g.tokens.len() as f64 / decode_s.max(1e-9);
        s.kv_bytes_per_depth = session.cache.bytes_per_depth();
        if let (Some(b), Some(seen)) = (session.budget(), self.budget_seen) {
            let skip = (crate::tah::budget::WARMUP as u64).saturating_sub(seen) as usize;
            let counted = &g.depths[skip.min(g.depths.len())..];
            // The f32 target as its shortest decimal (0.06, not 0.0599999986).
            s.budget_target = b.target().to_string().parse().ok();
            s.budget_tokens = Some(counted.len());
            s.budget_rate = Some(
                counted.iter().filter(|&&d| d >= 2).count() as f64 / counted.len().max(1) as f64,
            );
        }
        self.g
    }
}

/// The earliest start, at or after `from`, of any of `stops` in `text`.
fn find_stop(text: &str, from: usize, stops: &[String]) -> Option<usize> {
    let tail = &text[from..];
    stops
        .iter()
        .filter_map(|s| tail.find(s.as_str()))
        .min()
        .map(|i| from + i)
}

/// How far `text` (from `from` on, holding no stop string) can be released:
/// the first character boundary whose suffix is a proper prefix of some stop
/// string, or the end. Only the last `MAX_STOP_BYTES` bytes can be such a
/// suffix.
fn hold_back(text: &str, from: usize, stops: &[String]) -> usize {
    let longest = stops.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut start = from.max(text.len().saturating_sub(longest));
    while !text.is_char_boundary(start) {
        start += 1;
    }
    for (i, _) in text[start..].char_indices() {
        let tail = &text[start + i..];
        if stops.iter().any(|s| s.starts_with(tail)) {
            return start + i;
        }
    }
    text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stops(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn hold_back_keeps_a_possible_stop_start() {
        let st = stops(&["Paris.", "\n\nUser"]);
        assert_eq!(hold_back("The capital is Par", 0, &st), 15);
        assert_eq!(hold_back("The capital is Pa", 4, &st), 15);
        assert_eq!(hold_back("The capital is", 0, &st), 14);
        assert_eq!(hold_back("end\n", 0, &st), 3);
        assert_eq!(hold_back("end\n\nUse", 0, &st), 3);
        // Multi-byte characters: boundaries only.
        let st = stops(&["éa"]);
        assert_eq!(hold_back("xxé", 0, &st), 2);
        assert_eq!(hold_back("xxéé", 0, &st), 4);
        assert_eq!(hold_back("anything", 3, &[]), 8);
    }

    #[test]
    fn shift_range_drops_whole_turns_else_half() {
        // Nothing after the kept prefix: no shift (the first token always stays).
        assert_eq!(shift_range(1, 64, 0, &[]), None);
        assert_eq!(shift_range(10, 64, 10, &[]), None);
        assert_eq!(shift_range(64, 64, 0, &[]), Some((1, 31)));
        assert_eq!(shift_range(64, 64, 4, &[]), Some((4, 30)));
        // The first turn start at least a quarter (16) past the prefix.
        assert_eq!(shift_range(64, 64, 4, &[4, 10, 20, 40]), Some((4, 16)));
        assert_eq!(shift_range(64, 64, 4, &[10, 19]), Some((4, 30)));
        // A boundary at the end would leave nothing: half instead.
        assert_eq!(shift_range(64, 64, 4, &[64]), Some((4, 30)));
    }

    #[test]
    fn find_stop_takes_the_earliest() {
        let st = stops(&["B", "AB", "C"]);
        assert_eq!(find_stop("xxABC", 0, &st), Some(2));
        assert_eq!(find_stop("xxABC", 3, &st), Some(3));
        assert_eq!(find_stop("xxA", 0, &st), None);
    }
}
