//! `Config::validate` and the loader's other metadata checks: one refusal per
//! rule, each naming the key at fault. The files are a small valid qwen3 model
//! (2 layers, dim 32, vocab 100) written by the project's GGUF writer, with one
//! key changed.

use tah::format::{keys, GgufFile, GgufWriter, MetaValue};
use tah::model::{Model, ModelError};
use tah::quant::GgmlType;

const VOCAB: u64 = 100;

fn a(s: &str) -> String {
    keys::arch_key("qwen3", s)
}

/// A tiny model with `n_heads` heads (and as many kv heads) of `hd` values,
/// plus the metadata `extra` (set last, so it overrides).
fn model(hd: u64, n_heads: u64, extra: &[(&str, MetaValue)]) -> Vec<u8> {
    let dim = 32u64;
    let q = hd * n_heads;
    let mut w = GgufWriter::new();
    w.set(keys::ARCHITECTURE, MetaValue::String("qwen3".into()));
    w.set(&a(keys::arch::EMBEDDING_LENGTH), MetaValue::U32(dim as u32));
    w.set(&a(keys::arch::BLOCK_COUNT), MetaValue::U32(2));
    w.set(&a(keys::arch::FEED_FORWARD_LENGTH), MetaValue::U32(64));
    w.set(&a(keys::arch::HEAD_COUNT), MetaValue::U32(n_heads as u32));
    w.set(
        &a(keys::arch::HEAD_COUNT_KV),
        MetaValue::U32(n_heads as u32),
    );
    w.set(&a(keys::arch::KEY_LENGTH), MetaValue::U32(hd as u32));
    w.set(&a(keys::arch::RMS_EPS), MetaValue::F32(1e-6));
    w.set(&a(keys::arch::ROPE_FREQ_BASE), MetaValue::F32(1e6));
    for (k, v) in extra {
        w.set(k, v.clone());
    }
    // GGUF order: innermost first.
    let mut shapes: Vec<(String, Vec<u64>)> = vec![(keys::TOKEN_EMBD.into(), vec![dim, VOCAB])];
    for l in 0..2 {
        for (s, d) in [
            ("attn_norm", vec![dim]),
            ("attn_q", vec![dim, q]),
            ("attn_k", vec![dim, q]),
            ("attn_v", vec![dim, q]),
            ("attn_output", vec![q, dim]),
            ("attn_q_norm", vec![hd]),
            ("attn_k_norm", vec![hd]),
            ("ffn_norm", vec![dim]),
            ("ffn_gate", vec![dim, 64]),
            ("ffn_up", vec![dim, 64]),
            ("ffn_down", vec![64, dim]),
        ] {
            shapes.push((keys::blk(l, s, "weight"), d));
        }
    }
    shapes.push((keys::OUTPUT_NORM.into(), vec![dim]));
    for (name, dims) in &shapes {
        w.add_tensor(name, dims, GgmlType::F32).unwrap();
    }
    let mut sink = w.begin(Vec::new()).unwrap();
    for (_, dims) in &shapes {
        let n: u64 = dims.iter().product();
        sink.write_tensor(&vec![0u8; n as usize * 4]).unwrap();
    }
    sink.finish().unwrap()
}

fn load(bytes: Vec<u8>) -> Result<Model, ModelError> {
    Model::from_file(GgufFile::from_bytes("test.tah", bytes).unwrap())
}

/// The load must fail with `BadKey` naming `key`; returns the message.
fn refused(bytes: Vec<u8>, key: &str) -> String {
    match load(bytes) {
        Ok(_) => panic!("a file with a bad '{key}' loaded"),
        Err(ModelError::BadKey { key: k, why, .. }) => {
            assert_eq!(k, key, "{why}");
            why
        }
        Err(e) => panic!("'{key}': expected a BadKey error, got: {e}"),
    }
}

fn base(extra: &[(&str, MetaValue)]) -> Vec<u8> {
    model(8, 4, extra)
}

#[test]
fn the_base_model_loads() {
    let m = load(base(&[])).unwrap();
    assert_eq!((m.cfg.head_dim, m.cfg.vocab), (8, 100));
}

