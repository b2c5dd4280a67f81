//! TaH checkpoints that differ from the fixture — untied embeddings, a layer list
//! starting at 0, other head counts, qwen2 biases, llama, a bf16 decider,
//! max_iter 3 — written in the reference layout by
//! models/synth/make_tah_checkpoint.py (random weights), converted, loaded and run
//! end to end. Also the fixture at f16.

mod common;
use common::*;
use std::path::PathBuf;
use std::process::Command;
use tah::model::kv_cache::KvType;
use tah::session::{Session, SessionOptions};
use tah::tah::{TahOptions, ThinkMode};

fn synth(name: &str, args: &[&str]) -> PathBuf {
    let dir = scratch("synth").join(name);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models/synth/make_tah_checkpoint.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&dir)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tah = dir.with_extension("tah");
    convert(&dir, &tah, None);
    tah
}

fn run(path: &std::path::Path, mode: ThinkMode, n: usize) -> (Vec<u32>, Vec<u8>) {
    let model = load(path);
    let opts = SessionOptions {
        ctx: 64,
        tah: TahOptions {
            mode,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut s = Session::new(model, &opts).unwrap();
    s.feed(&[1, 2, 3, 4, 5, 6, 7], None).unwrap();
    let mut toks = Vec::new();
    for _ in 0..n {
        let t = tah::sample::argmax(s.logits());
        toks.push(t);
        s.decode(t).unwrap();
    }
    (toks, s.token_info().iter().map(|i| i.depth).collect())
}

#[test]
fn differently_shaped_checkpoints_convert_load_and_run() {
    let cases: Vec<(&str, Vec<&str>, usize)> = vec![
        (
            "untied-from0",
            vec![
                "--untied",
                "--decider-layers",
                "0,1,2",
                "--decider-dims",
                "32,48,24",
                "--heads",
                "6",
                "--kv-heads",
                "3",
            ],
            2,
        ),
        (
            "qwen2",
            vec![
                "--arch",
                "qwen2",
                "--heads",
                "8",
                "--kv-heads",
                "2",
                "--head-dim",
                "8",
                "--layers",
                "3",
            ],
            2,
        ),
        (
            "llama-bf16",
            vec![
                "--arch",
                "llama",
                "--dtype",
                "bfloat16",
                "--threshold",
                "0.9",
                "--decider-layers",
                "2",
                "--decider-dims",
                "16",
            ],
            2,
        ),
        (
            "three-depths",
            vec!["--max-iter", "3", "--threshold", "0.3"],
            3,
        ),
    ];
    for (name, args, max_iter) in cases {
        let path = synth(name, &args);
        let m = load(&path);
        let t = m.cfg.tah.as_ref().unwrap();
        assert_eq!(t.max_iter, max_iter, "{name}");
        if name == "untied-from0" {
            assert!(!m.cfg.tied && m.cfg.n_heads == 6 && m.cfg.n_kv_heads == 3);
            assert_eq!(t.decider_layers, vec![0, 1, 2]);
            assert_eq!(t.decider_hidden_dims, vec![32, 48, 24]);
        }
        if name == "llama-bf16" {
            assert_eq!(t.threshold, 0.8984375, "bf16-rounded threshold");
            assert_eq!(t.decider_dtype, "bf16");
        }
        if name == "qwen2" {
            assert!(m.cfg.qkv_bias);
        }
        let (_, never) = run(&path, ThinkMode::Never, 8);
        assert!(never.iter().all(|&d| d == 1), "{name}: never");
        let (_, always) = run(&path, ThinkMode::Always, 8);
        assert!(
            always.iter().all(|&d| d as usize == max_iter),
            "{name}: always {always:?}"
        );
        let (_, auto) = run(&path, ThinkMode::Auto, 8);
        assert!(
            auto.iter().all(|&d| (1..=max_iter as u8).contains(&d)),
            "{name}: auto {auto:?}"
        );
        eprintln!("{name}: auto depths {auto:?}");
    }
}

/// f16 weights (f32 cache: the f16 cache mirrors llama.cpp's f16 attention
/// accumulator, whose rounding flips this random fixture's near-ties).
#[test]
fn fixture_at_f16_keeps_tokens_and_depths() {
    let r = Reference::load();
    let ids: Vec<u32> = r
        .i64("prefill_input_ids")
        .iter()
        .map(|&t| t as u32)
        .collect();
    let out = scratch("f16").join("tah-tiny-f16.tah");
    convert(&fixture_dir(), &out, Some(tah::quant::GgmlType::F16));
    let model = load(&out);
    let opts = SessionOptions {
        ctx: 64,
        kv_type: KvType::F32,
        ..Default::default()
    };
    let mut s = Session::new(model, &opts).unwrap();
    let mut prefill = Vec::new();
    let mut depths = Vec::new();
    let mut cb = |_: usize, row: &[f32], info: tah::tah::TokenInfo| {
        prefill.extend_from_slice(row);
        depths.push(info.depth as i64);
    };
    s.feed(&ids, Some(&mut cb)).unwrap();
    assert_eq!(depths, r.i64("prefill_iter_count"), "prefill depths at f16");
    let mut tokens = Vec::new();
    let mut next = tah::sample::argmax(s.logits());
    for _ in 0..16 {
        tokens.push(next as i64);
        next = tah::sample::argmax(s.decode(next).unwrap());
    }
    let decode_depths: Vec<i64> = s.token_info()[24..]
        .iter()
        .map(|i| i.depth as i64)
        .collect();
    assert_eq!(tokens, r.i64("decode_token_ids"), "greedy tokens at f16");
    assert_eq!(
        decode_depths,
        r.i64("decode_iter_count"),
        "decode depths at f16"
    );
    let (_, want) = r.f32("prefill_logits");
    let err = max_abs_diff(&prefill, &want);
    eprintln!("f16 weights + f16 KV cache: TaH prefill logits max |Δ| = {err:e}");
    // Measured: 0.156 on the depth-2 rows (the soft input's softmax weights amplify
    // the depth-1 rounding), 0.023 on the base logits (below).
    assert!(err < 0.25, "f16 TaH prefill logits drift {err}");

    let model = load(&out);
    let opts = SessionOptions {
        ctx: 64,
        tah: TahOptions {
            mode: ThinkMode::Never,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut s = Session::new(model, &opts).unwrap();
    let mut base = Vec::new();
    let mut cb = |_: usize, row: &[f32], _: tah::tah::TokenInfo| base.extend_from_slice(row);
    s.feed(&ids, Some(&mut cb)).unwrap();
    let (_, want) = r.f32("base_prefill_logits");
    let err = max_abs_diff(&base, &want);
    eprintln!("f16 weights + f16 KV cache: base prefill logits max |Δ| = {err:e}");
    assert!(err < 0.04, "f16 base prefill logits drift {err}");
}
