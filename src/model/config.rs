//! Model hyper-parameters read from a `.tah` file, and the semantic checks that
//! make a file usable.
//!
//! Reading ([`Config::from_source`]) only checks each key's type; every range
//! and consistency rule lives in one place, [`Config::validate`], against what the
//! engine supports (head dimension within the attention kernel's limit, depth
//! within the loader's cap, ...). The runtime's loader and `tah-convert` (on the
//! file it is about to write, through [`ModelSource`]) run the same code, so the
//! converter cannot write a file the runtime refuses.

use crate::format::{keys, GgufError, GgufFile, MetaArray, MetaValue};
use crate::model::forward::{MAX_DEPTH, MAX_HEAD_DIM};
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
    /// `tah.version` (1 when absent).
    pub version: u64,
    /// `tah.decider.class` (`MLPIterDecider` when absent).
    pub decider_class: String,
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

/// Where a model's metadata and tensor shapes come from: a file being loaded,
/// or the converter's plan of a file about to be written.
pub trait ModelSource {
    /// Names the file in errors.
    fn source_name(&self) -> String;
    fn meta(&self, key: &str) -> Option<&MetaValue>;
    /// A tensor's shape in row-major order (outermost first).
    fn tensor_shape(&self, name: &str) -> Option<Vec<u64>>;
    fn tensor_count(&self) -> usize;
}

impl ModelSource for GgufFile {
    fn source_name(&self) -> String {
        self.path().display().to_string()
    }
    fn meta(&self, key: &str) -> Option<&MetaValue> {
        self.get(key)
    }
    fn tensor_shape(&self, name: &str) -> Option<Vec<u64>> {
        self.tensor(name).map(|t| t.shape())
    }
    fn tensor_count(&self) -> usize {
        self.tensors().len()
    }
}

/// Reads typed values; ranges are [`Config::validate`]'s business.
struct Meta<'a> {
    src: &'a dyn ModelSource,
    file: String,
}

impl Meta<'_> {
    fn get(&self, key: &str) -> Option<&MetaValue> {
        self.src.meta(key)
    }
    fn missing(&self, key: &str) -> ModelError {
        ModelError::MissingKey {
            file: self.file.clone(),
            key: key.to_string(),
        }
    }
    fn bad(&self, key: &str, why: impl Into<String>) -> ModelError {
        bad_key(&self.file, key, why)
    }
    /// An unsigned integer (any width).
    fn usize(&self, key: &str) -> Result<usize, ModelError> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        let n = v
            .as_u64()
            .ok_or_else(|| self.bad(key, format!("expected an unsigned integer, found {v:?}")))?;
        usize::try_from(n).map_err(|_| self.bad(key, format!("{n} does not fit this machine")))
    }
    fn opt_usize(&self, key: &str) -> Result<Option<usize>, ModelError> {
        if self.get(key).is_none() {
            return Ok(None);
        }
        self.usize(key).map(Some)
    }
    /// A number (NaN and infinities are read; `validate` judges them).
    fn f32(&self, key: &str) -> Result<f32, ModelError> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        Ok(v.as_f64()
            .ok_or_else(|| self.bad(key, format!("expected a number, found {v:?}")))?
            as f32)
    }
    fn array(&self, key: &str, max_len: usize) -> Result<&MetaArray, ModelError> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        let a = v
            .as_array()
            .ok_or_else(|| self.bad(key, format!("expected an array, found {v:?}")))?;
        // The list is copied out: bound it before allocating.
        if a.len() > max_len {
            return Err(self.bad(key, format!("{} entries (at most {max_len})", a.len())));
        }
        Ok(a)
    }
    fn usize_list(&self, key: &str, max_len: usize) -> Result<Vec<usize>, ModelError> {
        let a = self.array(key, max_len)?;
        let mut out = Vec::new();
        out.try_reserve_exact(a.len())
            .map_err(|_| self.bad(key, "out of memory"))?;
        for x in a.iter() {
            let n = x
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    self.bad(key, format!("element {x:?} is not an unsigned integer"))
                })?;
            out.push(n);
        }
        Ok(out)
    }
    fn opt_bool(&self, key: &str) -> Result<Option<bool>, ModelError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.bad(key, format!("expected a bool, found {v:?}"))),
        }
    }
    fn opt_str(&self, key: &str) -> Result<Option<&str>, ModelError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.bad(key, format!("expected a string, found {v:?}"))),
        }
    }
}

