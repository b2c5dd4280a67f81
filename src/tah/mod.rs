//! Think-at-Hard: after the ordinary (depth-1) pass, the decider picks the hard
//! tokens; those run again (depth 2, LoRA on) from a soft input built from their
//! top-k logits, attending over both depths (duo-causal), and their final logits
//! are the sum over depths. `max_iter` > 2 repeats the step on the cumulative
//! logits; the decider is never consulted at the last depth.

pub mod budget;
pub mod decider;
pub mod soft_input;
pub mod step;

use std::fmt;
use std::str::FromStr;

/// Which tokens get deeper passes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ThinkMode {
    /// The decider chooses (the TaH method).
    Auto,
    /// Depth 1 only: exactly the base model.
    Never,
    /// Every token to the maximum depth (the paper's AlwaysThink baseline).
    Always,
    /// The decider ranks the tokens, and an adaptive threshold keeps the share
    /// of depth-2 tokens near the given rate in [0, 1] ([`budget`]).
    Budget(f32),
}

impl ThinkMode {
    /// Whether the decider runs in this mode.
    pub fn uses_decider(self) -> bool {
        matches!(self, ThinkMode::Auto | ThinkMode::Budget(_))
    }
}

impl FromStr for ThinkMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(ThinkMode::Auto),
            "never" => Ok(ThinkMode::Never),
            "always" => Ok(ThinkMode::Always),
            _ => match s.strip_prefix("budget:").map(str::parse::<f32>) {
                Some(Ok(r)) if (0.0..=1.0).contains(&r) => Ok(ThinkMode::Budget(r)),
                Some(_) => Err(format!(
                    "bad think budget '{s}': give a share of depth-2 tokens in [0, 1], e.g. budget:0.06"
                )),
                None => Err(format!(
                    "unknown think mode '{s}' (auto, never, always, budget:R)"
                )),
            },
        }
    }
}

impl fmt::Display for ThinkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ThinkMode::Auto => f.write_str("auto"),
            ThinkMode::Never => f.write_str("never"),
            ThinkMode::Always => f.write_str("always"),
            ThinkMode::Budget(r) => write!(f, "budget:{r}"),
        }
    }
}

/// Run-time TaH settings.
#[derive(Clone, Debug)]
pub struct TahOptions {
    pub mode: ThinkMode,
    /// Overrides the file's decider threshold (continue iff prob > threshold).
    pub threshold: Option<f32>,
    /// Overrides the file's `max_iter`.
    pub max_depth: Option<usize>,
    /// Benchmarking: send this fraction of tokens one depth further, spread
    /// evenly from a random start, whatever the decider says (it still runs,
    /// so its cost is counted).
    pub hard_rate: Option<f32>,
}

impl Default for TahOptions {
    fn default() -> Self {
        TahOptions {
            mode: ThinkMode::Auto,
            threshold: None,
            max_depth: None,
            hard_rate: None,
        }
    }
}

/// What happened to one token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenInfo {
    /// Deepest pass the token ran (1 = base only).
    pub depth: u8,
    /// The decider's depth-1 continue-probability (NaN where it was not run).
    pub prob: f32,
}
