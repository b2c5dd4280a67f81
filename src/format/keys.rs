//! Names of the `.tah` layout: metadata keys and tensor names.
//!
//! A `.tah` file is a GGUF v3 file. The base model uses llama.cpp's keys and tensor
//! names, so a base-only `.tah` is an ordinary GGUF model; the Think-at-Hard parts
//! live under the `tah.` prefix. `docs/FORMAT.md` lists every key with its type.

/// `general.architecture`: `qwen3`, `qwen2` or `llama`.
pub const ARCHITECTURE: &str = "general.architecture";
pub const NAME: &str = "general.name";
pub const ALIGNMENT: &str = "general.alignment";
/// `general.file_type`: llama.cpp's `llama_ftype` of the bulk of the weights.
pub const FILE_TYPE: &str = "general.file_type";
pub const QUANTIZATION_VERSION: &str = "general.quantization_version";

/// Per-architecture hyper-parameters: `format!("{arch}.{suffix}")`.
pub mod arch {
    pub const CONTEXT_LENGTH: &str = "context_length";
    pub const EMBEDDING_LENGTH: &str = "embedding_length";
    pub const BLOCK_COUNT: &str = "block_count";
    pub const FEED_FORWARD_LENGTH: &str = "feed_forward_length";
    pub const HEAD_COUNT: &str = "attention.head_count";
    pub const HEAD_COUNT_KV: &str = "attention.head_count_kv";
    /// Head dimension of keys (qwen3 sets it; others derive embedding/head_count).
    pub const KEY_LENGTH: &str = "attention.key_length";
    pub const VALUE_LENGTH: &str = "attention.value_length";
    pub const RMS_EPS: &str = "attention.layer_norm_rms_epsilon";
    pub const ROPE_FREQ_BASE: &str = "rope.freq_base";
    pub const ROPE_DIMENSION_COUNT: &str = "rope.dimension_count";
    pub const VOCAB_SIZE: &str = "vocab_size";
}

/// `{arch}.{suffix}`.
pub fn arch_key(arch: &str, suffix: &str) -> String {
    format!("{arch}.{suffix}")
}

// Tokenizer. The whole Hugging Face tokenizer.json travels in the file, so the
// runtime has a single tokenizer path; GGUF inputs keep their tokenizer.ggml.* keys.
pub const TOKENIZER_HF_JSON: &str = "tokenizer.huggingface.json";
pub const CHAT_TEMPLATE: &str = "tokenizer.chat_template";
pub const BOS_ID: &str = "tokenizer.ggml.bos_token_id";
pub const EOS_ID: &str = "tokenizer.ggml.eos_token_id";
pub const PAD_ID: &str = "tokenizer.ggml.padding_token_id";
pub const ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
/// `[u32]`: every id that ends a turn or the text (eos, `<|im_end|>`,
/// `<|endoftext|>`, ...): generation stops on any of them.
pub const EOG_IDS: &str = "tah.eog_token_ids";

// Think-at-Hard settings.
/// `u32`: layout version of the `tah.*` keys (1).
pub const TAH_VERSION: &str = "tah.version";
/// `u32`: the deepest depth a token can reach (2 in released models).
pub const MAX_ITER: &str = "tah.max_iter";
/// `u32`: k of the soft input's top-k mix (`input_updater_kwargs.topk`).
pub const INPUT_TOPK: &str = "tah.input_topk";
/// `u32`: LoRA rank r.
pub const LORA_RANK: &str = "tah.lora.rank";
/// `f32`: LoRA alpha; the depth ≥ 2 linears add `(alpha / r)·B·(A·x)`.
pub const LORA_ALPHA: &str = "tah.lora.alpha";
/// `[string]`: the adapted linears, by llama.cpp tensor stem (`attn_q`, `ffn_down`, ...).
pub const LORA_TARGETS: &str = "tah.lora.targets";
/// `string`: the decider's class (`MLPIterDecider`).
pub const DECIDER_CLASS: &str = "tah.decider.class";
/// `f32`: continue iff `sigmoid(z) > threshold`, the threshold as the checkpoint
/// stores it (rounded to [`DECIDER_DTYPE`]).
pub const DECIDER_THRESHOLD: &str = "tah.decider.threshold";
/// `string`: dtype of the checkpoint's decider (`f32`, `bf16`, `f16`).
pub const DECIDER_DTYPE: &str = "tah.decider.dtype";
/// `u32`: how many sorted top logits the decider sees.
pub const DECIDER_TOPK: &str = "tah.decider.topk";
/// `[u32]`: hidden-state indices fed to the decider (0 = embedding output,
/// L = final-norm output).
pub const DECIDER_LAYERS: &str = "tah.decider.layers";
/// `[u32]`: widths of the residual MLP blocks.
pub const DECIDER_HIDDEN_DIMS: &str = "tah.decider.hidden_dims";
/// `u32`: MLP expansion factor inside each block.
pub const DECIDER_EXPANSION: &str = "tah.decider.expansion";
/// `bool`: LayerNorm the hidden states and softmax the top-k values first.
pub const DECIDER_NORMALIZE_INPUT: &str = "tah.decider.normalize_input";
/// `bool`: present and true when the LoRA/decider are random weights attached for
/// benchmarking (`tah-convert --synthetic-tah`); such a file answers nothing useful.
pub const SYNTHETIC: &str = "tah.synthetic";

/// The adapted linears, as (llama.cpp tensor stem, Hugging Face module path).
pub const LINEARS: [(&str, &str); 7] = [
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

// Base tensors (llama.cpp names).
pub const TOKEN_EMBD: &str = "token_embd.weight";
pub const OUTPUT_NORM: &str = "output_norm.weight";
/// Absent when the LM head is tied to `token_embd.weight`.
pub const OUTPUT: &str = "output.weight";

/// `blk.{layer}.{stem}.{suffix}`, e.g. `blk.3.attn_q.weight`.
pub fn blk(layer: usize, stem: &str, suffix: &str) -> String {
    format!("blk.{layer}.{stem}.{suffix}")
}

/// LoRA A of a linear: GGUF dims `[in, r]` (HF shape (r, in)).
pub fn lora_a(layer: usize, stem: &str) -> String {
    format!("tah.blk.{layer}.{stem}.lora_a")
}

/// LoRA B of a linear: GGUF dims `[r, out]` (HF shape (out, r)).
pub fn lora_b(layer: usize, stem: &str) -> String {
    format!("tah.blk.{layer}.{stem}.lora_b")
}

/// Decider tensors keep the reference's state-dict names under this prefix,
/// e.g. `tah.decider.backbone.blocks.0.mlp.0.weight`.
pub const DECIDER_PREFIX: &str = "tah.decider.";
