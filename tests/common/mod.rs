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
