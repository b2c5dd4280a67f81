//! `tah chat`: an interactive, multi-turn conversation. The whole conversation is
//! re-rendered with the chat template each turn and only the tokens after the
//! longest prefix already in the cache are fed, so the cache (both depths) stays
//! consistent even when a template rewrites earlier turns.

use crate::common::{Error, HtmlCollector, ModelArgs, SamplingArgs};
use crate::run::{depth_colour, print_stats, stats_line};
use clap::Args;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use tah::api::ChatWindow;
use tah::app::html::HtmlPage;
use tah::app::tutor::{prompt_opens_thinking, ThinkFilter, TUTOR_SYSTEM_PROMPT};
use tah::generate::{generate, ContextShift, GenerateOptions, TokenEvent};
use tah::sample::SamplingParams;
use tah::text::ChatMessage;

#[derive(Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// System message.
    #[arg(long)]
    pub system: Option<String>,
    /// Most new tokens per answer.
    #[arg(short = 'n', long, default_value_t = 1024)]
    pub n_predict: usize,
    /// Ask a thinking model not to think (enable_thinking=false).
    #[arg(long)]
    pub no_think: bool,
    /// Colour each token by its depth.
    #[arg(long)]
    pub show_depth: bool,
    /// Print statistics after each answer.
    #[arg(long)]
    pub stats: bool,
    /// Math tutor: a system prompt that works step by step, checks the
    /// student's reasoning and asks guiding questions instead of giving the
    /// answer away (--system is appended to it).
    #[arg(long)]
    pub tutor: bool,
    /// Stream the model's thinking (<think>…</think>, dimmed) too; by default it
    /// is hidden (toggle with /show-thinking).
    #[arg(long)]
    pub show_thinking: bool,
    /// Write the whole conversation, each answer token shaded by its depth, to
    /// this HTML page (rewritten after every answer).
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// End an answer when it contains TEXT (not shown); repeatable, at most 16.
    #[arg(long, value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Stop with "context full" instead of dropping the oldest turns (after
    /// the system prompt) when the conversation outgrows the context.
    #[arg(long)]
    pub no_context_shift: bool,
    /// Tokens a context shift keeps at the start (default: the system
    /// prompt's).
    #[arg(long, value_name = "N")]
    pub keep: Option<usize>,
}

const HELP: &str =
    "commands: /reset (new conversation), /think on|off, /show-thinking (toggle), /stats, /exit";

