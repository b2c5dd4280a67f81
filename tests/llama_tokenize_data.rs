//! Sanity of the committed llama.cpp tokenization references
//! (`tests/data/llama-tokenize/*.json`, made by `tools/ggml-ref tokenize`).
//!
//! Our tokenizer is tested against these files where it lives; this test only
//! guards the data: every file parses, holds the fixed strings, and the raw
//! anchor prompts carry exactly the ids recorded in shared/anchors (measured
//! there with llama.cpp's own `llama-tokenize`).

use std::path::Path;

const REQUIRED: [&str; 12] = [
    "The capital of France is",
    "Question: Tom has 3 apples and buys 5 more. How many apples does he have? Answer:",
    "<|im_start|>user\nWhat is 12 * 7?<|im_end|>\n<|im_start|>assistant\n",
    "你好，世界！今天天气很好。",
    "日本語のテキストと한국어 텍스트",
    "Emoji: 🙂🚀👩‍👩‍👧 ok",
    "fn main() {\n    println!(\"{}\", 1 + 2);\n}\n",
    "def f(x):\n\treturn x**2  # square\n",
    "  leading spaces and   multiple   gaps\n\n\nnewlines",
    "Numbers: 1234567 3.14159 -42 1,000,000",
    "Ünïcödé àccents naïve café",
    "",
];

fn load(file: &str) -> Vec<(String, Vec<u32>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/llama-tokenize")
        .join(file);
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: serde_json::Value = serde_json::from_slice(&text).expect("valid JSON");
    assert_eq!(
        doc["model"].as_str(),
        Some(file.trim_end_matches(".json"))
            .map(|m| format!("{m}.gguf"))
            .as_deref()
    );
    doc["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| {
            let ids = c["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            (c["text"].as_str().unwrap().to_string(), ids)
        })
        .collect()
}

fn ids_of<'a>(cases: &'a [(String, Vec<u32>)], text: &str) -> &'a [u32] {
    &cases
        .iter()
        .find(|(t, _)| t == text)
        .unwrap_or_else(|| panic!("no case {text:?}"))
        .1
}

fn check(file: &str, france: &[u32], apples: &[u32]) {
    let cases = load(file);
    for t in REQUIRED {
        let ids = ids_of(&cases, t);
        assert_eq!(ids.is_empty(), t.is_empty(), "{file}: {t:?} -> {ids:?}");
    }
    assert_eq!(ids_of(&cases, REQUIRED[0]), france, "{file}: France prompt");
    assert_eq!(ids_of(&cases, REQUIRED[1]), apples, "{file}: apples prompt");
}

#[test]
fn smollm2_reference_matches_anchors() {
    check(
        "SmolLM2-135M-Instruct.Q4_1.json",
        &[504, 3575, 282, 4649, 314],
        &[
            17872, 42, 8581, 553, 216, 35, 13855, 284, 34680, 216, 37, 540, 30, 1073, 800, 13855,
            1072, 384, 457, 47, 19842, 42,
        ],
    );
}

#[test]
fn qwen_reference_matches_anchors() {
    check(
        "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.json",
        &[785, 6722, 315, 9625, 374],
        &[
            14582, 25, 8364, 702, 220, 18, 40676, 323, 49531, 220, 20, 803, 13, 2585, 1657, 40676,
            1558, 566, 614, 30, 21806, 25,
        ],
    );
}
