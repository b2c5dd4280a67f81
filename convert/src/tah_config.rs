//! `tah_config.json`: the TaH settings saved next to a checkpoint.
//!
//! Only the fields the engine needs are read; unknown fields are ignored.

use crate::pickle::DType;
use serde::{Deserialize, Deserializer};
use std::fmt;
use std::path::{Path, PathBuf};

/// The official default of `input_updater_kwargs.topk`.
pub const DEFAULT_INPUT_UPDATER_TOPK: usize = 100;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TahConfig {
    /// Deepest iteration; the decider is never consulted at this depth.
    pub max_iter: u32,
    /// Decider class name, e.g. `MLPIterDecider`.
    #[serde(default)]
    pub iter_decider: Option<String>,
    pub iter_decider_kwargs: IterDeciderKwargs,
    /// `null` means the same decider is used at inference.
    #[serde(default)]
    pub eval_iter_decider: Option<String>,
    #[serde(default)]
    pub input_updater_kwargs: Option<InputUpdaterKwargs>,
    pub adapter_kwargs: AdapterKwargs,
}

/// The `MLPIterDecider` constructor kwargs. The structural ones are required;
/// the others fall back to the reference class defaults when merged.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct IterDeciderKwargs {
    pub topk: usize,
    pub hidden_states_size: usize,
    pub hidden_states_layer_nums: Vec<usize>,
    pub hidden_dims: Vec<usize>,
    #[serde(default)]
    pub expansion_factor: Option<usize>,
    #[serde(default)]
    pub dropout_rate: Option<f64>,
    #[serde(default)]
    pub normalize_input: Option<bool>,
    #[serde(default)]
    pub threshold: Option<f64>,
    /// Written as `{"__dtype__": true, "__str__": "torch.float32"}`; a plain
    /// string such as `"bfloat16"` is accepted too.
    #[serde(default, deserialize_with = "de_dtype")]
    pub dtype: Option<DType>,
    #[serde(default)]
    pub max_iter: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct InputUpdaterKwargs {
    #[serde(default = "default_input_updater_topk")]
    pub topk: usize,
}

fn default_input_updater_topk() -> usize {
    DEFAULT_INPUT_UPDATER_TOPK
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AdapterKwargs {
    pub r: usize,
    pub lora_alpha: f64,
    #[serde(default)]
    pub target_modules: Option<TargetModules>,
}

/// PEFT's `target_modules`: a name such as `"all-linear"` or a list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    Name(String),
    List(Vec<String>),
}

impl TahConfig {
    pub fn from_json(text: &str) -> Result<TahConfig, TahConfigError> {
        serde_json::from_str(text).map_err(TahConfigError::Json)
    }

    pub fn load(path: &Path) -> Result<TahConfig, TahConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| TahConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text)
    }

    /// `input_updater_kwargs.topk`, 100 when absent.
    pub fn input_updater_topk(&self) -> usize {
        self.input_updater_kwargs
            .as_ref()
            .map_or(DEFAULT_INPUT_UPDATER_TOPK, |k| k.topk)
    }
}

fn de_dtype<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DType>, D::Error> {
    use serde::de::Error;
    let v = serde_json::Value::deserialize(d)?;
    let name = match &v {
        serde_json::Value::Null => return Ok(None),
        serde_json::Value::String(s) => s.as_str(),
        serde_json::Value::Object(o) => match o.get("__str__") {
            Some(serde_json::Value::String(s)) => s.as_str(),
            _ => {
                return Err(D::Error::custom(format!(
                    "dtype object without a \"__str__\" string: {v}"
                )))
            }
        },
        _ => {
            return Err(D::Error::custom(format!(
                "dtype must be a string or a dtype object, found {v}"
            )))
        }
    };
    DType::from_torch_name(name).map(Some).ok_or_else(|| {
        D::Error::custom(format!(
            "unsupported dtype '{name}' (float32, bfloat16 or float16)"
        ))
    })
}

#[derive(Debug)]
pub enum TahConfigError {
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    Json(serde_json::Error),
}

impl fmt::Display for TahConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TahConfigError::Io { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            TahConfigError::Json(e) => write!(f, "tah_config.json: {e}"),
        }
    }
}

impl std::error::Error for TahConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TahConfigError::Io { source, .. } => Some(source),
            TahConfigError::Json(e) => Some(e),
        }
    }
}
