//! A conversion killed with SIGKILL mid-write leaves no output file, and the
//! next run cleans up the killed run's temporary and writes a valid file.
//!
//! The input is a synthetic Hugging Face qwen3 checkpoint of ~300 MB of random
//! f32 weights, converted with `--quant q4_0` by the built `tah-convert` binary,
//! so that the write takes long enough to be interrupted.

#![cfg(unix)]

#[path = "../../tests/common/runner.rs"]
mod runner;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HIDDEN: usize = 1024;
const FFN: usize = 2048;
const LAYERS: usize = 8;
const HEADS: usize = 16;
const KV_HEADS: usize = 8;
const HEAD_DIM: usize = 64;
const VOCAB: usize = 4096;

fn scratch() -> PathBuf {
    let d = std::env::temp_dir().join(format!("tah-convert-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Row-major shapes of the checkpoint's tensors.
fn tensors() -> Vec<(String, Vec<usize>)> {
    let (q, kv) = (HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM);
    let mut t = vec![("model.embed_tokens.weight".to_string(), vec![VOCAB, HIDDEN])];
    for l in 0..LAYERS {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        t.push((p("input_layernorm.weight"), vec![HIDDEN]));
        t.push((p("self_attn.q_proj.weight"), vec![q, HIDDEN]));
        t.push((p("self_attn.k_proj.weight"), vec![kv, HIDDEN]));
        t.push((p("self_attn.v_proj.weight"), vec![kv, HIDDEN]));
        t.push((p("self_attn.o_proj.weight"), vec![HIDDEN, q]));
        t.push((p("self_attn.q_norm.weight"), vec![HEAD_DIM]));
        t.push((p("self_attn.k_norm.weight"), vec![HEAD_DIM]));
        t.push((p("post_attention_layernorm.weight"), vec![HIDDEN]));
        t.push((p("mlp.gate_proj.weight"), vec![FFN, HIDDEN]));
        t.push((p("mlp.up_proj.weight"), vec![FFN, HIDDEN]));
        t.push((p("mlp.down_proj.weight"), vec![HIDDEN, FFN]));
    }
    t.push(("model.norm.weight".to_string(), vec![HIDDEN]));
    t
}

/// Writes `config.json` and a `model.safetensors` of random f32 weights
/// (xorshift: fast, and incompressible enough to quantize for real).
fn write_checkpoint(dir: &Path) -> u64 {
    let config = serde_json::json!({
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "hidden_size": HIDDEN,
        "intermediate_size": FFN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "max_position_embeddings": 4096,
        "vocab_size": VOCAB,
        "tie_word_embeddings": true,
        "torch_dtype": "float32"
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();

    let list = tensors();
    let mut header = serde_json::Map::new();
    let mut off = 0usize;
    for (name, shape) in &list {
        let n: usize = shape.iter().product::<usize>() * 4;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [off, off + n]}),
        );
        off += n;
    }
    let mut h = serde_json::Value::Object(header).to_string().into_bytes();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let f = std::fs::File::create(dir.join("model.safetensors")).unwrap();
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    w.write_all(&(h.len() as u64).to_le_bytes()).unwrap();
    w.write_all(&h).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut buf = Vec::with_capacity(1 << 20);
    for (_, shape) in &list {
        let mut left: usize = shape.iter().product();
        while left > 0 {
            let n = left.min(1 << 18);
            buf.clear();
            for _ in 0..n {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                // Uniform in [-0.05, 0.05).
                let x = ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1;
                buf.extend_from_slice(&x.to_le_bytes());
            }
            w.write_all(&buf).unwrap();
            left -= n;
        }
    }
    w.flush().unwrap();
    (8 + h.len() + off) as u64
}

/// `.NAME.tmp-*` files beside `out`.
fn temporaries(out: &Path) -> Vec<PathBuf> {
    let prefix = format!(".{}.tmp-", out.file_name().unwrap().to_string_lossy());
    std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

fn converter(input: &Path, out: &Path) -> Command {
    let mut c = runner::bin_command(env!("CARGO_BIN_EXE_tah-convert"));
    c.arg(input)
        .arg("-o")
        .arg(out)
        .args(["--quant", "q4_0", "--quiet"]);
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

#[test]
fn sigkill_mid_write_leaves_no_output_and_next_run_cleans_up() {
    let dir = scratch();
    let input = dir.join("ckpt");
    std::fs::create_dir_all(&input).unwrap();
    let size = write_checkpoint(&input);
    eprintln!("synthetic checkpoint: {:.0} MB", size as f64 / 1e6);
    let out = dir.join("model.tah");

    // 1. Start a conversion; kill it once its temporary holds data.
    let mut child = converter(&input, &out).spawn().unwrap();
    // The writer names its temporary `.NAME.tmp-PID-N`.
    let tmp_prefix = format!(".model.tah.tmp-{}-", child.id());
    let start = Instant::now();
    let tmp = loop {
        let found = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with(&tmp_prefix))
            .map(|e| e.path());
        if let Some(t) = found.filter(|t| std::fs::metadata(t).is_ok_and(|m| m.len() > 1 << 20)) {
            break t;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the converter ended ({status}) before it could be killed mid-write; make the input larger");
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "the converter never started writing"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let written = std::fs::metadata(&tmp).unwrap().len();
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    eprintln!(
        "killed after {:.2} s with {:.1} MB of the temporary written",
        start.elapsed().as_secs_f64(),
        written as f64 / 1e6
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(9),
        "the converter was not killed by SIGKILL: {status}"
    );
    assert!(!out.exists(), "a killed conversion left {}", out.display());
    assert_eq!(
        temporaries(&out),
        vec![tmp.clone()],
        "the killed run's temporary (the litter the next run must clean)"
    );

    // 2. A complete run: cleans the killed run's temporary, writes a valid file.
    let t = Instant::now();
    let result = converter(&input, &out).output().unwrap();
    assert!(
        result.status.success(),
        "second run failed: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    eprintln!("complete conversion: {:.2} s", t.elapsed().as_secs_f64());
    assert!(out.is_file());
    assert_eq!(
        temporaries(&out),
        Vec::<PathBuf>::new(),
        "temporaries left after a complete run"
    );
    let model = tah::model::Model::load(&out).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(model.cfg.n_layers, LAYERS);
    assert_eq!(model.cfg.dim, HIDDEN);
    assert_eq!(model.layers[0].wq.ty, tah::quant::GgmlType::Q4_0);

    std::fs::remove_dir_all(&dir).unwrap();
}
