//! Options shared by the subcommands that load a model.

use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use tah::model::kv_cache::KvType;
use tah::model::Model;
use tah::sample::SamplingParams;
use tah::session::{Session, SessionOptions};
use tah::tah::{TahOptions, ThinkMode};

#[derive(Args, Clone, Debug)]
pub struct ModelArgs {
    /// The .tah (or .gguf) model file.
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// Worker threads (default: all cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Context length in tokens (default: the model's, capped at 4096).
    #[arg(long, default_value_t = 0)]
    pub ctx: usize,
    /// KV cache element type: f16, f32 or q8_0 (34 bytes per 32 values, for
    /// models whose head dimension is a multiple of 32).
    #[arg(long, default_value = "f16", value_parser = parse_kv)]
    pub kv_type: KvType,
    /// Most prompt tokens per forward pass (longer prompts are fed in chunks).
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Which tokens get the second pass: auto (the decider), never (base model),
    /// always (every token to the maximum depth), budget:R (the decider ranks
    /// tokens; an adaptive threshold keeps the share of depth-2 tokens near R,
    /// e.g. budget:0.06).
    #[arg(long, default_value = "auto", value_parser = parse_think)]
    pub think: ThinkMode,
    /// Decider threshold override, in [0, 1] (continue iff probability > threshold).
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Maximum depth override (1 = base model only).
    #[arg(long)]
    pub max_depth: Option<usize>,
    /// Send this fraction of tokens to depth 2, whatever the decider says
    /// (measures TaH's cost on any TaH file, e.g. with random weights). The
    /// picks are spread evenly from a random start, so any run of n tokens
    /// has within one of n times this many.
    #[arg(long)]
    pub hard_rate: Option<f32>,
}

/// The sampling flags of `run`, `chat` and `eval`. Unset flags keep the
/// command's defaults: the sampler's own ([`SamplingParams::default`]: Qwen3's
/// recommended temperature 0.6, top-k 20, top-p 0.95), greedy for `eval`.
#[derive(Args, Clone, Debug)]
pub struct SamplingArgs {
    /// Sampling temperature; 0 = greedy [default: 0.6; eval: 0].
    #[arg(long)]
    pub temp: Option<f32>,
    /// Keep the k most likely tokens (0 = off) [default: 20].
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Nucleus sampling mass (1 = off) [default: 0.95].
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Drop tokens below min_p × the most likely one's probability (0 = off) [default: 0].
    #[arg(long)]
    pub min_p: Option<f32>,
    /// Random seed; runs are reproducible for a given seed (chat turn i and
    /// eval problem i use seed + i) [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Divide a positive logit (multiply a negative one) of each token seen in
    /// the last --repeat-last-n tokens by this (1 = off) [default: 1].
    #[arg(long)]
    pub repeat_penalty: Option<f32>,
    /// How many recent tokens (prompt included) the penalties look at (0 = off) [default: 64].
    #[arg(long)]
    pub repeat_last_n: Option<usize>,
    /// Subtracted from the logit of each token seen in the window, in [-2, 2] [default: 0].
    #[arg(long, allow_hyphen_values = true)]
    pub presence_penalty: Option<f32>,
    /// Subtracted per occurrence in the window, in [-2, 2] [default: 0].
    #[arg(long, allow_hyphen_values = true)]
    pub frequency_penalty: Option<f32>,
    /// Add BIAS (in [-100, 100]; -100 bans the token) to token ID's logit:
    /// ID=BIAS, repeatable or comma-separated.
    #[arg(long, value_name = "ID=BIAS", value_delimiter = ',', value_parser = parse_bias, allow_hyphen_values = true)]
    pub logit_bias: Vec<(u32, f32)>,
}

impl SamplingArgs {
    /// `defaults` with the flags given on the command line put over them.
    pub fn params(&self, defaults: SamplingParams) -> SamplingParams {
        SamplingParams {
            temperature: self.temp.unwrap_or(defaults.temperature),
            top_k: self.top_k.unwrap_or(defaults.top_k),
            top_p: self.top_p.unwrap_or(defaults.top_p),
            min_p: self.min_p.unwrap_or(defaults.min_p),
            seed: self.seed.unwrap_or(defaults.seed),
            repeat_penalty: self.repeat_penalty.unwrap_or(defaults.repeat_penalty),
            repeat_last_n: self.repeat_last_n.unwrap_or(defaults.repeat_last_n),
            presence_penalty: self.presence_penalty.unwrap_or(defaults.presence_penalty),
            frequency_penalty: self.frequency_penalty.unwrap_or(defaults.frequency_penalty),
        }
    }
}

