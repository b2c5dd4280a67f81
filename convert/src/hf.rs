//! Hugging Face base models (qwen3, qwen2, llama): `config.json` to llama.cpp's
//! metadata keys, and Hugging Face tensor names to llama.cpp's.

use crate::bail;
use crate::error::{Error, Result};
use crate::plan::{Data, Plan};
use crate::safetensors_in::Safetensors;
use crate::TypePolicy;
use serde::Deserialize;
use std::path::Path;
use tah::format::{keys, MetaValue};
use tah::quant::GgmlType;

/// The fields of `config.json` we use.
#[derive(Deserialize, Debug, Clone)]
pub struct HfConfig {
    pub model_type: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub rms_norm_eps: f64,
    pub rope_theta: Option<f64>,
    pub max_position_embeddings: usize,
    pub vocab_size: usize,
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    pub use_sliding_window: Option<bool>,
    #[serde(default)]
    pub attention_bias: Option<bool>,
    #[serde(default)]
    pub bos_token_id: Option<serde_json::Value>,
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
}

impl HfConfig {
    pub fn load(dir: &Path) -> Result<HfConfig> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::new(format!("{}: {e}", path.display())))?;
        let c: HfConfig = serde_json::from_str(&text)
            .map_err(|e| Error::new(format!("{}: {e}", path.display())))?;
        c.check()
            .map_err(|e| Error::new(format!("{}: {e}", path.display())))?;
        Ok(c)
    }

    fn check(&self) -> Result<()> {
        if !matches!(self.model_type.as_str(), "qwen3" | "qwen2" | "llama") {
            bail!(
                "model_type '{}' is not supported (qwen3, qwen2, llama)",
                self.model_type
            );
        }
        if self.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            bail!(
                "rope_scaling {} is not supported",
                self.rope_scaling.as_ref().unwrap()
            );
        }
        if self.use_sliding_window == Some(true) {
            bail!("sliding-window attention is not supported");
        }
        let dims = [
            self.hidden_size,
            self.intermediate_size,
            self.num_hidden_layers,
            self.num_attention_heads,
        ];
        if dims.contains(&0) || self.vocab_size == 0 {
            bail!("zero dimension in config");
        }
        if self.n_kv_heads() == 0 || !self.num_attention_heads.is_multiple_of(self.n_kv_heads()) {
            bail!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads,
                self.n_kv_heads()
            );
        }
        // The file stores these as u32: a larger value would be truncated.
        for (name, v) in [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.n_kv_heads()),
            ("head_dim", self.head_dim()),
            ("max_position_embeddings", self.max_position_embeddings),
            ("vocab_size", self.vocab_size),
        ] {
            if u32::try_from(v).is_err() {
                bail!("{name} = {v} does not fit the file's u32");
            }
        }
        // The runtime's rules, before anything is sized by these numbers.
        self.runtime_config()?
            .validate("config.json")
            .map_err(|e| Error::new(e.to_string()))?;
        Ok(())
    }

    /// The runtime's view of these hyper-parameters (base model only).
    pub fn runtime_config(&self) -> Result<tah::model::Config> {
        use tah::model::Arch;
        let arch = match self.model_type.as_str() {
            "qwen3" => Arch::Qwen3,
            "qwen2" => Arch::Qwen2,
            "llama" => Arch::Llama,
            other => bail!("model_type '{other}' is not supported (qwen3, qwen2, llama)"),
        };
        Ok(tah::model::Config {
            arch,
            n_layers: self.num_hidden_layers,
            dim: self.hidden_size,
            ffn_dim: self.intermediate_size,
            n_heads: self.num_attention_heads,
            n_kv_heads: self.n_kv_heads(),
            head_dim: self.head_dim(),
            vocab: self.vocab_size,
            ctx_len: self.max_position_embeddings,
            rope_base: self.rope_base() as f32,
            rms_eps: self.rms_norm_eps as f32,
            tied: self.tie_word_embeddings != Some(false),
            qkv_bias: self.model_type == "qwen2" || self.attention_bias == Some(true),
            qk_norm: arch == Arch::Qwen3,
            tah: None,
        })
    }

    pub fn n_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// Default RoPE base of each family when the config omits it.
    pub fn rope_base(&self) -> f64 {
        self.rope_theta.unwrap_or(if self.model_type == "llama" {
            10000.0
        } else {
            1_000_000.0
        })
    }
}

