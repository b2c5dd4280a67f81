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

/// A scratch directory unique to this test process.
pub fn scratch(name: &str) -> PathBuf {
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

/// A real model from models/fetch.sh (`$TAH_MODELS` or ~/.cache/tah/models).
/// Missing files fail the test unless TAH_SKIP_REAL_MODELS=1.
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
