//! Generation: prompt → streamed tokens, with the statistics a user asks for.
//! The CLI, the C ABI and the evaluator all go through [`generate`].

use crate::sample::{Sampler, SamplingParams};
use crate::session::{Session, SessionError};
use crate::tah::TokenInfo;
use crate::text::Tokenizer;
use serde::Serialize;
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Most new tokens.
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Stop at the model's end-of-generation tokens (needs the tokenizer).
    pub stop_at_eog: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 256,
            sampling: SamplingParams::default(),
            stop_at_eog: true,
        }
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
    pub text: String,
    pub stop: StopReason,
    pub stats: Stats,
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
    let mut sampler = Sampler::with_vocab(opts.sampling, vocab);
    let mut decoder = tokenizer.map(|t| t.stream_decoder());
    let start_pos = session.n_past();

    let t0 = Instant::now();
    match logits_log.as_deref_mut() {
        Some(log) => {
            log.prefill.reserve(prompt.len() * vocab);
            let mut cb = |_: usize, row: &[f32], _: TokenInfo| log.prefill.extend_from_slice(row);
            session.feed(prompt, Some(&mut cb))?;
        }
        None => {
            session.feed(prompt, None)?;
        }
    }
    let prefill_s = t0.elapsed().as_secs_f64();
    let prompt_info: Vec<TokenInfo> = session.token_info()[start_pos..].to_vec();
    // Decisions the budget controller had made before the first generated token.
    let budget_seen = session.budget().map(|b| b.seen());

    let mut g = Generation {
        prompt_ids: prompt.to_vec(),
        prompt_depths: prompt_info.iter().map(|i| i.depth).collect(),
        tokens: Vec::new(),
        depths: Vec::new(),
        probs: Vec::new(),
        text: String::new(),
        stop: StopReason::MaxTokens,
        stats: Stats::default(),
    };
    let t1 = Instant::now();
    let mut next = sampler.sample(session.logits());
    while g.tokens.len() < opts.max_tokens {
        if session.n_past() >= session.ctx() {
            g.stop = StopReason::ContextFull;
            break;
        }
        // Feed the chosen token: its forward gives its depth and the next logits.
        let logits = session.decode(next)?;
        if let Some(log) = logits_log.as_deref_mut() {
            log.decode.extend_from_slice(logits);
        }
        let info = *session.token_info().last().expect("a token was just fed");
        let piece = decoder.as_mut().map_or("", |d| d.push(next));
        g.text.push_str(piece);
        g.tokens.push(next);
        g.depths.push(info.depth);
        g.probs.push(if info.prob.is_nan() {
            None
        } else {
            Some(info.prob)
        });
        let go_on = on_token(&TokenEvent {
            id: next,
            piece,
            depth: info.depth,
            prob: info.prob,
        });
        if opts.stop_at_eog && tokenizer.is_some_and(|t| t.is_eog(next)) {
            g.stop = StopReason::Eog;
            break;
        }
        if !go_on {
            g.stop = StopReason::Stopped;
            break;
        }
        next = sampler.sample(session.logits());
    }
    if let Some(d) = decoder.as_mut() {
        let rest = d.flush();
        g.text.push_str(rest);
    }
    let decode_s = t1.elapsed().as_secs_f64();

    let s = &mut g.stats;
    s.prompt_tokens = prompt.len();
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
    s.prefill_tokens_per_s = prompt.len() as f64 / prefill_s.max(1e-9);
    s.decode_tokens_per_s = g.tokens.len() as f64 / decode_s.max(1e-9);
    s.kv_bytes_per_depth = session.cache.bytes_per_depth();
    if let (Some(b), Some(seen)) = (session.budget(), budget_seen) {
        let skip = (crate::tah::budget::WARMUP as u64).saturating_sub(seen) as usize;
        let counted = &g.depths[skip.min(g.depths.len())..];
        // The f32 target as its shortest decimal (0.06, not 0.0599999986).
        s.budget_target = b.target().to_string().parse().ok();
        s.budget_tokens = Some(counted.len());
        s.budget_rate =
            Some(counted.iter().filter(|&&d| d >= 2).count() as f64 / counted.len().max(1) as f64);
    }
    Ok(g)
}
