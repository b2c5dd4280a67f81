//! `tah chat`: an interactive, multi-turn conversation. The whole conversation is
//! re-rendered with the chat template each turn and only the tokens after the
//! longest prefix already in the cache are fed, so the cache (both depths) stays
//! consistent even when a template rewrites earlier turns.

use crate::common::{Error, ModelArgs};
use crate::run::{depth_colour, print_stats};
use clap::Args;
use std::io::{BufRead, IsTerminal, Write};
use tah::generate::{generate, GenerateOptions, TokenEvent};
use tah::sample::SamplingParams;
use tah::text::ChatMessage;

#[derive(Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// System message.
    #[arg(long)]
    pub system: Option<String>,
    /// Most new tokens per answer.
    #[arg(short = 'n', long, default_value_t = 1024)]
    pub n_predict: usize,
    #[arg(long, default_value_t = 0.6)]
    pub temp: f32,
    #[arg(long, default_value_t = 20)]
    pub top_k: usize,
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Ask a thinking model not to think (enable_thinking=false).
    #[arg(long)]
    pub no_think: bool,
    /// Colour each token by its depth.
    #[arg(long)]
    pub show_depth: bool,
    /// Print statistics after each answer.
    #[arg(long)]
    pub stats: bool,
}

const HELP: &str = "commands: /reset (new conversation), /think on|off, /stats, /exit";

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
    if let Some(s) = &a.system {
        messages.push(ChatMessage::new("system", s.clone()));
    }
    let base = messages.clone();
    let mut thinking = !a.no_think;
    let mut show_stats = a.stats;
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("[tah] chatting with {} — {HELP}", a.model.model.display());
    }
    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();
    let mut turn = 0u64;
    loop {
        if interactive {
            eprint!("\n> ");
        }
        line.clear();
        if stdin.read_line(&mut line)? == 0 {
            break;
        }
        let input = line.trim_end_matches(['\n', '\r']);
        match input.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                messages = base.clone();
                session.reset();
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
            "/stats" => {
                show_stats = !show_stats;
                continue;
            }
            s if s.starts_with('/') => {
                eprintln!("[tah] {HELP}");
                continue;
            }
            _ => {}
        }
        messages.push(ChatMessage::new("user", input));
        let text = tmpl.render(&messages, true, (!thinking).then_some(false))?;
        let ids = tok.encode(&text, true)?;
        // Keep the cached prefix the new rendering shares; feed the rest.
        let keep = session
            .tokens()
            .iter()
            .zip(&ids)
            .take_while(|(a, b)| a == b)
            .count()
            .min(ids.len() - 1);
        session.truncate(keep);
        if ids.len() >= session.ctx() {
            eprintln!("[tah] the conversation no longer fits the context ({} tokens); /reset to start over", ids.len());
            messages.pop();
            continue;
        }
        let sampling = SamplingParams {
            temperature: a.temp,
            top_k: a.top_k,
            top_p: a.top_p,
            min_p: a.min_p,
            seed: a.seed.wrapping_add(turn),
        };
        let opts = GenerateOptions {
            max_tokens: a.n_predict,
            sampling,
            stop_at_eog: true,
        };
        let mut out = std::io::stdout().lock();
        let mut on_token = |e: &TokenEvent| {
            if !tok.is_eog(e.id) {
                let colour = if a.show_depth {
                    depth_colour(e.depth)
                } else {
                    ""
                };
                let reset = if colour.is_empty() { "" } else { "\x1b[0m" };
                let _ = write!(out, "{colour}{}{reset}", e.piece);
                let _ = out.flush();
            }
            true
        };
        let g = generate(
            &mut session,
            Some(tok),
            &ids[keep..],
            &opts,
            None,
            &mut on_token,
        )?;
        drop(on_token);
        writeln!(std::io::stdout())?;
        let answer = g
            .tokens
            .iter()
            .copied()
            .filter(|&t| !tok.is_eog(t))
            .collect::<Vec<_>>();
        messages.push(ChatMessage::new("assistant", tok.decode(&answer)));
        if show_stats {
            print_stats(&g, session.think.mode);
        }
        turn += 1;
    }
    Ok(())
}