/// `ID=BIAS`, e.g. `15=-100`.
fn parse_bias(s: &str) -> Result<(u32, f32), String> {
    let (id, bias) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}': expected ID=BIAS, e.g. 15=-100"))?;
    let id = id
        .trim()
        .parse()
        .map_err(|e| format!("'{s}': token id: {e}"))?;
    let bias = bias
        .trim()
        .parse()
        .map_err(|e| format!("'{s}': bias: {e}"))?;
    Ok((id, bias))
}

pub fn parse_kv(s: &str) -> Result<KvType, String> {
    match s {
        "f16" => Ok(KvType::F16),
        "f32" => Ok(KvType::F32),
        "q8_0" => Ok(KvType::Q8_0),
        _ => Err(format!("unknown KV type '{s}' (f16, f32, q8_0)")),
    }
}

pub fn parse_think(s: &str) -> Result<ThinkMode, String> {
    s.parse()
}

pub type Error = Box<dyn std::error::Error>;

impl ModelArgs {
    /// Sets up the thread pool, loads the model and opens a session.
    pub fn open(&self) -> Result<(Arc<Model>, Session), Error> {
        if let Some(t) = self.threshold {
            if !(0.0..=1.0).contains(&t) {
                return Err(format!("--threshold {t} is outside [0, 1]").into());
            }
        }
        if self.max_depth == Some(0) {
            return Err("--max-depth must be at least 1".into());
        }
        if let Some(t) = self.threads {
            if t == 0 {
                return Err("--threads must be at least 1".into());
            }
            // The global pool can only be set once per process; later calls keep it.
            tah::threads::set_global(t)?;
        }
        let model = Arc::new(Model::load(&self.model)?);
        let opts = SessionOptions {
            ctx: self.ctx,
            kv_type: self.kv_type,
            batch: self.batch,
            tah: TahOptions {
                mode: self.think,
                threshold: self.threshold,
                max_depth: self.max_depth,
                hard_rate: self.hard_rate,
            },
        };
        if model.cfg.tah.is_none()
            && self.think != ThinkMode::Never
            && self.max_depth.is_some_and(|d| d > 1)
        {
            return Err(format!(
                "{}: a plain model (no TaH parts): only depth 1 is possible",
                self.model.display()
            )
            .into());
        }
        let session = Session::new(Arc::clone(&model), &opts)?;
        Ok((model, session))
    }
}

/// Collects the generated tokens of one answer for an `--html` page, marking
/// the ones inside `<think>…</think>`.
pub struct HtmlCollector {
    pub tokens: Vec<tah::app::html::HtmlToken>,
    filter: tah::app::tutor::ThinkFilter,
    has_text: bool,
}

impl HtmlCollector {
    /// `starts_thinking`: the prompt left a `<think>` span open. `has_text`:
    /// the model has a tokenizer (else tokens show as `[id]`).
    pub fn new(starts_thinking: bool, has_text: bool) -> HtmlCollector {
        HtmlCollector {
            tokens: Vec::new(),
            filter: tah::app::tutor::ThinkFilter::new(starts_thinking),
            has_text,
        }
    }

    pub fn push(&mut self, e: &tah::generate::TokenEvent) {
        let mut thinking = self.filter.inside();
        self.filter.push(e.piece, &mut |t, _| thinking |= t);
        let text = if self.has_text {
            e.piece.to_string()
        } else {
            format!("[{}] ", e.id)
        };
        self.tokens.push(tah::app::html::HtmlToken {
            id: e.id,
            text,
            depth: e.depth,
            prob: (!e.prob.is_nan()).then_some(e.prob),
            thinking,
        });
    }

    /// Appends what the decoder flushed at the end (text not yet in a token).
    pub fn finish(mut self, full_text: &str) -> Vec<tah::app::html::HtmlToken> {
        if self.has_text {
            let seen: usize = self.tokens.iter().map(|t| t.text.len()).sum();
            if let (Some(rest), Some(last)) = (full_text.get(seen..), self.tokens.last_mut()) {
                last.text.push_str(rest);
            }
        }
        self.tokens
    }
}
