//! The `gguf` Python package (llama.cpp's reader) opens every file we write:
//! same tensor names, dims and types as our reader, and our keys readable.
//! Needs `python3 -m pip install gguf` (done by .ci/run).

use std::path::{Path, PathBuf};
use std::process::Command;
use tah::format::{keys, GgufFile, MetaValue};

fn check_with_python(path: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gguf_check.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(path)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "gguf package failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ours = GgufFile::open(path).unwrap();
    let tensors = seen["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), ours.tensors().len());
    for (py, t) in tensors.iter().zip(ours.tensors()) {
        assert_eq!(py["name"], t.name.as_str());
        let dims: Vec<u64> = py["dims"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        assert_eq!(dims, t.dims, "{}", t.name);
        assert_eq!(py["type"].as_u64().unwrap(), t.ty.id() as u64, "{}", t.name);
    }
    let pk = seen["keys"].as_object().unwrap();
    for (k, v) in ours.metadata() {
        let py = pk
            .get(k)
            .unwrap_or_else(|| panic!("gguf package does not see key {k}"));
        match v {
            MetaValue::String(s) => assert_eq!(py.as_str(), Some(s.as_str()), "{k}"),
            MetaValue::Array(a) if a.len() <= 64 => {
                assert_eq!(py.as_array().map(Vec::len), Some(a.len()), "{k}")
            }
            MetaValue::Bool(b) => assert_eq!(py.as_bool(), Some(*b), "{k}"),
            MetaValue::F32(x) => assert!((py.as_f64().unwrap() - *x as f64).abs() < 1e-12, "{k}"),
            other => {
                if let Some(i) = other.as_i64() {
                    assert_eq!(py.as_i64(), Some(i), "{k}")
                }
            }
        }
    }
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("tah-pygguf-{}-{name}", std::process::id()))
}

#[test]
fn gguf_package_reads_the_converted_fixture() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/tah-tiny");
    let out = tmp("tiny.tah");
    tah_convert::convert(&src, &out, &Default::default(), &mut |_, _, _| {}).unwrap();
    check_with_python(&out);
    // The f16 and q8_0 variants too (different types, same layout rules).
    for q in [tah::quant::GgmlType::F16, tah::quant::GgmlType::Q8_0] {
        let policy = tah_convert::TypePolicy {
            quant: Some(q),
            embd: None,
        };
        tah_convert::convert(&src, &out, &policy, &mut |_, _, _| {}).unwrap();
        check_with_python(&out);
    }
    std::fs::remove_file(&out).unwrap();
}

/// Real models from models/fetch.sh; missing files fail unless TAH_SKIP_REAL_MODELS=1.
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

#[test]
fn gguf_package_reads_converted_real_models() {
    for (file, quant) in [
        ("SmolLM2-135M-Instruct.Q4_1.gguf", None),
        (
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            Some(tah::quant::GgmlType::Q4_0),
        ),
        ("Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf", None),
    ] {
        let Some(src) = real_model(file) else { return };
        let out = tmp("real.tah");
        let policy = tah_convert::TypePolicy { quant, embd: None };
        tah_convert::convert(&src, &out, &policy, &mut |_, _, _| {}).unwrap();
        check_with_python(&out);
        let f = GgufFile::open(&out).unwrap();
        assert!(f.get_str(keys::TOKENIZER_HF_JSON).is_some());
        assert!(f.get(keys::EOG_IDS).is_some());
        std::fs::remove_file(&out).unwrap();
    }
}
