//! Model hyper-parameters read from a `.tah` file, and the semantic checks that
//! make a file usable: every required tensor present with the shape the
//! hyper-parameters imply, head counts that divide, a decider whose input width
//! matches its layer list.

use crate::format::{keys, GgufError, GgufFile, MetaValue};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Qwen3,
    Qwen2,
    Llama,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Qwen3 => "qwen3",
            Arch::Qwen2 => "qwen2",
            Arch::Llama => "llama",
        }
    }
}

/// Base model hyper-parameters.
#[derive(Clone, Debug)]
pub struct Config {
    pub arch: Arch,
    pub n_layers: usize,
    pub dim: usize,
    pub ffn_dim: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub ctx_len: usize,
    pub rope_base: f32,
    pub rms_eps: f32,
    /// LM head tied to the token embedding (no `output.weight`).
    pub tied: bool,
    /// q/k/v biases (qwen2).
    pub qkv_bias: bool,
    /// Per-head RMSNorm on q and k (qwen3).
    pub qk_norm: bool,
    pub tah: Option<TahConfig>,
}

/// Think-at-Hard settings (`tah.*`).
#[derive(Clone, Debug)]
pub struct TahConfig {
    pub max_iter: usize,
    pub input_topk: usize,
    pub lora_rank: usize,
    pub lora_alpha: f32,
    /// llama.cpp stems of the adapted linears.
    pub lora_targets: Vec<String>,
    pub threshold: f32,
    pub decider_dtype: String,
    pub decider_topk: usize,
    pub decider_layers: Vec<usize>,
    pub decider_hidden_dims: Vec<usize>,
    pub decider_expansion: usize,
    pub normalize_input: bool,
    pub synthetic: bool,
}

/// A file that parses as GGUF but cannot be used as a model.
#[derive(Debug)]
pub enum ModelError {
    Gguf(GgufError),
    MissingKey {
        file: String,
        key: String,
    },
    BadKey {
        file: String,
        key: String,
        why: String,
    },
    MissingTensor {
        file: String,
        tensor: String,
    },
    WrongShape {
        file: String,
        tensor: String,
        got: Vec<u64>,
        want: Vec<u64>,
    },
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelError::Gguf(e) => write!(f, "{e}"),
            ModelError::MissingKey { file, key } => {
                write!(f, "{file}: missing metadata key '{key}'")
            }
            ModelError::BadKey { file, key, why } => {
                write!(f, "{file}: metadata key '{key}': {why}")
            }
            ModelError::MissingTensor { file, tensor } => {
                write!(f, "{file}: missing required tensor '{tensor}'")
            }
            ModelError::WrongShape {
                file,
                tensor,
                got,
                want,
            } => {
                write!(
                    f,
                    "{file}: tensor '{tensor}' has shape {got:?}, expected {want:?} (row-major)"
                )
            }
        }
    }
}

impl std::error::Error for ModelError {}

impl From<GgufError> for ModelError {
    fn from(e: GgufError) -> Self {
        ModelError::Gguf(e)
    }
}

struct Meta<'a> {
    f: &'a GgufFile,
    file: String,
}

impl Meta<'_> {
    fn missing(&self, key: &str) -> ModelError {
        ModelError::MissingKey {
            file: self.file.clone(),
            key: key.to_string(),
        }
    }
    fn bad(&self, key: &str, why: impl Into<String>) -> ModelError {
        ModelError::BadKey {
            file: self.file.clone(),
            key: key.to_string(),
            why: why.into(),
        }
    }
    /// A positive integer no larger than `max` (bounds what the file can make us allocate).
    fn usize(&self, key: &str, max: u64) -> Result<usize, ModelError> {
        let v = self.f.get(key).ok_or_else(|| self.missing(key))?;
        let n = v
            .as_u64()
            .ok_or_else(|| self.bad(key, format!("expected an unsigned integer, found {v:?}")))?;
        if n == 0 || n > max {
            return Err(self.bad(key, format!("{n} is out of range 1..={max}")));
        }
        Ok(n as usize)
    }
    fn opt_usize(&self, key: &str, max: u64) -> Result<Option<usize>, ModelError> {
        if self.f.get(key).is_none() {
            return Ok(None);
        }
        self.usize(key, max).map(Some)
    }
    fn f32(&self, key: &str) -> Result<f32, ModelError> {
        let v = self.f.get(key).ok_or_else(|| self.missing(key))?;
        let x = v
            .as_f64()
            .ok_or_else(|| self.bad(key, format!("expected a number, found {v:?}")))?
            as f32;
        if !x.is_finite() {
            return Err(self.bad(key, "not finite"));
        }
        Ok(x)
    }
    fn usize_list(&self, key: &str, max: u64) -> Result<Vec<usize>, ModelError> {
        let v = self.f.get(key).ok_or_else(|| self.missing(key))?;
        let a = v
            .as_array()
            .ok_or_else(|| self.bad(key, "expected an array"))?;
        a.iter()
            .map(|x| {
                x.as_u64()
                    .filter(|&n| n <= max)
                    .map(|n| n as usize)
                    .ok_or_else(|| self.bad(key, format!("element {x:?} out of range")))
            })
            .collect()
    }
}

