//! Shared test helpers: where the project's shared data lives, converting the
//! fixture, reading the reference outputs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `shared/` beside the checkout (as CI lays it out), or `$TAH_SHARED`.
pub fn shared() -> PathBuf {
    if let Ok(p) = std::env::var("TAH_SHARED") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    assert!(
        p.is_dir(),
        "{} is missing: the tests need the project's shared/ beside the checkout",
        p.display()
    );
    p
}

pub fn fixture_dir() -> PathBuf {
    shared().join("fixtures/tah-tiny")
}

/// A scratch directory unique to this test process. Test binaries exit
/// without running destructors of statics, so the first call also removes
/// the scratch directories of test processes that are gone (Linux: no
/// `/proc/PID`); converted real models make them large.
pub fn scratch(name: &str) -> PathBuf {
    static SWEEP: std::sync::Once = std::sync::Once::new();
    SWEEP.call_once(|| {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for e in entries.flatten() {
            let file = e.file_name();
            let pid = file
                .to_str()
                .and_then(|n| n.strip_prefix("tah-test-"))
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok());
            if let Some(pid) = pid {
                let gone = Path::new("/proc/self").exists()
                    && !Path::new(&format!("/proc/{pid}")).exists();
                if gone {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    });
    let d = std::env::temp_dir().join(format!("tah-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Converts `input` into `out` with an optional `--quant` type.
pub fn convert(input: &Path, out: &Path, quant: Option<tah::quant::GgmlType>) {
    let policy = tah_convert::TypePolicy { quant, embd: quant };
    tah_convert::convert(input, out, &policy, &mut |_, _, _| {})
        .unwrap_or_else(|e| panic!("convert {}: {e}", input.display()));
}

/// The fixture converted at f32 (once per test binary).
pub fn fixture_tah() -> PathBuf {
    static ONCE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let out = scratch("fixture").join("tah-tiny.tah");
        convert(&fixture_dir(), &out, None);
        out
    })
    .clone()
}

pub fn load(path: &Path) -> Arc<tah::model::Model> {
    Arc::new(tah::model::Model::load(path).unwrap_or_else(|e| panic!("{e}")))
}

/// The fixture's prompt: the reference run's prefill token ids.
pub fn fixture_prompt() -> Vec<u32> {
    Reference::load()
        .i64("prefill_input_ids")
        .iter()
        .map(|&t| t as u32)
        .collect()
}

/// The reference implementation's outputs for the fixture.
pub struct Reference {
    bytes: Vec<u8>,
}

impl Reference {
    pub fn load() -> Reference {
        Reference {
            bytes: std::fs::read(fixture_dir().join("reference.safetensors")).unwrap(),
        }
    }

    fn view(&self, name: &str) -> (safetensors::Dtype, Vec<usize>, Vec<u8>) {
        let st = safetensors::SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("reference has no {name}"));
        (t.dtype(), t.shape().to_vec(), t.data().to_vec())
    }

    pub fn f32(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let (dt, shape, data) = self.view(name);
        assert_eq!(dt, safetensors::Dtype::F32, "{name}");
        (
            shape,
            data.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        )
    }

    pub fn i64(&self, name: &str) -> Vec<i64> {
        let (dt, _, data) = self.view(name);
        assert_eq!(dt, safetensors::Dtype::I64, "{name}");
        data.chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
}

/// Largest |a - b|.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A byte-level BPE tokenizer.json with no merges: ids 0..256 are the bytes (in
/// GPT-2's printable byte alphabet), 256 `<|im_start|>`, 257 `<|im_end|>`. Fits
/// the fixture's 512-token vocabulary.
pub fn byte_tokenizer_json() -> serde_json::Value {
    // GPT-2's bytes_to_unicode.
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).collect();
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut vocab = serde_json::Map::new();
    let mut extra = 0;
    for b in 0..256u32 {
        let c = if printable.contains(&b) {
            char::from_u32(b).unwrap()
        } else {
            extra += 1;
            char::from_u32(255 + extra).unwrap()
        };
        vocab.insert(c.to_string(), b.into());
    }
    let special = |id: u32, s: &str| {
        serde_json::json!({"id": id, "content": s, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
    };
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(256, "<|im_start|>"), special(257, "<|im_end|>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": []}
    })
}

/// ChatML, as Qwen models use it.
pub const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// The fixture's TaH checkpoint (random weights) with a byte-level tokenizer and
/// a ChatML template added, converted at f32 (once per test binary): a TaH model
/// that takes text.
pub fn tah_text_model() -> PathBuf {
    static ONCE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let dir = scratch("tah-text");
        let ckpt = dir.join("tah-tiny-text");
        std::fs::create_dir_all(&ckpt).unwrap();
        for f in [
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "iter_decider.bin",
            "tah_config.json",
            "lora",
        ] {
            let dst = ckpt.join(f);
            if !dst.exists() {
                std::os::unix::fs::symlink(fixture_dir().join(f), dst).unwrap();
            }
        }
        std::fs::write(
            ckpt.join("tokenizer.json"),
            serde_json::to_string(&byte_tokenizer_json()).unwrap(),
        )
        .unwrap();
        std::fs::write(
            ckpt.join("tokenizer_config.json"),
            serde_json::json!({"chat_template": CHATML, "eos_token": "<|im_end|>",
                "add_bos_token": false})
            .to_string(),
        )
        .unwrap();
        let out = dir.join("tah-tiny-text.tah");
        convert(&ckpt, &out, None);
        out
    })
    .clone()
}

