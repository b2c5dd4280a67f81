//! `tah eval`: answer a set of word problems and grade the answers.
//!
//! Each problem is asked as one user turn of the model's chat template — the
//! question, then [`ANSWER_INSTRUCTION`] — on a fresh session (the cache is
//! reset, a think-budget controller keeps its history), generated, and graded by
//! [`grade`]: the last `\boxed{…}` of the answer (else its last number) against
//! the set's ground truth ([`data`]), numerically where both have a value.
//! [`Summary`] adds up accuracy (with a Wilson 95% interval), speed and depth.

pub mod data;
pub mod grade;

use crate::generate::{generate, GenerateOptions, Generation, Stats, StopReason, TokenEvent};
use crate::session::{Session, SessionError};
use crate::text::{ChatMessage, ChatTemplate, TextError, Tokenizer};
use data::Problem;
use serde::Serialize;
use std::fmt;
use std::time::Instant;

/// What follows the question in the user turn.
pub const ANSWER_INSTRUCTION: &str =
    "Please reason step by step, and put your final answer within \\boxed{}.";

#[derive(Debug)]
pub enum EvalError {
    /// The model cannot be asked questions in text.
    NoTokenizer,
    NoChatTemplate,
    Text(TextError),
    Session(SessionError),
    /// The prompt does not leave room to answer in the context.
    PromptTooLong {
        tokens: usize,
        ctx: usize,
    },
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EvalError::NoTokenizer => f.write_str(
                "this model carries no tokenizer tah can run (a checkpoint converted without \
                 tokenizer.json, or a .gguf not written by tah-convert): eval needs text; \
                 convert it with `tah-convert INPUT -o OUT.tah`",
            ),
            EvalError::NoChatTemplate => f.write_str("this model has no chat template"),
            EvalError::Text(e) => write!(f, "{e}"),
            EvalError::Session(e) => write!(f, "{e}"),
            EvalError::PromptTooLong { tokens, ctx } => write!(
                f,
                "the prompt has {tokens} tokens; the context holds {ctx} (raise --ctx)"
            ),
        }
    }
}

impl std::error::Error for EvalError {}

impl From<TextError> for EvalError {
    fn from(e: TextError) -> Self {
        EvalError::Text(e)
    }
}

impl From<SessionError> for EvalError {
    fn from(e: SessionError) -> Self {
        EvalError::Session(e)
    }
}

/// The prompt text for one problem: a user turn (the question and the
/// instruction to box the answer) after an optional system turn, ending where the
/// assistant's answer begins.
pub fn prompt_text(
    template: &ChatTemplate,
    question: &str,
    system: Option<&str>,
    enable_thinking: Option<bool>,
) -> Result<String, TextError> {
    let mut msgs = Vec::with_capacity(2);
    if let Some(s) = system {
        msgs.push(ChatMessage::new("system", s));
    }
    msgs.push(ChatMessage::new(
        "user",
        format!("{}\n{ANSWER_INSTRUCTION}", question.trim()),
    ));
    template.render(&msgs, true, enable_thinking)
}

/// The grade of one answer: what was extracted and whether it matches. The
/// answer is looked for after the model's thinking (`<think>…</think>`; the
/// output starts inside it when `starts_thinking`), and in the whole output
/// when the part after the thinking has none.
pub fn grade_answer(expected: &str, output: &str, starts_thinking: bool) -> (Option<String>, bool) {
    let answer = crate::app::tutor::strip_thinking(output, starts_thinking);
    let got = grade::extract_answer(&answer).or_else(|| grade::extract_answer(output));
    let ok = got
        .as_deref()
        .is_some_and(|g| grade::answers_match(expected, g));
    (got, ok)
}