/// Largest dimension we accept from a file (2^24: far above any model we run,
/// small enough that products of a few cannot overflow).
const MAX_DIM: u64 = 1 << 24;
/// Most decider MLP blocks (`tah.decider.hidden_dims` entries) we accept.
const MAX_DECIDER_BLOCKS: usize = 64;

impl Config {
    /// Reads and checks the hyper-parameters and the tensor table.
    pub fn from_gguf(f: &GgufFile) -> Result<Config, ModelError> {
        let m = Meta {
            f,
            file: f.path().display().to_string(),
        };
        let arch_name = f
            .get_str(keys::ARCHITECTURE)
            .ok_or_else(|| m.missing(keys::ARCHITECTURE))?;
        let arch = match arch_name {
            "qwen3" => Arch::Qwen3,
            "qwen2" => Arch::Qwen2,
            "llama" => Arch::Llama,
            other => {
                return Err(m.bad(
                    keys::ARCHITECTURE,
                    format!("'{other}' is not supported (qwen3, qwen2, llama)"),
                ))
            }
        };
        let k = |s: &str| keys::arch_key(arch_name, s);
        use keys::arch as a;
        let dim = m.usize(&k(a::EMBEDDING_LENGTH), MAX_DIM)?;
        let n_heads = m.usize(&k(a::HEAD_COUNT), 4096)?;
        let n_kv_heads = m.opt_usize(&k(a::HEAD_COUNT_KV), 4096)?.unwrap_or(n_heads);
        if n_heads % n_kv_heads != 0 {
            return Err(m.bad(
                &k(a::HEAD_COUNT_KV),
                format!("{n_kv_heads} does not divide the head count {n_heads}"),
            ));
        }
        let head_dim = match m.opt_usize(&k(a::KEY_LENGTH), 4096)? {
            Some(hd) => hd,
            None => {
                if dim % n_heads != 0 {
                    return Err(m.bad(
                        &k(a::HEAD_COUNT),
                        format!("{n_heads} does not divide the embedding length {dim}"),
                    ));
                }
                dim / n_heads
            }
        };
        if head_dim % 2 != 0 {
            return Err(m.bad(
                &k(a::KEY_LENGTH),
                format!("head dimension {head_dim} is odd"),
            ));
        }
        if let Some(vd) = m.opt_usize(&k(a::VALUE_LENGTH), 4096)? {
            if vd != head_dim {
                return Err(m.bad(
                    &k(a::VALUE_LENGTH),
                    "value head dimension differs from key head dimension",
                ));
            }
        }
        let embd = f
            .tensor(keys::TOKEN_EMBD)
            .ok_or_else(|| ModelError::MissingTensor {
                file: m.file.clone(),
                tensor: keys::TOKEN_EMBD.into(),
            })?;
        let vocab = embd.dims.get(1).copied().unwrap_or(0) as usize;
        if let Some(v) = m.opt_usize(&k(a::VOCAB_SIZE), MAX_DIM)? {
            if v != vocab {
                return Err(m.bad(
                    &k(a::VOCAB_SIZE),
                    format!("{v} but token_embd.weight has {vocab} rows"),
                ));
            }
        }
        let cfg = Config {
            arch,
            n_layers: m.usize(&k(a::BLOCK_COUNT), 4096)?,
            dim,
            ffn_dim: m.usize(&k(a::FEED_FORWARD_LENGTH), MAX_DIM)?,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab,
            ctx_len: m.opt_usize(&k(a::CONTEXT_LENGTH), 1 << 24)?.unwrap_or(4096),
            rope_base: m
                .f32(&k(a::ROPE_FREQ_BASE))
                .unwrap_or(if arch == Arch::Llama { 10000.0 } else { 1e6 }),
            rms_eps: m.f32(&k(a::RMS_EPS))?,
            tied: f.tensor(keys::OUTPUT).is_none(),
            qkv_bias: f.tensor(&keys::blk(0, "attn_q", "bias")).is_some(),
            qk_norm: arch == Arch::Qwen3,
            tah: None,
        };
        if let Some(rd) = m.opt_usize(&k(a::ROPE_DIMENSION_COUNT), 4096)? {
            if rd != head_dim {
                return Err(m.bad(
                    &k(a::ROPE_DIMENSION_COUNT),
                    "partial rotary embeddings are not supported",
                ));
            }
        }
        let tah = if f.get(keys::MAX_ITER).is_some() {
            Some(read_tah(&m, &cfg)?)
        } else {
            None
        };
        let cfg = Config { tah, ..cfg };
        cfg.check_tensors(f, &m.file)?;
        Ok(cfg)
    }

