//! `tah run`: one prompt, streamed answer.

use crate::common::{Error, HtmlCollector, ModelArgs, SamplingArgs};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use tah::app::output::write_output;
use tah::generate::{generate, ContextShift, GenerateOptions, Generation, LogitsLog, TokenEvent};
use tah::sample::SamplingParams;
use tah::text::ChatMessage;

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// The prompt text.
    #[arg(short = 'p', long, conflicts_with_all = ["prompt_ids", "file"])]
    pub prompt: Option<String>,
    /// The prompt as token ids: 1,2,3.
    #[arg(long, value_delimiter = ',')]
    pub prompt_ids: Option<Vec<u32>>,
    /// Read the prompt text from a file.
    #[arg(short = 'f', long)]
    pub file: Option<PathBuf>,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// System message (with --chat).
    #[arg(long)]
    pub system: Option<String>,
    /// Ask a thinking model (Qwen3) not to think (with --chat: enable_thinking=false).
    #[arg(long)]
    pub no_think: bool,
    /// Most new tokens.
    #[arg(short = 'n', long, default_value_t = 256)]
    pub n_predict: usize,
    /// Do not stop at end-of-generation tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Colour each streamed token by its depth (depth 2 yellow, deeper red).
    #[arg(long)]
    pub show_depth: bool,
    /// Print one JSON object (prompt_ids, prompt_depths, tokens, depths, text, stats) instead of streaming.
    #[arg(long)]
    pub json: bool,
    /// Write the final logits (prefill_logits [T, V], decode_logits [n, V], f32) to this safetensors file.
    #[arg(long)]
    pub logits_out: Option<PathBuf>,
    /// Write the prompt and the answer, each token shaded by its depth (decider
    /// probability on hover), to this self-contained HTML page.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Stop when the answer contains TEXT (not printed); repeatable, at most 16.
    #[arg(long, value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Stop with "context full" instead of dropping the oldest tokens after
    /// the kept prefix when generation reaches the end of the context.
    #[arg(long)]
    pub no_context_shift: bool,
    /// Tokens a context shift keeps at the start (default: the first).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep: usize,
}

/// ANSI colour of a depth for --show-depth.
pub fn depth_colour(depth: u8) -> &'static str {
    match depth {
        0 | 1 => "",
        2 => "\x1b[1;33m",
        _ => "\x1b[1;31m",
    }
}

pub fn run(a: RunArgs) -> Result<(), Error> {
    let (model, mut session) = a.model.open()?;
    // The prompt as the HTML page shows it, and whether it opens a <think> span.
    let mut prompt_shown = String::new();
    let prompt: Vec<u32> = match (&a.prompt_ids, &a.prompt, &a.file) {
        (Some(ids), _, _) => {
            prompt_shown = format!("token ids: {ids:?}");
            ids.clone()
        }
        (None, text, file) => {
            let text = match (text, file) {
                (Some(t), _) => t.clone(),
                (None, Some(f)) => {
                    std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?
                }
                (None, None) => {
                    return Err("give a prompt: -p TEXT, -f FILE or --prompt-ids 1,2,3".into())
                }
            };
            let tok = model
                .tokenizer
                .as_ref()
                .ok_or("this model has no tokenizer: use --prompt-ids")?;
            let text = if a.chat {
                let tmpl = model
                    .chat_template
                    .as_ref()
                    .ok_or("this model has no chat template")?;
                let mut msgs = Vec::new();
                if let Some(s) = &a.system {
                    msgs.push(ChatMessage::new("system", s.clone()));
                }
                msgs.push(ChatMessage::new("user", text));
                tmpl.render(&msgs, true, a.no_think.then_some(false))?
            } else {
                text
            };
            prompt_shown.clone_from(&text);
            tok.encode(&text, true)?
        }
    };
    if prompt.is_empty() {
        return Err("the prompt is empty".into());
    }
    if prompt.len() >= session.ctx() {
        return Err(format!(
            "the prompt has {} tokens; the context holds {} (raise --ctx)",
            prompt.len(),
            session.ctx()
        )
        .into());
    }
    let opts = GenerateOptions {
        max_tokens: a.n_predict,
        sampling: a.sampling.params(SamplingParams::default()),
        stop_at_eog: !a.ignore_eos,
        logit_bias: a.sampling.logit_bias.clone(),
        stop: a.stop.clone(),
        context_shift: (!a.no_context_shift).then(|| ContextShift {
            keep: a.keep,
            turn_starts: Vec::new(),
        }),
    };
    let mut log = a.logits_out.as_ref().map(|_| LogitsLog::default());
    let stream = !a.json;
    let mut out = std::io::stdout().lock();
    let mut collect = a.html.as_ref().map(|_| {
        HtmlCollector::new(
            tah::app::tutor::prompt_opens_thinking(&prompt_shown),
            model.tokenizer.is_some(),
        )
    });
    // A failed write to stdout (a full disk, a closed pipe) stops generation
    // and fails the command.
    let mut write_error = None;
    let mut on_token = |e: &TokenEvent| {
        if let Some(c) = collect.as_mut() {
            c.push(e);
        }
        if stream {
            let colour = if a.show_depth {
                depth_colour(e.depth)
            } else {
                ""
            };
            let reset = if colour.is_empty() { "" } else { "\x1b[0m" };
            if let Err(err) = write!(out, "{colour}{}{reset}", e.piece).and_then(|_| out.flush()) {
                write_error = Some(err);
                return false;
            }
        }
        true
    };
    let g = generate(
        &mut session,
        model.tokenizer.as_ref(),
        &prompt,
        &opts,
        log.as_mut(),
        &mut on_token,
    )?;
    if let Some(e) = write_error {
        return Err(format!("cannot write to stdout: {e}").into());
    }
    if stream {
        writeln!(out)?;
    } else {
        writeln!(out, "{}", serde_json::to_string(&g)?)?;
    }
    if let (Some(path), Some(log)) = (&a.logits_out, &log) {
        write_logits(path, log, model.cfg.vocab)?;
    }
    if let (Some(path), Some(c)) = (&a.html, collect) {
        let mut page = tah::app::html::HtmlPage::new("tah run");
        page.subtitle(format!(
            "model {}, think {}",
            a.model.model.display(),
            session.think.mode
        ));
        page.plain("prompt", prompt_shown);
        page.tokens("answer", c.finish(&g.text));
        page.note(stats_line(&g));
        page.write(path)?;
    }
    print_stats(&g, session.think.mode);
    Ok(())
}