fn bad_key(file: &str, key: &str, why: impl Into<String>) -> ModelError {
    ModelError::BadKey {
        file: file.to_string(),
        key: key.to_string(),
        why: why.into(),
    }
}

/// Largest dimension we accept from a file (2^24: far above any model we run,
/// small enough that products of a few cannot overflow).
pub const MAX_DIM: usize = 1 << 24;
/// Most decoder layers.
pub const MAX_LAYERS: usize = 4096;
/// Most attention heads.
pub const MAX_HEADS: usize = 4096;
/// Longest context (2^24 positions, well within u32).
pub const MAX_CTX: usize = 1 << 24;
/// Most decider MLP blocks (`tah.decider.hidden_dims` entries) we accept.
pub const MAX_DECIDER_BLOCKS: usize = 64;
/// Largest decider MLP expansion factor.
pub const MAX_DECIDER_EXPANSION: usize = 1024;
/// `tah.version` values this engine reads.
pub const TAH_VERSIONS: [u64; 1] = [1];
/// Decider classes this engine runs.
pub const DECIDER_CLASSES: [&str; 1] = ["MLPIterDecider"];
/// Decider dtypes (`tah.decider.dtype`).
pub const DECIDER_DTYPES: [&str; 3] = ["f32", "bf16", "f16"];
/// Metadata keys holding token ids the engine uses, each checked against the
/// vocabulary (with every entry of `tah.eog_token_ids`).
pub const TOKEN_ID_KEYS: [&str; 2] = [keys::BOS_ID, keys::EOS_ID];

impl Config {
    /// Reads and checks the hyper-parameters and the tensor table of a file.
    pub fn from_gguf(f: &GgufFile) -> Result<Config, ModelError> {
        Self::from_source(f)
    }

    /// Reads the hyper-parameters (types only), then [`validate`](Self::validate)s
    /// them, checks the token-id keys against the vocabulary, and checks that
    /// every tensor the configuration needs is there with its shape.
    pub fn from_source(src: &dyn ModelSource) -> Result<Config, ModelError> {
        let m = Meta {
            src,
            file: src.source_name(),
        };
        let cfg = read_config(&m)?;
        cfg.validate(&m.file)?;
        check_token_ids(&m, cfg.vocab)?;
        cfg.check_tensors(src, &m.file)?;
        Ok(cfg)
    }