    /// Every tensor the forward pass needs, with its row-major shape.
    pub fn required_tensors(&self) -> Vec<(String, Vec<u64>)> {
        let (d, f, v) = (self.dim as u64, self.ffn_dim as u64, self.vocab as u64);
        let q = (self.n_heads * self.head_dim) as u64;
        let kv = (self.n_kv_heads * self.head_dim) as u64;
        let hd = self.head_dim as u64;
        let mut t = vec![
            (keys::TOKEN_EMBD.to_string(), vec![v, d]),
            (keys::OUTPUT_NORM.to_string(), vec![d]),
        ];
        if !self.tied {
            t.push((keys::OUTPUT.to_string(), vec![v, d]));
        }
        for l in 0..self.n_layers {
            let b = |s: &str, shape: Vec<u64>| (keys::blk(l, s, "weight"), shape);
            t.push(b("attn_norm", vec![d]));
            t.push(b("attn_q", vec![q, d]));
            t.push(b("attn_k", vec![kv, d]));
            t.push(b("attn_v", vec![kv, d]));
            t.push(b("attn_output", vec![d, q]));
            t.push(b("ffn_norm", vec![d]));
            t.push(b("ffn_gate", vec![f, d]));
            t.push(b("ffn_up", vec![f, d]));
            t.push(b("ffn_down", vec![d, f]));
            if self.qkv_bias {
                for (s, n) in [("attn_q", q), ("attn_k", kv), ("attn_v", kv)] {
                    t.push((keys::blk(l, s, "bias"), vec![n]));
                }
            }
            if self.qk_norm {
                t.push(b("attn_q_norm", vec![hd]));
                t.push(b("attn_k_norm", vec![hd]));
            }
            if let Some(tah) = &self.tah {
                for stem in &tah.lora_targets {
                    let (n_in, n_out) = match stem.as_str() {
                        "attn_q" => (d, q),
                        "attn_k" | "attn_v" => (d, kv),
                        "attn_output" => (q, d),
                        "ffn_gate" | "ffn_up" => (d, f),
                        _ => (f, d), // ffn_down (targets were checked in read_tah)
                    };
                    let r = tah.lora_rank as u64;
                    t.push((keys::lora_a(l, stem), vec![r, n_in]));
                    t.push((keys::lora_b(l, stem), vec![n_out, r]));
                }
            }
        }
        if let Some(tah) = &self.tah {
            t.extend(decider_tensors(tah, self.dim));
        }
        t
    }

    fn check_tensors(&self, f: &GgufFile, file: &str) -> Result<(), ModelError> {
        // Every layer has at least 9 tensors. Refuse a layer count the tensor
        // table cannot back before listing what it needs: otherwise a few bytes
        // of metadata (4096 layers) make that list megabytes long.
        let min = self.n_layers * 9 + 2;
        if f.tensors().len() < min {
            return Err(ModelError::BadKey {
                file: file.into(),
                key: keys::arch_key(self.arch.name(), keys::arch::BLOCK_COUNT),
                why: format!(
                    "{} layers need at least {min} tensors, the file has {}",
                    self.n_layers,
                    f.tensors().len()
                ),
            });
        }
        for (name, want) in self.required_tensors() {
            let t = f.tensor(&name).ok_or_else(|| ModelError::MissingTensor {
                file: file.into(),
                tensor: name.clone(),
            })?;
            let got = t.shape();
            if got != want {
                return Err(ModelError::WrongShape {
                    file: file.into(),
                    tensor: name,
                    got,
                    want,
                });
            }
        }
        Ok(())
    }
}