pub fn chat(a: ChatArgs) -> Result<(), Error> {
    let (model, mut session) = a.model.open()?;
    let tok = model
        .tokenizer
        .as_ref()
        .ok_or("this model has no tokenizer")?;
    let tmpl = model
        .chat_template
        .as_ref()
        .ok_or("this model has no chat template")?;
    let mut messages: Vec<ChatMessage> = Vec::new();
    let system = match (a.tutor, &a.system) {
        (true, Some(s)) => Some(format!("{TUTOR_SYSTEM_PROMPT}\n\n{s}")),
        (true, None) => Some(TUTOR_SYSTEM_PROMPT.to_string()),
        (false, s) => s.clone(),
    };
    if let Some(s) = system {
        messages.push(ChatMessage::new("system", s));
    }
    let mut show_thinking = a.show_thinking;
    let dim = std::io::stdout().is_terminal();
    let mut page = a.html.as_ref().map(|_| {
        let mut p = HtmlPage::new(if a.tutor {
            "tah chat (tutor)"
        } else {
            "tah chat"
        });
        p.subtitle(format!(
            "model {}, think {}",
            a.model.model.display(),
            session.think.mode
        ));
        if let Some(m) = messages.first() {
            p.plain("system", m.content.clone());
        }
        p
    });
    let base = messages.clone();
    // What the model still sees of the conversation (context shift).
    let mut window = ChatWindow::default();
    let shift = (!a.no_context_shift).then_some(a.keep);
    let mut thinking = !a.no_think;
    let mut show_stats = a.stats;
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("[tah] chatting with {} — {HELP}", a.model.model.display());
    }
    let mut stdin = std::io::stdin().lock();
    let mut line = Vec::new();
    let mut turn = 0u64;
    loop {
        if interactive {
            eprint!("\n> ");
        }
        line.clear();
        if stdin.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        // A line that is not UTF-8 (a binary paste, another encoding) is
        // refused on its own; the conversation goes on.
        let Ok(input) = std::str::from_utf8(&line) else {
            eprintln!("[tah] that line is not valid UTF-8: ignored");
            continue;
        };
        let input = input.trim_end_matches(['\n', '\r']);
        match input.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                messages = base.clone();
                session.reset();
                window.reset();
                if let Some(p) = page.as_mut() {
                    p.heading("new conversation");
                }
                eprintln!("[tah] new conversation");
                continue;
            }
            "/think on" => {
                thinking = true;
                continue;
            }
            "/think off" => {
                thinking = false;
                continue;
            }
            "/show-thinking" => {
                show_thinking = !show_thinking;
                eprintln!(
                    "[tah] thinking {}",
                    if show_thinking { "shown" } else { "hidden" }
                );
                continue;
            }
            "/stats" => {
                show_stats = !show_stats;
                eprintln!(
                    "[tah] statistics after each answer: {}",
                    if show_stats { "on" } else { "off" }
                );
                continue;
            }
            s if s.starts_with('/') => {
                eprintln!("[tah] {HELP}");
                continue;
            }
            _ => {}
        }
        messages.push(ChatMessage::new("user", input));
        let enable_thinking = (!thinking).then_some(false);
        // With context shift, the oldest turns go when the context runs short.
        let ids = match window.fit(&mut session, &messages, true, enable_thinking, shift) {
            Ok(ids) if ids.len() < session.ctx() => ids,
            Ok(ids) => {
                eprintln!("[tah] the conversation no longer fits the context ({} tokens); /reset to start over", ids.len());
                messages.pop();
                continue;
            }
            Err(e) => {
                eprintln!("[tah] {e}; /reset to start over");
                messages.pop();
                continue;
            }
        };
        let text = tmpl.render(window.view(), true, enable_thinking)?;
        // Keep the cached prefix the new rendering shares; feed the rest.
        let keep = session.keep_shared_prefix(&ids);
        let base = a.sampling.params(SamplingParams::default());
        let sampling = SamplingParams {
            seed: base.seed.wrapping_add(turn),
            ..base
        };
        let opts = GenerateOptions {
            max_tokens: a.n_predict,
            sampling,
            stop_at_eog: true,
            logit_bias: a.sampling.logit_bias.clone(),
            stop: a.stop.clone(),
            context_shift: shift.map(|keep| {
                if ids.len().saturating_add(a.n_predict) <= session.ctx() {
                    ContextShift::default() // no shift can happen
                } else {
                    window.context_shift(&session, keep)
                }
            }),
        };
        let mut out = std::io::stdout().lock();
        let opens = prompt_opens_thinking(&text);
        let mut filter = ThinkFilter::new(opens);
        let mut collect = page.as_ref().map(|_| HtmlCollector::new(opens, true));
        let mut announced = false;
        // A failed write to stdout stops generation and fails the command.
        let mut write_error: Option<std::io::Error> = None;
        let mut on_token = |e: &TokenEvent| {
            if let Some(c) = collect.as_mut() {
                c.push(e);
            }
            // An end-of-generation token's event may carry text held back for
            // the stop strings before the token's own text (not shown).
            let eog_text;
            let piece = if tok.is_eog(e.id) {
                eog_text = tok.decode(&[e.id]);
                match e.piece.strip_suffix(eog_text.as_str()) {
                    Some(held) if !held.is_empty() => held,
                    _ => return true,
                }
            } else {
                e.piece
            };
            let colour = if a.show_depth {
                depth_colour(e.depth)
            } else {
                ""
            };
            filter.push(piece, &mut |thinking, t| {
                if thinking && !show_thinking {
                    if !announced && interactive {
                        eprint!("\x1b[2m[thinking…]\x1b[0m ");
                        announced = true;
                    }
                    return;
                }
                let colour = if thinking && dim && colour.is_empty() {
                    "\x1b[2m"
                } else {
                    colour
                };
                let reset = if colour.is_empty() { "" } else { "\x1b[0m" };
                if let Err(err) = write!(out, "{colour}{t}{reset}") {
                    write_error.get_or_insert(err);
                }
            });
            if let Err(err) = out.flush() {
                write_error.get_or_insert(err);
            }
            write_error.is_none()
        };
        let g = generate(
            &mut session,
            Some(tok),
            &ids[keep..],
            &opts,
            None,
            &mut on_token,
        )?;
        window.record(&g.shifts);
        if !g.shifts.is_empty() && show_stats {
            eprintln!("[tah] context shift: oldest turns dropped");
        }
        if let Some(e) = write_error {
            return Err(format!("cannot write to stdout: {e}").into());
        }
        let mut flushed: Option<std::io::Error> = None;
        filter.flush(&mut |thinking, t| {
            if !thinking || show_thinking {
                if let Err(e) = write!(out, "{t}") {
                    flushed.get_or_insert(e);
                }
            }
        });
        if let Some(e) = flushed {
            return Err(format!("cannot write to stdout: {e}").into());
        }
        writeln!(out)?;
        let answer = g
            .tokens
            .iter()
            .copied()
            .filter(|&t| !tok.is_eog(t))
            .collect::<Vec<_>>();
        // A stop string cut the answer: the text before it is the answer.
        let answer = if g.stop == tah::generate::StopReason::StopString {
            g.text.clone()
        } else {
            tok.decode(&answer)
        };
        messages.push(ChatMessage::new("assistant", answer));
        if let (Some(path), Some(page), Some(c)) = (&a.html, page.as_mut(), collect) {
            page.plain("user", input);
            let tokens = c
                .finish(&g.text)
                .into_iter()
                .filter(|t| !tok.is_eog(t.id))
                .collect();
            page.tokens("assistant", tokens);
            page.note(stats_line(&g));
            page.write(path)?;
        }
        if show_stats {
            print_stats(&g, session.think.mode);
        }
        turn += 1;
    }
    Ok(())
}