#[test]
fn head_dim_512_loads() {
    let m = load(model(512, 1, &[])).unwrap();
    assert_eq!(m.cfg.head_dim, 512);
}

#[test]
fn head_dim_above_the_kernel_limit_is_refused() {
    for hd in [513, 514, 4096] {
        let why = refused(model(hd, 1, &[]), &a(keys::arch::KEY_LENGTH));
        assert!(why.contains(&format!("head dimension {hd}")), "{why}");
    }
}

#[test]
fn odd_head_dim_is_refused() {
    let why = refused(model(7, 1, &[]), &a(keys::arch::KEY_LENGTH));
    assert!(why.contains("head dimension 7"), "{why}");
}

#[test]
fn rms_epsilon_must_be_finite_and_positive() {
    for x in [f32::NAN, f32::INFINITY, 0.0, -1e-6] {
        let k = a(keys::arch::RMS_EPS);
        let why = refused(base(&[(&k, MetaValue::F32(x))]), &k);
        assert!(why.contains("not a finite positive number"), "{why}");
    }
}

#[test]
fn rope_base_must_be_finite_and_positive() {
    for x in [f32::NAN, f32::NEG_INFINITY, f32::INFINITY, 0.0] {
        let k = a(keys::arch::ROPE_FREQ_BASE);
        let why = refused(base(&[(&k, MetaValue::F32(x))]), &k);
        assert!(why.contains("not a finite positive number"), "{why}");
    }
}

#[test]
fn kv_heads_must_divide_heads() {
    let k = a(keys::arch::HEAD_COUNT_KV);
    let why = refused(base(&[(&k, MetaValue::U32(3))]), &k);
    assert!(why.contains("3 does not divide the head count 4"), "{why}");
}

#[test]
fn context_length_must_be_positive_and_bounded() {
    let k = a(keys::arch::CONTEXT_LENGTH);
    for v in [MetaValue::U32(0), MetaValue::U64(1 << 32)] {
        let why = refused(base(&[(&k, v)]), &k);
        assert!(why.contains("out of range 1..="), "{why}");
    }
}

#[test]
fn special_token_ids_must_be_in_the_vocabulary() {
    for k in [keys::BOS_ID, keys::EOS_ID] {
        let why = refused(base(&[(k, MetaValue::U32(VOCAB as u32))]), k);
        assert!(
            why.contains("token id 100 is outside the vocabulary of 100"),
            "{why}"
        );
    }
    let eog = MetaValue::Array(vec![MetaValue::U32(1), MetaValue::U32(250)].into());
    let why = refused(base(&[(keys::EOG_IDS, eog)]), keys::EOG_IDS);
    assert!(why.contains("token id 250"), "{why}");
    assert!(load(base(&[(keys::EOS_ID, MetaValue::U32(99))])).is_ok());
}

#[test]
fn chat_template_errors_name_the_template_key() {
    let t = MetaValue::String("{% for %}".into());
    let why = refused(base(&[(keys::CHAT_TEMPLATE, t)]), keys::CHAT_TEMPLATE);
    assert!(why.contains("does not parse"), "{why}");
}

#[test]
fn tokenizer_json_errors_name_the_tokenizer_key() {
    let j = MetaValue::String("{not json".into());
    let why = refused(
        base(&[(keys::TOKENIZER_HF_JSON, j)]),
        keys::TOKENIZER_HF_JSON,
    );
    assert!(why.contains("tokenizer.json"), "{why}");
}

// ---- TaH settings ---------------------------------------------------------