/// The decider's tensors (reference state-dict names under `tah.decider.`).
pub fn decider_tensors(t: &TahConfig, hidden: usize) -> Vec<(String, Vec<u64>)> {
    let p = |s: &str| format!("{}{s}", keys::DECIDER_PREFIX);
    let h = hidden as u64;
    let n_in = (t.decider_layers.len() * hidden + hidden) as u64;
    let d0 = t.decider_hidden_dims[0] as u64;
    let mut v = vec![
        (
            p("logits_projection.weight"),
            vec![h, t.decider_topk as u64],
        ),
        (p("logits_projection.bias"), vec![h]),
        (p("combined_projection.weight"), vec![d0, n_in]),
        (p("combined_projection.bias"), vec![d0]),
        (p("backbone.input_projection.weight"), vec![d0, d0]),
        (p("backbone.input_projection.bias"), vec![d0]),
    ];
    if t.normalize_input {
        let w = (t.decider_layers.len() * hidden) as u64;
        v.push((p("layer_norm_hidden_states.weight"), vec![w]));
        v.push((p("layer_norm_hidden_states.bias"), vec![w]));
    }
    let dims = &t.decider_hidden_dims;
    for i in 0..dims.len() {
        let (din, dout) = (dims[i] as u64, *dims.get(i + 1).unwrap_or(&dims[i]) as u64);
        let e = din * t.decider_expansion as u64;
        let b = |s: &str| p(&format!("backbone.blocks.{i}.{s}"));
        v.push((b("layer_norm.weight"), vec![din]));
        v.push((b("layer_norm.bias"), vec![din]));
        v.push((b("mlp.0.weight"), vec![e, din]));
        v.push((b("mlp.0.bias"), vec![e]));
        v.push((b("mlp.3.weight"), vec![dout, e]));
        v.push((b("mlp.3.bias"), vec![dout]));
        if din != dout {
            v.push((b("dim_change.weight"), vec![dout, din]));
            v.push((b("dim_change.bias"), vec![dout]));
        }
    }
    let last = *dims.last().unwrap() as u64;
    v.push((p("backbone.output_layer.0.weight"), vec![last]));
    v.push((p("backbone.output_layer.0.bias"), vec![last]));
    v.push((p("backbone.output_layer.1.weight"), vec![1, last]));
    v.push((p("backbone.output_layer.1.bias"), vec![1]));
    v
}

fn read_tah(m: &Meta, cfg: &Config) -> Result<TahConfig, ModelError> {
    let targets = match m.f.get(keys::LORA_TARGETS) {
        Some(MetaValue::Array(a)) => a
            .iter()
            .map(|v| {
                let s = v
                    .as_str()
                    .ok_or_else(|| m.bad(keys::LORA_TARGETS, "expected strings"))?;
                if !keys::LINEARS.iter().any(|(g, _)| *g == s) {
                    return Err(m.bad(
                        keys::LORA_TARGETS,
                        format!("'{s}' is not an adaptable linear"),
                    ));
                }
                Ok(s.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(m.bad(keys::LORA_TARGETS, "expected an array of strings")),
        None => return Err(m.missing(keys::LORA_TARGETS)),
    };
    // Each target adds two tensors per layer to the list of required tensors:
    // repeats would let a few bytes of metadata make that list huge.
    if let Some((i, t)) = targets
        .iter()
        .enumerate()
        .find(|(i, t)| targets[..*i].contains(t))
    {
        return Err(m.bad(
            keys::LORA_TARGETS,
            format!("'{t}' appears twice (entry {i})"),
        ));
    }
    let t = TahConfig {
        max_iter: m.usize(keys::MAX_ITER, crate::model::forward::MAX_DEPTH as u64)?,
        input_topk: m.usize(keys::INPUT_TOPK, cfg.vocab as u64)?,
        lora_rank: m.usize(keys::LORA_RANK, MAX_DIM)?,
        lora_alpha: m.f32(keys::LORA_ALPHA)?,
        lora_targets: targets,
        threshold: m.f32(keys::DECIDER_THRESHOLD)?,
        decider_dtype: m
            .f
            .get_str(keys::DECIDER_DTYPE)
            .unwrap_or("f32")
            .to_string(),
        decider_topk: m.usize(keys::DECIDER_TOPK, cfg.vocab as u64)?,
        decider_layers: m.usize_list(keys::DECIDER_LAYERS, cfg.n_layers as u64)?,
        decider_hidden_dims: m.usize_list(keys::DECIDER_HIDDEN_DIMS, MAX_DIM)?,
        decider_expansion: m.usize(keys::DECIDER_EXPANSION, 1024)?,
        normalize_input: m
            .f
            .get(keys::DECIDER_NORMALIZE_INPUT)
            .and_then(MetaValue::as_bool)
            .unwrap_or(false),
        synthetic: m
            .f
            .get(keys::SYNTHETIC)
            .and_then(MetaValue::as_bool)
            .unwrap_or(false),
    };
    if t.decider_layers.is_empty() {
        return Err(m.bad(keys::DECIDER_LAYERS, "empty"));
    }
    if t.decider_hidden_dims.is_empty() || t.decider_hidden_dims.contains(&0) {
        return Err(m.bad(keys::DECIDER_HIDDEN_DIMS, "empty or has a zero width"));
    }
    // Each block adds 6-8 tensors to the list of required tensors, which is
    // built before any is looked up: bound it (real deciders have a few blocks).
    if t.decider_hidden_dims.len() > MAX_DECIDER_BLOCKS {
        return Err(m.bad(
            keys::DECIDER_HIDDEN_DIMS,
            format!(
                "{} blocks (at most {MAX_DECIDER_BLOCKS})",
                t.decider_hidden_dims.len()
            ),
        ));
    }
    Ok(t)
}
