//! `shared/fixtures/tah-tiny` converted at f32: every tensor read back equals its
//! source exactly (base and LoRA against the safetensors files, decider weights
//! against sha256 sums made with torch.load), and the TaH settings are right.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tah::format::{keys, GgufFile, MetaValue};

fn fixture() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/tah-tiny");
    assert!(
        p.is_dir(),
        "{} missing: shared/ must sit beside the checkout",
        p.display()
    );
    p
}

fn converted(name: &str) -> GgufFile {
    let out = std::env::temp_dir().join(format!("tah-roundtrip-{}-{name}.tah", std::process::id()));
    tah_convert::convert(&fixture(), &out, &Default::default(), &mut |_, _, _| {}).unwrap();
    let f = GgufFile::open(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    f
}

fn st_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn every_tensor_equals_its_source() {
    let f = converted("tensors");
    let mut seen = 0;
    // Base: Hugging Face names → llama.cpp names, same bytes, reversed shape.
    let base = st_bytes(&fixture().join("model.safetensors"));
    let base = safetensors::SafeTensors::deserialize(&base).unwrap();
    for (name, view) in base.tensors() {
        let gguf_name =
            tah_convert::hf::gguf_name(&name).unwrap_or_else(|| panic!("no name for {name}"));
        let t = f
            .tensor(&gguf_name)
            .unwrap_or_else(|| panic!("{gguf_name} missing"));
        assert_eq!(
            t.shape(),
            view.shape().iter().map(|&d| d as u64).collect::<Vec<_>>(),
            "{name}"
        );
        assert_eq!(f.tensor_data(t), view.data(), "{name} bytes differ");
        seen += 1;
    }
    assert_eq!(seen, 46);
    assert!(
        f.tensor(keys::OUTPUT).is_none(),
        "tied model has no output.weight"
    );

    // LoRA: PEFT names → tah.blk.N.<linear>.lora_{a,b}.
    let lora = st_bytes(&fixture().join("lora/adapter_model.safetensors"));
    let lora = safetensors::SafeTensors::deserialize(&lora).unwrap();
    for (name, view) in lora.tensors() {
        let rest = name.strip_prefix("base_model.model.model.layers.").unwrap();
        let (layer, rest) = rest.split_once('.').unwrap();
        let layer: usize = layer.parse().unwrap();
        let (module, ab) = rest.split_once(".lora_").unwrap();
        let stem = keys::LINEARS
            .iter()
            .find(|(_, hf)| *hf == module)
            .unwrap()
            .0;
        let ours = if ab.starts_with('A') {
            keys::lora_a(layer, stem)
        } else {
            keys::lora_b(layer, stem)
        };
        let t = f.tensor(&ours).unwrap_or_else(|| panic!("{ours} missing"));
        assert_eq!(
            t.shape(),
            view.shape().iter().map(|&d| d as u64).collect::<Vec<_>>(),
            "{name}"
        );
        assert_eq!(f.tensor_data(t), view.data(), "{name} bytes differ");
        seen += 1;
    }
    assert_eq!(seen, 46 + 56);

    // Decider: sha256 of the f32 bytes, as torch.load gave them.
    let expect: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fixture_decider_expect.json"),
        )
        .unwrap(),
    )
    .unwrap();
    for e in expect["tensors"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        if name == "threshold" {
            continue;
        }
        let t = f
            .tensor(&format!("{}{name}", keys::DECIDER_PREFIX))
            .unwrap_or_else(|| panic!("decider {name} missing"));
        let shape: Vec<u64> = e["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        assert_eq!(t.shape(), shape, "{name}");
        let sum = format!("{:x}", Sha256::digest(f.tensor_data(t)));
        assert_eq!(
            sum,
            e["sha256_f32"].as_str().unwrap(),
            "decider {name} bytes differ"
        );
        seen += 1;
    }
    assert_eq!(seen, 46 + 56 + 28);
    assert_eq!(f.tensors().len(), seen, "no other tensors");
}

#[test]
fn tah_settings_are_the_checkpoints() {
    let f = converted("settings");
    let u = |k: &str| f.get_u64(k).unwrap_or_else(|| panic!("{k}"));
    let list = |k: &str| {
        f.get(k)
            .and_then(MetaValue::as_array)
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(u(keys::MAX_ITER), 2);
    assert_eq!(u(keys::INPUT_TOPK), 16);
    assert_eq!(u(keys::DECIDER_TOPK), 16);
    assert_eq!(u(keys::LORA_RANK), 4);
    assert_eq!(f.get_f64(keys::LORA_ALPHA), Some(8.0));
    assert_eq!(list(keys::DECIDER_LAYERS), vec![1, 2, 3, 4]);
    assert_eq!(list(keys::DECIDER_HIDDEN_DIMS), vec![32, 32, 32]);
    assert_eq!(u(keys::DECIDER_EXPANSION), 2);
    // reference.json: threshold_float32 = 0.6865000128746033 (0.6865 held as f32).
    assert_eq!(f.get_f64(keys::DECIDER_THRESHOLD), Some(0.6865000128746033));
    assert_eq!(f.get_str(keys::DECIDER_DTYPE), Some("f32"));
    let targets: Vec<String> = f
        .get(keys::LORA_TARGETS)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        targets,
        [
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_gate",
            "ffn_up",
            "ffn_down"
        ]
    );
    assert_eq!(f.get_str(keys::ARCHITECTURE), Some("qwen3"));
    assert_eq!(u("qwen3.block_count"), 4);
    assert_eq!(u("qwen3.attention.key_length"), 16);
}