pub fn print_stats(g: &Generation, mode: tah::tah::ThinkMode) {
    let s = &g.stats;
    eprintln!(
        "\n[tah] prompt {} tokens ({:.1} t/s), generated {} tokens ({:.1} t/s), stop: {:?}",
        s.prompt_tokens, s.prefill_tokens_per_s, s.generated_tokens, s.decode_tokens_per_s, g.stop
    );
    eprintln!(
        "[tah] think {mode}: tokens per depth {:?}, hard rate {:.1}% (prompt: {} hard), average depth {:.3}, KV bytes per depth {:?}",
        s.tokens_per_depth,
        100.0 * s.hard_rate,
        s.prompt_hard_tokens,
        s.avg_depth,
        s.kv_bytes_per_depth
    );
    if let (Some(t), Some(r), Some(n)) = (s.budget_target, s.budget_rate, s.budget_tokens) {
        eprintln!(
            "[tah] think budget: target {:.2}%, achieved {:.2}% over {n} generated tokens after warm-up",
            100.0 * t,
            100.0 * r
        );
    }
}

/// One line of statistics for the HTML page.
pub fn stats_line(g: &Generation) -> String {
    let s = &g.stats;
    let mut line = format!(
        "{} generated tokens at {:.1} tokens/s; tokens per depth {:?}; hard rate {:.1}%; average depth {:.3}; stop: {:?}",
        s.generated_tokens,
        s.decode_tokens_per_s,
        s.tokens_per_depth,
        100.0 * s.hard_rate,
        s.avg_depth,
        g.stop
    );
    if let (Some(t), Some(r)) = (s.budget_target, s.budget_rate) {
        line += &format!(
            "; think budget {:.1}%, achieved {:.1}% after warm-up",
            100.0 * t,
            100.0 * r
        );
    }
    line
}

fn write_logits(path: &std::path::Path, log: &LogitsLog, vocab: usize) -> Result<(), Error> {
    use safetensors::{Dtype, View};
    use std::borrow::Cow;
    struct F32s<'a>(&'a [f32], Vec<usize>);
    impl View for F32s<'_> {
        fn dtype(&self) -> Dtype {
            Dtype::F32
        }
        fn shape(&self) -> &[usize] {
            &self.1
        }
        fn data(&self) -> Cow<'_, [u8]> {
            Cow::Owned(self.0.iter().flat_map(|v| v.to_le_bytes()).collect())
        }
        fn data_len(&self) -> usize {
            self.0.len() * 4
        }
    }
    let tensors = [
        (
            "prefill_logits",
            F32s(&log.prefill, vec![log.prefill.len() / vocab, vocab]),
        ),
        (
            "decode_logits",
            F32s(&log.decode, vec![log.decode.len() / vocab, vocab]),
        ),
    ];
    let bytes =
        safetensors::serialize(tensors, None).map_err(|e| format!("{}: {e}", path.display()))?;
    write_output(path, |w| w.write_all(&bytes))?;
    Ok(())
}