/// One problem's record (a line of `--log`).
#[derive(Clone, Debug, Serialize)]
pub struct ProblemResult {
    /// 0-based position in the evaluated set.
    pub index: usize,
    /// Line of the data file.
    pub line: usize,
    pub question: String,
    pub expected: String,
    pub extracted: Option<String>,
    pub correct: bool,
    /// The model's whole answer.
    pub output: String,
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub tokens: usize,
    pub stop: StopReason,
    /// Depth summary of the generated tokens.
    pub hard_tokens: usize,
    pub hard_rate: f64,
    pub avg_depth: f64,
    pub tokens_per_depth: Vec<usize>,
    /// Wall time of prefill and generation, seconds.
    pub time_s: f64,
    pub decode_tokens_per_s: f64,
    /// `--think budget:R`: generated tokens counted for the budget, and how many
    /// of them ran depth 2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_tokens: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_hard: Option<usize>,
}

/// Everything a caller chooses about an evaluation run.
#[derive(Clone, Debug, Default)]
pub struct EvalOptions {
    pub generate: GenerateOptions,
    pub system: Option<String>,
    /// Passed to the chat template as `enable_thinking` when set (Qwen3).
    pub enable_thinking: Option<bool>,
}

/// Asks one problem on `session` (reset first) and grades the answer.
/// `on_token` sees every generated token. Returns the record and the generation.
pub fn run_problem(
    session: &mut Session,
    tokenizer: Option<&Tokenizer>,
    template: Option<&ChatTemplate>,
    index: usize,
    problem: &Problem,
    opts: &EvalOptions,
    on_token: &mut dyn FnMut(&TokenEvent) -> bool,
) -> Result<(ProblemResult, Generation), EvalError> {
    let tok = tokenizer.ok_or(EvalError::NoTokenizer)?;
    let tmpl = template.ok_or(EvalError::NoChatTemplate)?;
    let text = prompt_text(
        tmpl,
        &problem.question,
        opts.system.as_deref(),
        opts.enable_thinking,
    )?;
    let ids = tok.encode(&text, true)?;
    if ids.is_empty() || ids.len() >= session.ctx() {
        return Err(EvalError::PromptTooLong {
            tokens: ids.len(),
            ctx: session.ctx(),
        });
    }
    session.reset();
    let t0 = Instant::now();
    let g = generate(session, Some(tok), &ids, &opts.generate, None, on_token)?;
    let time_s = t0.elapsed().as_secs_f64();
    let answer: Vec<u32> = g
        .tokens
        .iter()
        .copied()
        .filter(|&t| !tok.is_eog(t))
        .collect();
    let output = tok.decode(&answer);
    let starts_thinking = crate::app::tutor::prompt_opens_thinking(&text);
    let (extracted, correct) = grade_answer(&problem.expected, &output, starts_thinking);
    let s = &g.stats;
    let r = ProblemResult {
        index,
        line: problem.line,
        question: problem.question.clone(),
        expected: problem.expected.clone(),
        extracted,
        correct,
        output,
        prompt_tokens: s.prompt_tokens,
        tokens: s.generated_tokens,
        stop: g.stop,
        hard_tokens: s.hard_tokens,
        hard_rate: s.hard_rate,
        avg_depth: s.avg_depth,
        tokens_per_depth: s.tokens_per_depth.clone(),
        time_s,
        decode_tokens_per_s: s.decode_tokens_per_s,
        budget_tokens: s.budget_tokens,
        budget_hard: s
            .budget_rate
            .zip(s.budget_tokens)
            .map(|(r, n)| (r * n as f64).round() as usize),
    };
    Ok((r, g))
}

/// The Wilson score interval of `k` successes in `n` trials at normal quantile
/// `z` (1.96 for 95%). `(0, 1)` when `n` is 0.
pub fn wilson(k: usize, n: usize, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (k, n) = (k as f64, n as f64);
    let p = k / n;
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / (1.0 + z2 / n);
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// The totals of an evaluation run: the grades, and the generation
/// statistics of every answer added up ([`Stats::add`]).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub think: String,
    pub problems: usize,
    pub correct: usize,
    pub accuracy: f64,
    /// Wilson 95% interval of the accuracy.
    pub accuracy_ci95: (f64, f64),
    /// Problems where no answer could be extracted.
    pub unanswered: usize,
    #[serde(flatten)]
    pub totals: Stats,
    /// Generated tokens per second of wall time (prefill included).
    pub tokens_per_s: f64,
    pub time_s: f64,
}

