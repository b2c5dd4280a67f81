//! The converter refuses, before writing anything, what the runtime would
//! refuse to load, and adapter settings it cannot honour. Each test changes one
//! thing in a copy of `shared/fixtures/tah-tiny` and checks the error and that
//! no output file exists afterwards.

use serde_json::{json, Value};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use tah::format::{keys, GgufFile};
use tah::quant::GgmlType;
use tah_convert::synthetic::SyntheticTah;
use tah_convert::{Options, TypePolicy};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/tah-tiny")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tah-refusals-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("ckpt/lora")).unwrap();
    d
}

fn read(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// A copy of the fixture (big files linked) in which `edit` may rewrite the
/// JSON files; returns the checkpoint directory.
fn checkpoint(name: &str, edit: impl FnOnce(&mut Value, &mut Value, &mut Value)) -> PathBuf {
    let d = scratch(name).join("ckpt");
    let f = fixture();
    for p in [
        "model.safetensors",
        "iter_decider.bin",
        "generation_config.json",
        "lora/adapter_model.safetensors",
    ] {
        std::os::unix::fs::symlink(f.join(p), d.join(p)).unwrap();
    }
    let mut config = read(&f.join("config.json"));
    let mut tah = read(&f.join("tah_config.json"));
    let mut adapter = read(&f.join("lora/adapter_config.json"));
    edit(&mut config, &mut tah, &mut adapter);
    std::fs::write(d.join("config.json"), config.to_string()).unwrap();
    std::fs::write(d.join("tah_config.json"), tah.to_string()).unwrap();
    std::fs::write(d.join("lora/adapter_config.json"), adapter.to_string()).unwrap();
    d
}

/// A tiny BPE tokenizer.json: "a", "b", and the special tokens given.
fn tokenizer(special: &[(u64, &str)]) -> Value {
    let added: Vec<Value> = special
        .iter()
        .map(|(id, s)| {
            json!({"id": id, "content": s, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": null, "post_processor": null, "decoder": null,
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false,
            "byte_fallback": false, "ignore_merges": false,
            "vocab": {"a": 0, "b": 1}, "merges": []}
    })
}

fn with_tokenizer(dir: &Path, tok: &Value, cfg: &Value) {
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
    std::fs::write(dir.join("tokenizer_config.json"), cfg.to_string()).unwrap();
}

fn convert_opts(input: &Path, opts: &Options) -> (Result<(), String>, PathBuf) {
    let out = input.parent().unwrap().join("out.tah");
    let r = tah_convert::convert_with(input, &out, opts, &mut |_, _, _| {})
        .map(|_| ())
        .map_err(|e| e.to_string());
    (r, out)
}

/// The conversion must fail with a message containing every `want`, leaving
/// no output file.
fn refused(input: &Path, wants: &[&str]) {
    refused_opts(input, &Options::default(), wants)
}

fn refused_opts(input: &Path, opts: &Options, wants: &[&str]) {
    let (r, out) = convert_opts(input, opts);
    let e = r.expect_err("the conversion succeeded");
    for w in wants {
        assert!(e.contains(w), "expected {w:?} in: {e}");
    }
    assert!(!out.exists(), "{} was written", out.display());
    let dir = input.parent().unwrap();
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "ckpt")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_unchanged_copy_converts() {
    let d = checkpoint("ok", |_, _, _| {});
    let (r, out) = convert_opts(&d, &Options::default());
    r.unwrap();
    assert!(out.exists());
    let _ = std::fs::remove_dir_all(d.parent().unwrap());
}

#[test]
fn context_length_of_2_pow_32_is_refused_not_truncated() {
    let d = checkpoint("ctx", |c, _, _| {
        c["max_position_embeddings"] = json!(1u64 << 32)
    });
    refused(&d, &["max_position_embeddings = 4294967296 does not fit"]);
}

#[test]
fn layer_count_of_2_pow_32_is_refused_before_allocating() {
    let d = checkpoint("layers", |c, _, _| {
        c["num_hidden_layers"] = json!(1u64 << 32)
    });
    refused(&d, &["num_hidden_layers = 4294967296 does not fit"]);
    // Within u32, the runtime's layer cap names the key before any list is built.
    let d = checkpoint("layers2", |c, _, _| {
        c["num_hidden_layers"] = json!(1u64 << 31)
    });
    refused(
        &d,
        &["'qwen3.block_count'", "2147483648 is out of range 1..=4096"],
    );
}

#[test]
fn head_dim_above_the_kernel_limit_is_refused() {
    let d = checkpoint("hd", |c, _, _| c["head_dim"] = json!(1024));
    refused(&d, &["'qwen3.attention.key_length'", "head dimension 1024"]);
}

#[test]
fn max_iter_17_is_refused() {
    let d = checkpoint("maxiter", |_, t, _| {
        t["max_iter"] = json!(17);
        t["iter_decider_kwargs"]["max_iter"] = json!(17);
    });
    refused(&d, &["'tah.max_iter'", "17 is out of range 1..=16"]);
}

#[test]
fn threshold_outside_0_1_is_refused() {
    let d = checkpoint("thr", |_, t, _| {
        t["iter_decider_kwargs"]["threshold"] = json!(2.5)
    });
    refused(&d, &["'tah.decider.threshold'", "2.5 is not in [0, 1]"]);
}

#[test]
fn nan_synthetic_threshold_is_refused() {
    // A base model (no tah_config.json) with synthetic TaH parts attached.
    let d = checkpoint("nan", |_, _, _| {});
    std::fs::remove_file(d.join("tah_config.json")).unwrap();
    let opts = Options {
        policy: TypePolicy::default(),
        synthetic: Some(SyntheticTah {
            threshold: f32::NAN,
            hidden_dims: vec![16],
            topk: 8,
            rank: 2,
            ..Default::default()
        }),
    };
    refused_opts(
        &d,
        &opts,
        &["'tah.decider.threshold'", "NaN is not in [0, 1]"],
    );
}

#[test]
fn eos_and_bos_outside_the_vocabulary_are_refused() {
    // The model has 512 tokens; the tokenizer puts its special tokens past them.
    for (key, cfg) in [
        (keys::EOS_ID, json!({"eos_token": "<|end|>"})),
        (keys::BOS_ID, json!({"bos_token": "<|end|>"})),
    ] {
        let d = checkpoint("ids", |_, _, _| {});
        with_tokenizer(&d, &tokenizer(&[(600, "<|end|>")]), &cfg);
        refused(
            &d,
            &[
                &format!("'{key}'"),
                "token id 600 is outside the vocabulary of 512",
            ],
        );
    }
}

#[test]
fn chat_template_that_does_not_parse_is_refused() {
    let d = checkpoint("tmpl", |_, _, _| {});
    with_tokenizer(&d, &tokenizer(&[]), &json!({"chat_template": "{% for %}"}));
    refused(&d, &["'tokenizer.chat_template'", "does not parse"]);
}

#[test]
fn unsupported_adapter_settings_are_refused() {
    let cases: [(&str, Value, &str); 8] = [
        ("fan_in_fan_out", json!(true), "fan_in_fan_out = true"),
        ("bias", json!("all"), "bias = \"all\""),
        ("bias", json!("lora_only"), "bias = \"lora_only\""),
        (
            "target_modules",
            json!(["q_proj", "lm_head"]),
            "\"lm_head\"",
        ),
        ("use_dora", json!(true), "use_dora"),
        ("use_rslora", json!(true), "use_rslora"),
        ("modules_to_save", json!(["lm_head"]), "modules_to_save"),
        ("lora_bias", json!(true), "lora_bias"),
    ];
    for (k, v, want) in cases {
        let d = checkpoint("adapter", |_, _, a| a[k] = v.clone());
        refused(&d, &["adapter_config.json", want]);
    }
}

#[test]
fn quant_f32_stores_every_tensor_as_f32() {
    let d = checkpoint("f32", |_, _, _| {});
    let opts = Options {
        policy: TypePolicy {
            quant: Some(GgmlType::F32),
            embd: None,
        },
        synthetic: None,
    };
    let (r, out) = convert_opts(&d, &opts);
    r.unwrap();
    let f = GgufFile::open(&out).unwrap();
    let not_f32: Vec<_> = f
        .tensors()
        .iter()
        .filter(|t| t.ty != GgmlType::F32)
        .map(|t| (t.name.clone(), t.ty))
        .collect();
    assert!(not_f32.is_empty(), "{not_f32:?}");
    assert_eq!(f.tensor(keys::TOKEN_EMBD).unwrap().ty, GgmlType::F32);
    // Another --quant still stores the f32 embedding as f16.
    let out8 = d.parent().unwrap().join("q8.tah");
    let q8 = TypePolicy {
        quant: Some(GgmlType::Q8_0),
        embd: None,
    };
    tah_convert::convert(&d, &out8, &q8, &mut |_, _, _| {}).unwrap();
    let f = GgufFile::open(&out8).unwrap();
    assert_eq!(f.tensor(keys::TOKEN_EMBD).unwrap().ty, GgmlType::F16);
    let _ = std::fs::remove_dir_all(d.parent().unwrap());
}

/// A write error names the output file: /dev/full is written through (a
/// device is never replaced) and fails with ENOSPC.
#[test]
fn a_write_error_names_the_output() {
    if !Path::new("/dev/full").exists() {
        eprintln!("skipping: no /dev/full");
        return;
    }
    let d = checkpoint("full", |_, _, _| {});
    let r = tah_convert::convert_with(
        &d,
        Path::new("/dev/full"),
        &Options::default(),
        &mut |_, _, _| {},
    )
    .map(|_| ())
    .map_err(|e| e.to_string());
    let e = r.expect_err("writing to /dev/full succeeded");
    assert!(
        e.contains("/dev/full") && e.contains("No space left"),
        "{e}"
    );
    assert!(std::fs::metadata("/dev/full")
        .unwrap()
        .file_type()
        .is_char_device());
    let _ = std::fs::remove_dir_all(d.parent().unwrap());
}