/// Valid TaH metadata for the base model (no TaH tensors: a file with these
/// keys passes validation and then misses its first LoRA tensor).
fn tah(extra: &[(&str, MetaValue)]) -> Vec<u8> {
    let mut all: Vec<(&str, MetaValue)> = vec![
        (keys::TAH_VERSION, MetaValue::U32(1)),
        (keys::MAX_ITER, MetaValue::U32(2)),
        (keys::INPUT_TOPK, MetaValue::U32(4)),
        (keys::LORA_RANK, MetaValue::U32(2)),
        (keys::LORA_ALPHA, MetaValue::F32(4.0)),
        (
            keys::LORA_TARGETS,
            MetaValue::Array(vec![MetaValue::String("attn_q".into())].into()),
        ),
        (
            keys::DECIDER_CLASS,
            MetaValue::String("MLPIterDecider".into()),
        ),
        (keys::DECIDER_THRESHOLD, MetaValue::F32(0.5)),
        (keys::DECIDER_TOPK, MetaValue::U32(4)),
        (
            keys::DECIDER_LAYERS,
            MetaValue::Array(vec![MetaValue::U32(0), MetaValue::U32(2)].into()),
        ),
        (
            keys::DECIDER_HIDDEN_DIMS,
            MetaValue::Array(vec![MetaValue::U32(16)].into()),
        ),
        (keys::DECIDER_EXPANSION, MetaValue::U32(2)),
    ];
    all.extend(extra.iter().cloned());
    base(&all)
}

#[test]
fn valid_tah_settings_pass_validation() {
    match load(tah(&[])) {
        Err(ModelError::MissingTensor { tensor, .. }) => {
            assert_eq!(tensor, keys::lora_a(0, "attn_q"))
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("loaded without TaH tensors"),
    }
}

fn tah_refused(key: &str, v: MetaValue, want: &str) {
    let why = refused(tah(&[(key, v)]), key);
    assert!(why.contains(want), "{key}: {why}");
}

#[test]
fn threshold_must_be_in_0_1() {
    for x in [f32::NAN, -0.1, 1.5, f32::INFINITY] {
        tah_refused(
            keys::DECIDER_THRESHOLD,
            MetaValue::F32(x),
            "is not in [0, 1]",
        );
    }
}

#[test]
fn unknown_tah_version_is_refused() {
    tah_refused(keys::TAH_VERSION, MetaValue::U32(2), "not a known version");
}

#[test]
fn unknown_decider_class_is_refused() {
    let c = MetaValue::String("TransformerDecider".into());
    tah_refused(
        keys::DECIDER_CLASS,
        c,
        "'TransformerDecider' is not supported",
    );
}

#[test]
fn max_iter_must_be_within_the_loader_cap() {
    tah_refused(
        keys::MAX_ITER,
        MetaValue::U32(0),
        "0 is out of range 1..=16",
    );
    tah_refused(
        keys::MAX_ITER,
        MetaValue::U32(17),
        "17 is out of range 1..=16",
    );
}

#[test]
fn decider_layers_must_be_within_the_model() {
    let l = MetaValue::Array(vec![MetaValue::U32(3)].into());
    tah_refused(keys::DECIDER_LAYERS, l, "3 is out of range 0..=2");
    let empty = MetaValue::Array(Vec::new().into());
    tah_refused(keys::DECIDER_LAYERS, empty, "empty");
}

#[test]
fn decider_hidden_dims_must_not_be_empty() {
    let empty = MetaValue::Array(Vec::new().into());
    tah_refused(keys::DECIDER_HIDDEN_DIMS, empty, "empty");
    let zero = MetaValue::Array(vec![MetaValue::U32(0)].into());
    tah_refused(keys::DECIDER_HIDDEN_DIMS, zero, "width 0");
}

#[test]
fn lora_rank_must_be_positive() {
    tah_refused(keys::LORA_RANK, MetaValue::U32(0), "0 is out of range");
}

#[test]
fn topk_values_must_fit_the_vocabulary() {
    tah_refused(
        keys::INPUT_TOPK,
        MetaValue::U32(101),
        "101 is out of range 1..=100",
    );
    tah_refused(
        keys::DECIDER_TOPK,
        MetaValue::U32(0),
        "0 is out of range 1..=100",
    );
}

#[test]
fn lora_targets_must_be_known_and_unique() {
    let s = |v: &[&str]| {
        MetaValue::Array(
            v.iter()
                .map(|s| MetaValue::String(s.to_string()))
                .collect::<Vec<_>>()
                .into(),
        )
    };
    tah_refused(
        keys::LORA_TARGETS,
        s(&["lm_head"]),
        "not an adaptable linear",
    );
    tah_refused(
        keys::LORA_TARGETS,
        s(&["attn_q", "attn_q"]),
        "appears twice",
    );
}