    /// Every range and consistency rule on the hyper-parameters and TaH
    /// settings, against what the engine supports. Errors name the key;
    /// `file` names the file in them.
    pub fn validate(&self, file: &str) -> Result<(), ModelError> {
        let arch = self.arch.name();
        let k = |s: &str| keys::arch_key(arch, s);
        let bad = |key: &str, why: String| Err(bad_key(file, key, why));
        let range = |key: &str, v: usize, lo: usize, hi: usize| {
            if v < lo || v > hi {
                bad(key, format!("{v} is out of range {lo}..={hi}"))
            } else {
                Ok(())
            }
        };
        use keys::arch as a;
        range(&k(a::BLOCK_COUNT), self.n_layers, 1, MAX_LAYERS)?;
        range(&k(a::EMBEDDING_LENGTH), self.dim, 1, MAX_DIM)?;
        range(&k(a::FEED_FORWARD_LENGTH), self.ffn_dim, 1, MAX_DIM)?;
        range(&k(a::HEAD_COUNT), self.n_heads, 1, MAX_HEADS)?;
        range(&k(a::HEAD_COUNT_KV), self.n_kv_heads, 1, self.n_heads)?;
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            bad(
                &k(a::HEAD_COUNT_KV),
                format!(
                    "{} does not divide the head count {}",
                    self.n_kv_heads, self.n_heads
                ),
            )?;
        }
        // The attention kernel keeps one head in a stack buffer of MAX_HEAD_DIM,
        // and RoPE rotates pairs of values.
        let hd = self.head_dim;
        if !(2..=MAX_HEAD_DIM).contains(&hd) || !hd.is_multiple_of(2) {
            bad(
                &k(a::KEY_LENGTH),
                format!(
                    "head dimension {hd} is not supported (even, 2..={MAX_HEAD_DIM}; \
                     without this key it is embedding_length / head_count)"
                ),
            )?;
        }
        // Widths of q and of k/v feed allocations: bound their products.
        let q = self.n_heads.checked_mul(hd).filter(|&q| q <= MAX_DIM);
        if q.is_none() {
            bad(
                &k(a::HEAD_COUNT),
                format!("{} heads × {hd} values exceed {MAX_DIM}", self.n_heads),
            )?;
        }
        range(&k(a::VOCAB_SIZE), self.vocab, 1, MAX_DIM)?;
        range(&k(a::CONTEXT_LENGTH), self.ctx_len, 1, MAX_CTX)?;
        if !(self.rms_eps.is_finite() && self.rms_eps > 0.0) {
            bad(
                &k(a::RMS_EPS),
                format!("{} is not a finite positive number", self.rms_eps),
            )?;
        }
        if !(self.rope_base.is_finite() && self.rope_base > 0.0) {
            bad(
                &k(a::ROPE_FREQ_BASE),
                format!("{} is not a finite positive number", self.rope_base),
            )?;
        }
        if let Some(t) = &self.tah {
            t.validate(self, file)?;
        }
        Ok(())
    }

    /// Every tensor the forward pass needs, with its row-major shape (for a
    /// configuration that passed [`validate`](Self::validate)).
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
            t.extend(decider_tensors(tah, self.dim).unwrap_or_default());
        }
        t
    }

    fn check_tensors(&self, f: &dyn ModelSource, file: &str) -> Result<(), ModelError> {
        // Every layer has at least 9 tensors. Refuse a layer count the tensor
        // table cannot back before listing what it needs: otherwise a few bytes
        // of metadata (4096 layers) make that list megabytes long.
        let min = self.n_layers * 9 + 2;
        if f.tensor_count() < min {
            return Err(ModelError::BadKey {
                file: file.into(),
                key: keys::arch_key(self.arch.name(), keys::arch::BLOCK_COUNT),
                why: format!(
                    "{} layers need at least {min} tensors, the file has {}",
                    self.n_layers,
                    f.tensor_count()
                ),
            });
        }
        for (name, want) in self.required_tensors() {
            let got = f
                .tensor_shape(&name)
                .ok_or_else(|| ModelError::MissingTensor {
                    file: file.into(),
                    tensor: name.clone(),
                })?;
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

/// The decider's tensors (reference state-dict names under `tah.decider.`), or
/// `None` when `decider_hidden_dims` is empty (which [`Config::validate`] refuses).
pub fn decider_tensors(t: &TahConfig, hidden: usize) -> Option<Vec<(String, Vec<u64>)>> {
    let p = |s: &str| format!("{}{s}", keys::DECIDER_PREFIX);
    let h = hidden as u64;
    let n_in = (t.decider_layers.len() as u64 + 1).saturating_mul(h);
    let dims = &t.decider_hidden_dims;
    let d0 = *dims.first()? as u64;
    let last = *dims.last()? as u64;
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
        let w = (t.decider_layers.len() as u64).saturating_mul(h);
        v.push((p("layer_norm_hidden_states.weight"), vec![w]));
        v.push((p("layer_norm_hidden_states.bias"), vec![w]));
    }
    for i in 0..dims.len() {
        let (din, dout) = (dims[i] as u64, *dims.get(i + 1).unwrap_or(&dims[i]) as u64);
        let e = din.saturating_mul(t.decider_expansion as u64);
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
    v.push((p("backbone.output_layer.0.weight"), vec![last]));
    v.push((p("backbone.output_layer.0.bias"), vec![last]));
    v.push((p("backbone.output_layer.1.weight"), vec![1, last]));
    v.push((p("backbone.output_layer.1.bias"), vec![1]));
    Some(v)
}

/// The hyper-parameters, types checked (ranges are `validate`'s).
fn read_config(m: &Meta) -> Result<Config, ModelError> {
    let arch_name = match m.opt_str(keys::ARCHITECTURE)? {
        Some(a) => a,
        None => return Err(m.missing(keys::ARCHITECTURE)),
    };
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
    let dim = m.usize(&k(a::EMBEDDING_LENGTH))?;
    let n_heads = m.usize(&k(a::HEAD_COUNT))?;
    let n_kv_heads = m.opt_usize(&k(a::HEAD_COUNT_KV))?.unwrap_or(n_heads);
    let head_dim = match m.opt_usize(&k(a::KEY_LENGTH))? {
        Some(hd) => hd,
        None if n_heads == 0 => 0, // validate names head_count
        None => {
            if !dim.is_multiple_of(n_heads) {
                return Err(m.bad(
                    &k(a::HEAD_COUNT),
                    format!("{n_heads} does not divide the embedding length {dim}"),
                ));
            }
            dim / n_heads
        }
    };
    if let Some(vd) = m.opt_usize(&k(a::VALUE_LENGTH))? {
        if vd != head_dim {
            return Err(m.bad(
                &k(a::VALUE_LENGTH),
                format!("{vd} differs from the key head dimension {head_dim}"),
            ));
        }
    }
    if let Some(rd) = m.opt_usize(&k(a::ROPE_DIMENSION_COUNT))? {
        if rd != head_dim {
            return Err(m.bad(
                &k(a::ROPE_DIMENSION_COUNT),
                format!(
                    "{rd}: partial rotary embeddings are not supported (head dimension {head_dim})"
                ),
            ));
        }
    }
    let embd = m
        .src
        .tensor_shape(keys::TOKEN_EMBD)
        .ok_or_else(|| ModelError::MissingTensor {
            file: m.file.clone(),
            tensor: keys::TOKEN_EMBD.into(),
        })?;
    // Row-major (vocab, dim); check_tensors checks the shape.
    let vocab = embd
        .first()
        .map_or(0, |&v| usize::try_from(v).unwrap_or(usize::MAX));
    if let Some(v) = m.opt_usize(&k(a::VOCAB_SIZE))? {
        if v != vocab {
            return Err(m.bad(
                &k(a::VOCAB_SIZE),
                format!("{v} but token_embd.weight has {vocab} rows"),
            ));
        }
    }
    // Absent: the family's default. Present: used as it is (validate refuses
    // NaN, infinities and non-positive values rather than replacing them).
    let rope_base = match m.get(&k(a::ROPE_FREQ_BASE)) {
        None => {
            if arch == Arch::Llama {
                10000.0
            } else {
                1e6
            }
        }
        Some(_) => m.f32(&k(a::ROPE_FREQ_BASE))?,
    };
    let mut cfg = Config {
        arch,
        n_layers: m.usize(&k(a::BLOCK_COUNT))?,
        dim,
        ffn_dim: m.usize(&k(a::FEED_FORWARD_LENGTH))?,
        n_heads,
        n_kv_heads,
        head_dim,
        vocab,
        ctx_len: m.opt_usize(&k(a::CONTEXT_LENGTH))?.unwrap_or(4096),
        rope_base,
        rms_eps: m.f32(&k(a::RMS_EPS))?,
        tied: m.src.tensor_shape(keys::OUTPUT).is_none(),
        qkv_bias: m
            .src
            .tensor_shape(&keys::blk(0, "attn_q", "bias"))
            .is_some(),
        qk_norm: arch == Arch::Qwen3,
        tah: None,
    };
    if m.get(keys::MAX_ITER).is_some() {
        cfg.tah = Some(read_tah(m)?);
    }
    Ok(cfg)
}

fn read_tah(m: &Meta) -> Result<TahConfig, ModelError> {
    // At most one entry per adaptable linear: each adds two tensors per layer
    // to the list of required tensors (validate refuses repeats).
    let list = m.array(keys::LORA_TARGETS, keys::LINEARS.len())?;
    let mut targets = Vec::new();
    for v in list.iter() {
        match v.as_str() {
            Some(s) => targets.push(s.to_string()),
            None => return Err(m.bad(keys::LORA_TARGETS, format!("expected strings, found {v:?}"))),
        }
    }
    Ok(TahConfig {
        version: match m.get(keys::TAH_VERSION) {
            None => 1,
            Some(v) => v.as_u64().ok_or_else(|| {
                m.bad(
                    keys::TAH_VERSION,
                    format!("expected an unsigned integer, found {v:?}"),
                )
            })?,
        },
        decider_class: m
            .opt_str(keys::DECIDER_CLASS)?
            .unwrap_or(DECIDER_CLASSES[0])
            .to_string(),
        max_iter: m.usize(keys::MAX_ITER)?,
        input_topk: m.usize(keys::INPUT_TOPK)?,
        lora_rank: m.usize(keys::LORA_RANK)?,
        lora_alpha: m.f32(keys::LORA_ALPHA)?,
        lora_targets: targets,
        threshold: m.f32(keys::DECIDER_THRESHOLD)?,
        decider_dtype: m.opt_str(keys::DECIDER_DTYPE)?.unwrap_or("f32").to_string(),
        decider_topk: m.usize(keys::DECIDER_TOPK)?,
        decider_layers: m.usize_list(keys::DECIDER_LAYERS, MAX_LAYERS + 1)?,
        // Each block adds 6-8 tensors to the list of required tensors.
        decider_hidden_dims: m.usize_list(keys::DECIDER_HIDDEN_DIMS, MAX_DECIDER_BLOCKS)?,
        decider_expansion: m.usize(keys::DECIDER_EXPANSION)?,
        normalize_input: m.opt_bool(keys::DECIDER_NORMALIZE_INPUT)?.unwrap_or(false),
        synthetic: m.opt_bool(keys::SYNTHETIC)?.unwrap_or(false),
    })
}

impl TahConfig {
    /// The TaH rules of [`Config::validate`].
    fn validate(&self, cfg: &Config, file: &str) -> Result<(), ModelError> {
        let bad = |key: &str, why: String| Err(bad_key(file, key, why));
        let range = |key: &str, v: usize, lo: usize, hi: usize| {
            if v < lo || v > hi {
                bad(key, format!("{v} is out of range {lo}..={hi}"))
            } else {
                Ok(())
            }
        };
        if !TAH_VERSIONS.contains(&self.version) {
            bad(
                keys::TAH_VERSION,
                format!("{} is not a known version ({TAH_VERSIONS:?})", self.version),
            )?;
        }
        if !DECIDER_CLASSES.contains(&self.decider_class.as_str()) {
            bad(
                keys::DECIDER_CLASS,
                format!(
                    "'{}' is not supported ({DECIDER_CLASSES:?})",
                    self.decider_class
                ),
            )?;
        }
        // The loader keeps one KV cache per depth, at most MAX_DEPTH of them.
        range(keys::MAX_ITER, self.max_iter, 1, MAX_DEPTH)?;
        range(keys::INPUT_TOPK, self.input_topk, 1, cfg.vocab)?;
        range(keys::LORA_RANK, self.lora_rank, 1, MAX_DIM)?;
        if !self.lora_alpha.is_finite() {
            bad(
                keys::LORA_ALPHA,
                format!("{} is not finite", self.lora_alpha),
            )?;
        }
        if self.lora_targets.is_empty() {
            bad(keys::LORA_TARGETS, "empty".into())?;
        }
        for (i, t) in self.lora_targets.iter().enumerate() {
            if !keys::LINEARS.iter().any(|(g, _)| g == t) {
                bad(
                    keys::LORA_TARGETS,
                    format!("'{t}' is not an adaptable linear"),
                )?;
            }
            if self.lora_targets[..i].contains(t) {
                bad(
                    keys::LORA_TARGETS,
                    format!("'{t}' appears twice (entry {i})"),
                )?;
            }
        }
        // sigmoid(z) > threshold: outside [0, 1] (or NaN) the test is constant.
        if !(0.0..=1.0).contains(&self.threshold) {
            bad(
                keys::DECIDER_THRESHOLD,
                format!("{} is not in [0, 1]", self.threshold),
            )?;
        }
        if !DECIDER_DTYPES.contains(&self.decider_dtype.as_str()) {
            bad(
                keys::DECIDER_DTYPE,
                format!("'{}' is not one of {DECIDER_DTYPES:?}", self.decider_dtype),
            )?;
        }
        range(keys::DECIDER_TOPK, self.decider_topk, 1, cfg.vocab)?;
        if self.decider_layers.is_empty() {
            bad(keys::DECIDER_LAYERS, "empty".into())?;
        }
        // Hidden-state indices: 0 = embedding output .. n_layers = final norm.
        if let Some(&l) = self.decider_layers.iter().find(|&&l| l > cfg.n_layers) {
            bad(
                keys::DECIDER_LAYERS,
                format!("{l} is out of range 0..={}", cfg.n_layers),
            )?;
        }
        let dims = &self.decider_hidden_dims;
        if dims.is_empty() {
            bad(keys::DECIDER_HIDDEN_DIMS, "empty".into())?;
        }
        if let Some(&d) = dims.iter().find(|&&d| d == 0 || d > MAX_DIM) {
            bad(
                keys::DECIDER_HIDDEN_DIMS,
                format!("width {d} is out of range 1..={MAX_DIM}"),
            )?;
        }
        range(
            keys::DECIDER_EXPANSION,
            self.decider_expansion,
            1,
            MAX_DECIDER_EXPANSION,
        )?;
        // Products that size the decider's buffers.
        let n_in = (self.decider_layers.len() + 1).checked_mul(cfg.dim);
        if n_in.is_none_or(|n| n > MAX_DIM * 64) {
            bad(
                keys::DECIDER_LAYERS,
                format!(
                    "{} hidden states of {} values are too wide",
                    self.decider_layers.len(),
                    cfg.dim
                ),
            )?;
        }
        if dims.iter().any(|&d| {
            d.checked_mul(self.decider_expansion)
                .is_none_or(|e| e > MAX_DIM)
        }) {
            bad(
                keys::DECIDER_EXPANSION,
                format!(
                    "{} × the widest block exceeds {MAX_DIM}",
                    self.decider_expansion
                ),
            )?;
        }
        Ok(())
    }
}

/// The token ids the metadata names (bos, eos, end-of-generation) must
/// index the vocabulary, i.e. rows of the token embedding.
fn check_token_ids(m: &Meta, vocab: usize) -> Result<(), ModelError> {
    let check = |key: &str, v: &MetaValue| -> Result<(), ModelError> {
        let id = v
            .as_u64()
            .ok_or_else(|| m.bad(key, format!("expected a token id, found {v:?}")))?;
        if id >= vocab as u64 {
            return Err(m.bad(
                key,
                format!("token id {id} is outside the vocabulary of {vocab} tokens"),
            ));
        }
        Ok(())
    };
    for key in TOKEN_ID_KEYS {
        if let Some(v) = m.get(key) {
            check(key, v)?;
        }
    }
    if let Some(v) = m.get(keys::EOG_IDS) {
        let a = v
            .as_array()
            .ok_or_else(|| m.bad(keys::EOG_IDS, format!("expected an array, found {v:?}")))?;
        for id in a.iter() {
            check(keys::EOG_IDS, &id)?;
        }
    }
    Ok(())
}
