//! `tah eval`: answer a JSON-lines set of word problems and grade the answers
//! (see `tah::app::eval`).

use crate::common::{Error, HtmlCollector, ModelArgs, SamplingArgs};
use clap::Args;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;
use tah::app::eval::data::{self, DataFormat};
use tah::app::eval::{run_problem, EvalOptions, Summary};
use tah::app::html::HtmlPage;
use tah::app::output::OutputFile;
use tah::generate::{GenerateOptions, TokenEvent};
use tah::sample::SamplingParams;
use tah::tah::ThinkMode;

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// The problems: JSON lines with "question" and "answer".
    #[arg(long)]
    pub data: PathBuf,
    /// How the answer field gives the ground truth: gsm8k ("#### N" at the end)
    /// or boxed (the last \boxed{…}, else the whole field). Default: gsm8k for
    /// lines with "####", boxed for the others.
    #[arg(long, value_parser = parse_format)]
    pub format: Option<DataFormat>,
    /// Evaluate only the first N problems.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Most new tokens per answer.
    #[arg(short = 'n', long, default_value_t = 512)]
    pub n_predict: usize,
    /// A system message before each question.
    #[arg(long)]
    pub system: Option<String>,
    /// Ask a thinking model (Qwen3) not to think (enable_thinking=false).
    #[arg(long)]
    pub no_think: bool,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Write one JSON line per problem (question, expected, extracted, correct,
    /// output, tokens, depth summary, time) to this file.
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Write every answer, each token shaded by its depth, to this HTML page.
    #[arg(long)]
    pub html: Option<PathBuf>,
}

fn parse_format(s: &str) -> Result<DataFormat, String> {
    s.parse()
}

/// The progress line on stderr.
struct Progress {
    tty: bool,
    total: usize,
    last: Instant,
}

impl Progress {
    fn draw(&mut self, done: usize, s: &Summary, tokens_now: usize, force: bool) {
        if !self.tty || (!force && self.last.elapsed().as_millis() < 200) {
            return;
        }
        self.last = Instant::now();
        let width = 24;
        let filled = width * done / self.total.max(1);
        eprint!(
            "\r\x1b[2K[{}{}] {done}/{} correct {} ({:.1}%) hard {:.1}% | answer {} tokens",
            "#".repeat(filled),
            "-".repeat(width - filled),
            self.total,
            s.correct,
            100.0 * s.accuracy,
            100.0 * s.totals.hard_rate,
            tokens_now
        );
    }
}

pub fn eval(a: EvalArgs) -> Result<(), Error> {
    let mut problems = data::load(&a.data, a.format)?;
    if let Some(n) = a.limit {
        problems.truncate(n);
    }
    if problems.is_empty() {
        return Err("--limit 0: nothing to evaluate".into());
    }
    let (model, mut session) = a.model.open()?;
    if model.tokenizer.is_none() {
        return Err(format!(
            "{}: {}",
            a.model.model.display(),
            tah::app::eval::EvalError::NoTokenizer
        )
        .into());
    }
    let mode = session.think.mode;
    let budget = match mode {
        ThinkMode::Budget(r) if session.budget().is_some() => Some(r as f64),
        _ => None,
    };
    // The log is written beside its destination and put in place when the
    // run completes (app::output).
    let mut log = a.log.as_deref().map(OutputFile::create).transpose()?;
    let mut page = a.html.as_ref().map(|_| {
        let mut p = HtmlPage::new(format!("tah eval: {}", a.data.display()));
        p.subtitle(format!("model {}, think {mode}", a.model.model.display()));
        p
    });
    let mut summary = Summary::new(mode.to_string(), budget);
    let mut progress = Progress {
        tty: std::io::stderr().is_terminal(),
        total: problems.len(),
        last: Instant::now(),
    };
    let tok = model.tokenizer.as_ref();
    // Greedy unless asked otherwise: an evaluation is reproducible by default.
    let base = a.sampling.params(SamplingParams {
        temperature: 0.0,
        ..SamplingParams::default()
    });
    for (i, p) in problems.iter().enumerate() {
        let opts = EvalOptions {
            generate: GenerateOptions {
                max_tokens: a.n_predict,
                sampling: SamplingParams {
                    seed: base.seed.wrapping_add(i as u64),
                    ..base
                },
                stop_at_eog: true,
                logit_bias: a.sampling.logit_bias.clone(),
                // An answer that outgrows the context is cut there, as before:
                // shifting would drop the problem it answers.
                context_shift: None,
                ..Default::default()
            },
            system: a.system.clone(),
            enable_thinking: a.no_think.then_some(false),
        };
        let mut collect = page.as_ref().map(|_| HtmlCollector::new(false, true));
        let mut n_tok = 0;
        let mut on_token = |e: &TokenEvent| {
            n_tok += 1;
            if let Some(c) = collect.as_mut() {
                c.push(e);
            }
            progress.draw(i, &summary, n_tok, false);
            true
        };
        let (r, g) = run_problem(
            &mut session,
            tok,
            model.chat_template.as_ref(),
            i,
            p,
            &opts,
            &mut on_token,
        )?;
        summary.add(&r, &g.stats);
        if let Some(l) = log.as_mut() {
            writeln!(l, "{}", serde_json::to_string(&r)?)?;
        }
        if let (Some(page), Some(c)) = (page.as_mut(), collect) {
            let mark = if r.correct { "correct" } else { "wrong" };
            page.heading(format!("Problem {} (line {}): {mark}", i + 1, r.line));
            page.plain("question", &p.question);
            let tokens: Vec<_> = c
                .finish(&g.text)
                .into_iter()
                .filter(|t| !tok.is_some_and(|k| k.is_eog(t.id)))
                .collect();
            page.tokens("answer", tokens);
            page.note(format!(
                "expected {}, extracted {}; {} tokens, hard rate {:.1}%, {:.1} s",
                r.expected,
                r.extracted.as_deref().unwrap_or("(nothing)"),
                r.tokens,
                100.0 * r.hard_rate,
                r.time_s
            ));
        }
        if progress.tty {
            progress.draw(i + 1, &summary, 0, true);
        } else if !a.json {
            eprintln!(
                "[{}/{}] {} expected {} extracted {} ({} tokens, {:.1} s)",
                i + 1,
                problems.len(),
                if r.correct { "correct" } else { "wrong  " },
                r.expected,
                r.extracted.as_deref().unwrap_or("-"),
                r.tokens,
                r.time_s
            );
        }
    }
    if progress.tty {
        eprintln!();
    }
    if let Some(l) = log {
        l.commit()?;
    }
    if let (Some(path), Some(page)) = (&a.html, &page) {
        page.write(path)?;
    }
    if a.json {
        writeln!(std::io::stdout(), "{}", serde_json::to_string(&summary)?)?;
    } else {
        write!(std::io::stdout(), "{}", summary.render())?;
    }
    Ok(())
}