/// A real model from models/fetch.sh's directory (`$TAH_MODELS` or
/// ~/.cache/tah/models). When it is absent: `None` (skip) with
/// `TAH_SKIP_REAL_MODELS=1`, else a panic telling to run models/fetch.sh.
pub fn real_model(file: &str) -> Option<PathBuf> {
    let dir = std::env::var("TAH_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/tah/models")
        });
    let p = dir.join(file);
    if p.is_file() {
        return Some(p);
    }
    if std::env::var("TAH_SKIP_REAL_MODELS").as_deref() == Ok("1") {
        eprintln!("skipping: {} missing (TAH_SKIP_REAL_MODELS=1)", p.display());
        return None;
    }
    panic!("{} is missing: run models/fetch.sh", p.display());
}

/// A real GGUF converted to .tah (cached per test process and quant type).
pub fn real_tah(file: &str, quant: Option<tah::quant::GgmlType>) -> Option<PathBuf> {
    let src = real_model(file)?;
    let tag = quant.map_or("orig".to_string(), |q| q.name().to_string());
    let out = scratch("real").join(format!("{file}.{tag}.tah"));
    if !out.is_file() {
        let policy = tah_convert::TypePolicy { quant, embd: None };
        tah_convert::convert(&src, &out, &policy, &mut |_, _, _| {})
            .unwrap_or_else(|e| panic!("{e}"));
    }
    Some(out)
}

/// One of llama.cpp's greedy reference runs in shared/anchors/greedy.
pub fn anchor(name: &str) -> serde_json::Value {
    let p = shared().join("anchors/greedy").join(name);
    serde_json::from_str(
        &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap()
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Perplexity of `m` on gpl-3.txt at ctx 512 with a `kv_type` cache
/// (llama-perplexity's method: 14 chunks, the second half of each scored), over
/// the first `max_chunks` chunks (all with `None`); and the chunk count.
pub fn gpl3_perplexity(
    m: &Arc<tah::model::Model>,
    kv_type: tah::model::kv_cache::KvType,
    max_chunks: Option<usize>,
) -> (f64, usize) {
    let text = std::fs::read_to_string(shared().join("anchors/gpl-3.txt")).unwrap();
    let mut tokens = m.tokenizer.as_ref().unwrap().encode(&text, true).unwrap();
    if let Some(n) = max_chunks {
        tokens.truncate(n * 512);
    }
    let mut s = tah::session::Session::new(
        Arc::clone(m),
        &tah::session::SessionOptions {
            ctx: 512,
            batch: 128,
            kv_type,
            ..Default::default()
        },
    )
    .unwrap();
    let p =
        tah::app::perplexity::perplexity(&mut s, &tokens, 512, None, &mut |_, _, _| {}).unwrap();
    (p.ppl, p.chunks)
}

mod runner;
#[allow(unused_imports)] // not every test binary spawns a binary
pub use runner::{bin_command, runner};
