//! Checks the tokenizer.json synthesised from GGUF metadata against llama.cpp's own
//! tokenizations of the two real test models, and against Qwen3's real HF tokenizer.
//!
//! The models come from `models/fetch.sh` (directory `$TAH_MODELS`, default
//! `~/.cache/tah/models`). Without them these tests fail, unless `TAH_SKIP_REAL_MODELS=1`.

use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tah::format::MetaValue;
use tah_convert::gguf_tokenizer::{tokenizer_json_from_gguf, TokenizerSynthError};
use tokenizers::Tokenizer;

const SMOLLM: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const QWEN: &str = "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf";

// ---------------------------------------------------------------------------------------
// Test scaffolding: just enough of a GGUF reader for the header and metadata.

fn read_exact<const N: usize>(r: &mut impl Read) -> [u8; N] {
    let mut b = [0u8; N];
    r.read_exact(&mut b).expect("truncated GGUF");
    b
}

fn read_u32(r: &mut impl Read) -> u32 {
    u32::from_le_bytes(read_exact(r))
}

fn read_u64(r: &mut impl Read) -> u64 {
    u64::from_le_bytes(read_exact(r))
}

fn read_string(r: &mut impl Read) -> String {
    let len = read_u64(r) as usize;
    let mut b = vec![0u8; len];
    r.read_exact(&mut b).expect("truncated GGUF string");
    String::from_utf8(b).expect("GGUF string is not UTF-8")
}

fn read_value(r: &mut impl Read, ty: u32) -> MetaValue {
    match ty {
        0 => MetaValue::U8(read_exact::<1>(r)[0]),
        1 => MetaValue::I8(read_exact::<1>(r)[0] as i8),
        2 => MetaValue::U16(u16::from_le_bytes(read_exact(r))),
        3 => MetaValue::I16(i16::from_le_bytes(read_exact(r))),
        4 => MetaValue::U32(read_u32(r)),
        5 => MetaValue::I32(i32::from_le_bytes(read_exact(r))),
        6 => MetaValue::F32(f32::from_le_bytes(read_exact(r))),
        7 => MetaValue::Bool(read_exact::<1>(r)[0] != 0),
        8 => MetaValue::String(read_string(r)),
        9 => {
            let elem = read_u32(r);
            let n = read_u64(r);
            MetaValue::Array((0..n).map(|_| read_value(r, elem)).collect())
        }
        10 => MetaValue::U64(read_u64(r)),
        11 => MetaValue::I64(i64::from_le_bytes(read_exact(r))),
        12 => MetaValue::F64(f64::from_le_bytes(read_exact(r))),
        _ => panic!("unknown GGUF value type {ty}"),
    }
}