/// llama.cpp's metadata for the architecture (`c` passed [`HfConfig::load`]'s
/// checks, so every count fits its u32).
pub fn set_arch_metadata(plan: &mut Plan, c: &HfConfig) -> Result<()> {
    let u32_of = |name: &str, v: usize| {
        u32::try_from(v)
            .map_err(|_| Error::new(format!("config.json: {name} = {v} does not fit a u32")))
    };
    use keys::arch as a;
    let arch = c.model_type.as_str();
    let k = |s: &str| keys::arch_key(arch, s);
    plan.set(keys::ARCHITECTURE, MetaValue::String(arch.into()));
    plan.set(
        &k(a::CONTEXT_LENGTH),
        MetaValue::U32(u32_of(
            "max_position_embeddings",
            c.max_position_embeddings,
        )?),
    );
    plan.set(
        &k(a::EMBEDDING_LENGTH),
        MetaValue::U32(u32_of("hidden_size", c.hidden_size)?),
    );
    plan.set(
        &k(a::BLOCK_COUNT),
        MetaValue::U32(u32_of("num_hidden_layers", c.num_hidden_layers)?),
    );
    plan.set(
        &k(a::FEED_FORWARD_LENGTH),
        MetaValue::U32(u32_of("intermediate_size", c.intermediate_size)?),
    );
    plan.set(
        &k(a::HEAD_COUNT),
        MetaValue::U32(u32_of("num_attention_heads", c.num_attention_heads)?),
    );
    plan.set(
        &k(a::HEAD_COUNT_KV),
        MetaValue::U32(u32_of("num_key_value_heads", c.n_kv_heads())?),
    );
    plan.set(&k(a::ROPE_FREQ_BASE), MetaValue::F32(c.rope_base() as f32));
    plan.set(&k(a::RMS_EPS), MetaValue::F32(c.rms_norm_eps as f32));
    plan.set(
        &k(a::VOCAB_SIZE),
        MetaValue::U32(u32_of("vocab_size", c.vocab_size)?),
    );
    if arch == "qwen3" || c.head_dim() != c.hidden_size / c.num_attention_heads {
        plan.set(
            &k(a::KEY_LENGTH),
            MetaValue::U32(u32_of("head_dim", c.head_dim())?),
        );
        plan.set(
            &k(a::VALUE_LENGTH),
            MetaValue::U32(u32_of("head_dim", c.head_dim())?),
        );
    }
    if arch == "llama" {
        plan.set(
            &k(a::ROPE_DIMENSION_COUNT),
            MetaValue::U32(u32_of("head_dim", c.head_dim())?),
        );
    }
    Ok(())
}

/// Hugging Face name of a base tensor → llama.cpp name, or `None` for tensors
/// that are not part of the model (e.g. `rotary_emb.inv_freq`).
pub fn gguf_name(hf: &str) -> Option<String> {
    match hf {
        "model.embed_tokens.weight" => return Some(keys::TOKEN_EMBD.into()),
        "model.norm.weight" => return Some(keys::OUTPUT_NORM.into()),
        "lm_head.weight" => return Some(keys::OUTPUT.into()),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, module) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, suffix) = module.rsplit_once('.')?;
    let stem = match module {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        m => keys::LINEARS.iter().find(|(_, hf)| *hf == m)?.0,
    };
    Some(keys::blk(layer, stem, suffix))
}