impl Summary {
    pub fn new(think: impl Into<String>, budget_target: Option<f64>) -> Summary {
        Summary {
            think: think.into(),
            totals: Stats {
                budget_target,
                ..Stats::default()
            },
            ..Default::default()
        }
    }

    /// Counts one problem: its grade and its generation's statistics.
    pub fn add(&mut self, r: &ProblemResult, stats: &Stats) {
        self.problems += 1;
        self.correct += r.correct as usize;
        self.unanswered += r.extracted.is_none() as usize;
        self.totals.add(stats);
        self.time_s += r.time_s;
        self.accuracy = self.correct as f64 / self.problems.max(1) as f64;
        self.accuracy_ci95 = wilson(self.correct, self.problems, 1.96);
        self.tokens_per_s = self.totals.generated_tokens as f64 / self.time_s.max(1e-9);
    }

    /// The human-readable report.
    pub fn render(&self) -> String {
        let mut s = format!(
            "accuracy {:.1}% ({} / {}), Wilson 95% interval [{:.1}%, {:.1}%]; {} without an answer\n",
            100.0 * self.accuracy,
            self.correct,
            self.problems,
            100.0 * self.accuracy_ci95.0,
            100.0 * self.accuracy_ci95.1,
            self.unanswered
        );
        s += &format!(
            "think {}: generated {} tokens, hard rate {:.2}%, average depth {:.3}, tokens per depth {:?}\n",
            self.think,
            self.totals.generated_tokens,
            100.0 * self.totals.hard_rate,
            self.totals.avg_depth,
            self.totals.tokens_per_depth
        );
        if let (Some(t), Some(r)) = (self.totals.budget_target, self.totals.budget_rate) {
            s += &format!(
                "think budget: target {:.2}%, achieved {:.2}% (generated tokens after warm-up)\n",
                100.0 * t,
                100.0 * r
            );
        }
        s += &format!(
            "speed: {:.2} tokens/s decoding, {:.2} tokens/s overall, {:.1} s in all\n",
            self.totals.decode_tokens_per_s, self.tokens_per_s, self.time_s
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_interval() {
        let (lo, hi) = wilson(0, 0, 1.96);
        assert_eq!((lo, hi), (0.0, 1.0));
        // 50 of 100: about [40.4%, 59.6%].
        let (lo, hi) = wilson(50, 100, 1.96);
        assert!(
            (lo - 0.4038).abs() < 1e-3 && (hi - 0.5962).abs() < 1e-3,
            "{lo} {hi}"
        );
        // 0 of 10: [0, 27.8%].
        let (lo, hi) = wilson(0, 10, 1.96);
        assert!(lo == 0.0 && (hi - 0.2775).abs() < 1e-3, "{hi}");
        let (lo, hi) = wilson(10, 10, 1.96);
        assert!((lo - 0.7225).abs() < 1e-3 && hi == 1.0);
    }

    #[test]
    fn grading_an_answer() {
        let (got, ok) = grade_answer(
            "18",
            "She sells 16 - 3 - 4 = 9 eggs for $2 each: \\boxed{\\$18}",
            false,
        );
        assert_eq!(got.as_deref(), Some("\\$18"));
        assert!(ok);
        let (got, ok) = grade_answer("18", "I do not know", false);
        assert!(got.is_none() && !ok);
        // The box after the thinking counts, not the one inside it.
        let out = "<think>maybe \\boxed{17}</think>It is \\boxed{18}.";
        assert_eq!(grade_answer("18", out, false), (Some("18".into()), true));
        let out = "maybe \\boxed{17}</think>So 18 eggs.";
        assert_eq!(grade_answer("18", out, true), (Some("18".into()), true));
        // Thinking that ran out of tokens: its last box still counts.
        let out = "<think>so it is \\boxed{18}";
        assert_eq!(grade_answer("18", out, false), (Some("18".into()), true));
    }
}