fn read_gguf_metadata(path: &Path) -> BTreeMap<String, MetaValue> {
    let mut r = BufReader::new(std::fs::File::open(path).expect("open GGUF"));
    assert_eq!(
        &read_exact::<4>(&mut r),
        b"GGUF",
        "{} is not GGUF",
        path.display()
    );
    let version = read_u32(&mut r);
    assert!(
        version >= 2,
        "GGUF version {version} not supported by this test reader"
    );
    let _n_tensors = read_u64(&mut r);
    let n_kv = read_u64(&mut r);
    (0..n_kv)
        .map(|_| {
            let key = read_string(&mut r);
            let ty = read_u32(&mut r);
            (key, read_value(&mut r, ty))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Loading the real models (once per test binary).

struct Model {
    meta: BTreeMap<String, MetaValue>,
    tokenizer: Tokenizer,
}

fn models_dir() -> PathBuf {
    match std::env::var_os("TAH_MODELS") {
        Some(d) => PathBuf::from(d),
        None => {
            PathBuf::from(std::env::var_os("HOME").expect("HOME unset")).join(".cache/tah/models")
        }
    }
}

fn skip_real_models() -> bool {
    std::env::var("TAH_SKIP_REAL_MODELS").is_ok_and(|v| v == "1")
}

fn load(file: &str) -> Model {
    let path = models_dir().join(file);
    assert!(
        path.exists(),
        "{} is missing: run models/fetch.sh (or set TAH_SKIP_REAL_MODELS=1 to skip)",
        path.display()
    );
    let meta = read_gguf_metadata(&path);
    let json = tokenizer_json_from_gguf(&|k| meta.get(k)).expect("synthesise tokenizer.json");
    let tokenizer = json
        .parse::<Tokenizer>()
        .expect("tokenizers loads the synthesised json");
    Model { meta, tokenizer }
}

/// The model, or `None` (after saying so) when real-model tests are switched off.
fn model(file: &'static str) -> Option<&'static Model> {
    static SMOL: OnceLock<Model> = OnceLock::new();
    static QW: OnceLock<Model> = OnceLock::new();
    if skip_real_models() {
        println!("TAH_SKIP_REAL_MODELS=1: skipping the {file} tokenizer test");
        return None;
    }
    let cell = match file {
        SMOLLM => &SMOL,
        QWEN => &QW,
        _ => unreachable!(),
    };
    Some(cell.get_or_init(|| load(file)))
}

fn encode(m: &Model, text: &str) -> Vec<u32> {
    // add_special_tokens = true, like llama_tokenize(add_special = true).
    m.tokenizer
        .encode(text, true)
        .expect("encode")
        .get_ids()
        .to_vec()
}

// ---------------------------------------------------------------------------------------
// (a) llama.cpp's prompt ids, from /work/shared/anchors/README.md.

const FRANCE: &str = "The capital of France is";
const APPLES: &str =
    "Question: Tom has 3 apples and buys 5 more. How many apples does he have? Answer:";

fn chatml(system: Option<&str>, user: &str) -> String {
    let sys = system
        .map(|s| format!("<|im_start|>system\n{s}<|im_end|>\n"))
        .unwrap_or_default();
    format!("{sys}<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")
}

const QWEN_SYSTEM: &str = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";
const SMOL_SYSTEM: &str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

#[test]
fn qwen_matches_llama_cpp_prompt_ids() {
    let Some(m) = model(QWEN) else { return };
    let cases: [(String, &[u32]); 6] = [
        (FRANCE.into(), &[785, 6722, 315, 9625, 374]),
        (
            APPLES.into(),
            &[
                14582, 25, 8364, 702, 220, 18, 40676, 323, 49531, 220, 20, 803, 13, 2585, 1657,
                40676, 1558, 566, 614, 30, 21806, 25,
            ],
        ),
        (
            chatml(Some(QWEN_SYSTEM), FRANCE),
            &[
                151644, 8948, 198, 2610, 525, 1207, 16948, 11, 3465, 553, 54364, 14817, 13, 1446,
                525, 264, 10950, 17847, 13, 151645, 198, 151644, 872, 198, 785, 6722, 315, 9625,
                374, 151645, 198, 151644, 77091, 198,
            ],
        ),
        (
            chatml(Some(QWEN_SYSTEM), APPLES),
            &[
                151644, 8948, 198, 2610, 525, 1207, 16948, 11, 3465, 553, 54364, 14817, 13, 1446,
                525, 264, 10950, 17847, 13, 151645, 198, 151644, 872, 198, 14582, 25, 8364, 702,
                220, 18, 40676, 323, 49531, 220, 20, 803, 13, 2585, 1657, 40676, 1558, 566, 614,
                30, 21806, 25, 151645, 198, 151644, 77091, 198,
            ],
        ),
        (
            chatml(None, FRANCE),
            &[
                151644, 872, 198, 785, 6722, 315, 9625, 374, 151645, 198, 151644, 77091, 198,
            ],
        ),
        (
            chatml(None, APPLES),
            &[
                151644, 872, 198, 14582, 25, 8364, 702, 220, 18, 40676, 323, 49531, 220, 20, 803,
                13, 2585, 1657, 40676, 1558, 566, 614, 30, 21806, 25, 151645, 198, 151644, 77091,
                198,
            ],
        ),
    ];
    for (text, want) in &cases {
        assert_eq!(&encode(m, text), want, "Qwen2.5 ids for {text:?}");
    }
}

#[test]
fn smollm_matches_llama_cpp_prompt_ids() {
    let Some(m) = model(SMOLLM) else { return };
    let cases: [(String, &[u32]); 6] = [
        (FRANCE.into(), &[504, 3575, 282, 4649, 314]),
        (
            APPLES.into(),
            &[
                17872, 42, 8581, 553, 216, 35, 13855, 284, 34680, 216, 37, 540, 30, 1073, 800,
                13855, 1072, 384, 457, 47, 19842, 42,
            ],
        ),
        (
            chatml(Some(SMOL_SYSTEM), FRANCE),
            &[
                1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018,
                411, 407, 19712, 8182, 2, 198, 1, 4093, 198, 504, 3575, 282, 4649, 314, 2, 198, 1,
                520, 9531, 198,
            ],
        ),
        (
            chatml(Some(SMOL_SYSTEM), APPLES),
            &[
                1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018,
                411, 407, 19712, 8182, 2, 198, 1, 4093, 198, 17872, 42, 8581, 553, 216, 35, 13855,
                284, 34680, 216, 37, 540, 30, 1073, 800, 13855, 1072, 384, 457, 47, 19842, 42, 2,
                198, 1, 520, 9531, 198,
            ],
        ),
        (
            chatml(None, FRANCE),
            &[
                1, 4093, 198, 504, 3575, 282, 4649, 314, 2, 198, 1, 520, 9531, 198,
            ],
        ),
        (
            chatml(None, APPLES),
            &[
                1, 4093, 198, 17872, 42, 8581, 553, 216, 35, 13855, 284, 34680, 216, 37, 540, 30,
                1073, 800, 13855, 1072, 384, 457, 47, 19842, 42, 2, 198, 1, 520, 9531, 198,
            ],
        ),
    ];
    for (text, want) in &cases {
        assert_eq!(&encode(m, text), want, "SmolLM2 ids for {text:?}");
    }
}

// ---------------------------------------------------------------------------------------
// (b) llama.cpp's own tokenizations (llama_tokenize via llama-cpp-sys-2) of harder strings:
// CJK, emoji, code, whitespace, numbers, accents, contractions, non-ASCII spaces.

#[derive(serde::Deserialize)]
struct LlamaTokenizeFile {
    model: String,
    cases: Vec<LlamaTokenizeCase>,
}

#[derive(serde::Deserialize)]
struct LlamaTokenizeCase {
    text: String,
    ids: Vec<u32>,
}

fn check_llama_tokenize_file(file: &'static str) {
    let Some(m) = model(file) else { return };
    let stem = file.trim_end_matches(".gguf");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/llama-tokenize");
    let path = dir.join(format!("{stem}.json"));
    assert!(path.exists(), "{} is missing", path.display());
    let data: LlamaTokenizeFile =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("parse");
    assert!(
        data.model.contains(stem) || stem.contains(&data.model),
        "{} is for model {:?}",
        path.display(),
        data.model
    );
    let failures: Vec<String> = data
        .cases
        .iter()
        .filter_map(|c| {
            let got = encode(m, &c.text);
            (got != c.ids).then(|| {
                format!(
                    "{:?}\n  llama.cpp {:?}\n  ours      {:?}",
                    c.text, c.ids, got
                )
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{stem}: {} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!("{stem}: {} llama-tokenize cases match", data.cases.len());
}

#[test]
fn qwen_matches_llama_tokenize_file() {
    check_llama_tokenize_file(QWEN);
}

#[test]
fn smollm_matches_llama_tokenize_file() {
    check_llama_tokenize_file(SMOLLM);
}

// ---------------------------------------------------------------------------------------
// Round trip and structure.

const STRINGS: &[&str] = &[
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

fn check_round_trip_and_structure(file: &'static str) {
    let Some(m) = model(file) else { return };
    for s in STRINGS {
        let ids = encode(m, s);
        let back = m.tokenizer.decode(&ids, false).expect("decode");
        assert_eq!(&back, s, "{file}: decode(encode(s)) for ids {ids:?}");
    }
    // Every GGUF token and merge made it into the json (none dropped).
    let n = |k: &str| m.meta[k].as_array().unwrap().len();
    let vocab = m.tokenizer.get_vocab(true);
    let max_id = vocab.values().copied().max().unwrap() as usize;
    assert_eq!(
        max_id + 1,
        n("tokenizer.ggml.tokens"),
        "{file}: vocabulary size"
    );
    let json = tokenizer_json_from_gguf(&|k| m.meta.get(k)).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v["model"]["merges"].as_array().unwrap().len(),
        n("tokenizer.ggml.merges"),
        "{file}: merges kept"
    );
}

#[test]
fn qwen_round_trip() {
    check_round_trip_and_structure(QWEN);
}

#[test]
fn smollm_round_trip() {
    check_round_trip_and_structure(SMOLLM);
}

// ---------------------------------------------------------------------------------------
// Second, independent check: Qwen3's real HF tokenizer shares Qwen2.5's BPE (ids < 151643).

#[test]
fn qwen_matches_real_hf_qwen3_tokenizer_on_plain_text() {
    let Some(m) = model(QWEN) else { return };
    let path = std::env::var_os("TAH_QWEN3_TOKENIZER")
        .map(PathBuf::from)
        // shared/ sits beside the repository checkout (here and in CI).
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/fixtures/tokenizers/qwen3-tokenizer.json")
        });
    if !path.exists() {
        println!("{} absent: Qwen3 cross-check not run", path.display());
        return;
    }
    let hf = Tokenizer::from_file(&path).expect("load qwen3 tokenizer.json");
    let mut texts: Vec<&str> = STRINGS
        .iter()
        .copied()
        .filter(|s| !s.contains("<|"))
        .collect();
    texts.extend([
        "What is 12 * 7? Let's think step by step.",
        "I'LL say it's DONE, they'Re here; we've 'em",
        "  \t tabs\t\tand\r\nCRLF\r\n\r\n  trailing   ",
        "x = [i**2 for i in range(10)]  # 平方\n",
        "https://example.com/a?b=c&d=e#frag",
    ]);
    for t in texts {
        let want = hf.encode(t, false).expect("hf encode").get_ids().to_vec();
        assert!(
            want.iter().all(|&id| id < 151643),
            "{t:?} hit a Qwen3 special token"
        );
        assert_eq!(
            encode(m, t),
            want,
            "ids for {t:?} vs Qwen3's tokenizer.json"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Synthetic metadata: no real model needed.

fn tiny_meta(model: &str, pre: &str, add_bos: bool) -> BTreeMap<String, MetaValue> {
    let strs =
        |v: &[&str]| MetaValue::Array(v.iter().map(|s| MetaValue::String(s.to_string())).collect());
    let mut m = BTreeMap::new();
    m.insert(
        "tokenizer.ggml.model".into(),
        MetaValue::String(model.into()),
    );
    m.insert("tokenizer.ggml.pre".into(), MetaValue::String(pre.into()));
    let tokens = ["<s>", "a", "b", "ab", "Ġ", "Ġab", "<x>", "c", "abc"];
    let types = [3, 1, 1, 1, 1, 1, 4, 1, 1];
    m.insert("tokenizer.ggml.tokens".into(), strs(&tokens));
    m.insert(
        "tokenizer.ggml.token_type".into(),
        MetaValue::Array(types.into_iter().map(MetaValue::I32).collect()),
    );
    // No merge builds "abc": only a whole-word vocab lookup (ignore_merges) finds it.
    m.insert("tokenizer.ggml.merges".into(), strs(&["a b", "Ġ ab"]));
    m.insert("tokenizer.ggml.bos_token_id".into(), MetaValue::U32(0));
    m.insert(
        "tokenizer.ggml.add_bos_token".into(),
        MetaValue::Bool(add_bos),
    );
    m
}

#[test]
fn synthetic_vocab_bos_and_user_defined_tokens() {
    let meta = tiny_meta("gpt2", "qwen2", true);
    let json = tokenizer_json_from_gguf(&|k| meta.get(k)).unwrap();
    let tok: Tokenizer = json.parse().unwrap();
    let ids = |s: &str| tok.encode(s, true).unwrap().get_ids().to_vec();
    assert_eq!(ids("ab ab"), [0, 3, 5]);
    assert_eq!(ids("ab<x>ab"), [0, 3, 6, 3]);
    assert_eq!(ids("<s>ab"), [0, 0, 3]);
    assert_eq!(tok.encode("ab", false).unwrap().get_ids(), [3]);

    let meta = tiny_meta("gpt2", "smollm", false);
    let json = tokenizer_json_from_gguf(&|k| meta.get(k)).unwrap();
    let tok: Tokenizer = json.parse().unwrap();
    assert_eq!(tok.encode("ab ab", true).unwrap().get_ids(), [3, 5]);
}

#[test]
fn whole_word_lookup_only_for_llama3() {
    // llama.cpp sets ignore_merges for the llama3 family only.
    for (pre, want) in [
        ("llama-bpe", vec![8]),
        ("qwen2", vec![3, 7]),
        ("gpt-2", vec![3, 7]),
    ] {
        let meta = tiny_meta("gpt2", pre, false);
        let json = tokenizer_json_from_gguf(&|k| meta.get(k)).unwrap();
        let tok: Tokenizer = json.parse().unwrap();
        assert_eq!(
            tok.encode("abc", true).unwrap().get_ids(),
            want,
            "pre {pre}"
        );
    }
}

#[test]
fn unsupported_tokenizers_are_reported() {
    let meta = tiny_meta("llama", "default", false);
    let err = tokenizer_json_from_gguf(&|k| meta.get(k)).unwrap_err();
    assert!(matches!(err, TokenizerSynthError::Unsupported(_)), "{err}");
    let meta = tiny_meta("gpt2", "no-such-pre", false);
    let err = tokenizer_json_from_gguf(&|k| meta.get(k)).unwrap_err();
    assert!(matches!(err, TokenizerSynthError::Unsupported(_)), "{err}");
    assert!(err.to_string().contains("no-such-pre"));
}