/// llama.cpp's q/k row order for llama models: within each head, Hugging Face
/// keeps the two rotary halves apart (rotate-half), ggml's rope pairs adjacent
/// rows, so row `h·hd + 2i + j` of the output is row `h·hd + j·hd/2 + i` of the
/// input (j ∈ {0, 1}). Applies to weights (rows of `cols` values) and biases.
pub fn permute_rows_for_rope(v: &[f32], n_heads: usize, cols: usize) -> Vec<f32> {
    let rows = v.len() / cols;
    let hd = rows / n_heads;
    let mut out = vec![0f32; v.len()];
    for h in 0..n_heads {
        for i in 0..hd / 2 {
            for j in 0..2 {
                let dst = h * hd + 2 * i + j;
                let src = h * hd + j * (hd / 2) + i;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&v[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// Adds the base model's tensors to the plan, in llama.cpp's order.
pub fn add_base_tensors<'a>(
    plan: &mut Plan<'a>,
    c: &HfConfig,
    st: &'a Safetensors,
    policy: &TypePolicy,
) -> Result<()> {
    let h = c.hidden_size as u64;
    let kv = (c.n_kv_heads() * c.head_dim()) as u64;
    let q = (c.num_attention_heads * c.head_dim()) as u64;
    let ff = c.intermediate_size as u64;
    let v = c.vocab_size as u64;
    let tied = !st.names().any(|n| n == "lm_head.weight");
    if !tied && c.tie_word_embeddings == Some(true) {
        eprintln!("note: config says tie_word_embeddings but lm_head.weight is present: using it");
    }

    // (HF name, expected row-major shape)
    let mut wanted: Vec<(String, Vec<u64>)> =
        vec![("model.embed_tokens.weight".into(), vec![v, h])];
    for l in 0..c.num_hidden_layers {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        wanted.push((p("input_layernorm.weight"), vec![h]));
        wanted.push((p("self_attn.q_proj.weight"), vec![q, h]));
        wanted.push((p("self_attn.k_proj.weight"), vec![kv, h]));
        wanted.push((p("self_attn.v_proj.weight"), vec![kv, h]));
        if c.model_type == "qwen2" || c.attention_bias == Some(true) {
            wanted.push((p("self_attn.q_proj.bias"), vec![q]));
            wanted.push((p("self_attn.k_proj.bias"), vec![kv]));
            wanted.push((p("self_attn.v_proj.bias"), vec![kv]));
        }
        wanted.push((p("self_attn.o_proj.weight"), vec![h, q]));
        if c.model_type == "qwen3" {
            wanted.push((p("self_attn.q_norm.weight"), vec![c.head_dim() as u64]));
            wanted.push((p("self_attn.k_norm.weight"), vec![c.head_dim() as u64]));
        }
        wanted.push((p("post_attention_layernorm.weight"), vec![h]));
        wanted.push((p("mlp.gate_proj.weight"), vec![ff, h]));
        wanted.push((p("mlp.up_proj.weight"), vec![ff, h]));
        wanted.push((p("mlp.down_proj.weight"), vec![h, ff]));
    }
    wanted.push(("model.norm.weight".into(), vec![h]));
    if !tied {
        wanted.push(("lm_head.weight".into(), vec![v, h]));
    }

    for (hf, shape) in wanted {
        let t = st
            .get(&hf)
            .ok_or_else(|| Error::new(format!("missing tensor '{hf}'")))?;
        let got: Vec<u64> = t.shape.iter().map(|&d| d as u64).collect();
        if got != shape {
            bail!("tensor '{hf}': shape {got:?}, expected {shape:?} from config.json");
        }
        let name = gguf_name(&hf).expect("every wanted tensor has a llama.cpp name");
        let dims: Vec<u64> = shape.iter().rev().copied().collect();
        let src_ty = match st.data(&hf)? {
            Data::Encoded(ty, _) => ty,
            Data::F32(_) => GgmlType::F32,
        };
        let ty = policy.base_type(&name, &dims, src_ty);
        let permute = c.model_type == "llama"
            && (name.ends_with("attn_q.weight")
                || name.ends_with("attn_k.weight")
                || name.ends_with("attn_q.bias")
                || name.ends_with("attn_k.bias"));
        if permute {
            let heads = if name.contains("attn_q") {
                c.num_attention_heads
            } else {
                c.n_kv_heads()
            };
            let cols = if shape.len() == 2 {
                shape[1] as usize
            } else {
                1
            };
            let hf = hf.clone();
            plan.push(
                name,
                dims,
                ty,
                Box::new(move || Ok(Data::F32(permute_rows_for_rope(&st.f32(&hf)?, heads, cols)))),
            );
        } else {
            plan.push(name, dims, ty, Box::new(move || st.data(&hf)));
        }
    }
    Ok(())
}
