//! Tests of the tokenizer and chat template against values from outside this
//! code: the reference encodings in `shared/fixtures/tokenizers/README.md`
//! (checked there with Rust `tokenizers` and independently with a JS tokenizer),
//! the Qwen3 template in the fixture's tokenizer_config.json, and the prompts
//! llama.cpp rendered for the two real GGUF models (`shared/anchors/README.md`).

use std::path::PathBuf;
use std::sync::OnceLock;

use super::tokenizer::{byte_level_table, drain_utf8};
use super::*;
use crate::format::{keys, GgufFile, GgufWriter, MetaValue};
use crate::sample::Rng;

fn fixtures() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/tokenizers");
    assert!(
        dir.join("qwen3-tokenizer.json").is_file(),
        "missing {} (the shared fixtures must sit beside the repository)",
        dir.display()
    );
    dir
}

fn qwen3_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        std::fs::read_to_string(fixtures().join("qwen3-tokenizer.json")).expect("read tokenizer")
    })
}

fn qwen3_template_source() -> String {
    let text = std::fs::read_to_string(fixtures().join("qwen3-tokenizer_config.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["chat_template"].as_str().unwrap().to_string()
}

/// A `.tah`-like GGUF carrying Qwen3's tokenizer and template, with the keys a
/// converter writes for Qwen3.
fn qwen3_gguf(add_bos: bool) -> GgufFile {
    let mut w = GgufWriter::new();
    w.set(keys::ARCHITECTURE, MetaValue::String("qwen3".into()));
    w.set(
        keys::TOKENIZER_HF_JSON,
        MetaValue::String(qwen3_json().to_string()),
    );
    w.set(
        keys::CHAT_TEMPLATE,
        MetaValue::String(qwen3_template_source()),
    );
    w.set(keys::BOS_ID, MetaValue::U32(151643));
    w.set(keys::EOS_ID, MetaValue::U32(151645));
    w.set(keys::ADD_BOS, MetaValue::Bool(add_bos));
    w.set(
        keys::EOG_IDS,
        MetaValue::Array(vec![MetaValue::U32(151645), MetaValue::U32(151643)].into()),
    );
    let bytes = w.begin(Vec::new()).unwrap().finish().unwrap();
    GgufFile::from_bytes("qwen3-test.tah", bytes).unwrap()
}

fn qwen3() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| Tokenizer::from_gguf(&qwen3_gguf(false)).unwrap().unwrap())
}

// ---- tokenizer ---------------------------------------------------------------

#[test]
fn qwen3_reference_encodings() {
    let tok = qwen3();
    // fixtures/tokenizers/README.md, add_special_tokens = false.
    assert_eq!(
        tok.encode("What is 12 * 7? Let's think step by step.", true)
            .unwrap(),
        [3838, 374, 220, 16, 17, 353, 220, 22, 30, 6771, 594, 1744, 3019, 553, 3019, 13]
    );
    // Special tokens in the text are parsed as special tokens.
    assert_eq!(
        tok.encode(
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
            true
        )
        .unwrap(),
        [151644, 872, 198, 13048, 151645, 198, 151644, 77091, 198, 151667, 271, 151668, 271]
    );
    // The README's special ids.
    for (text, id) in [
        ("<|endoftext|>", 151643),
        ("<|im_start|>", 151644),
        ("<|im_end|>", 151645),
        ("<think>", 151667),
        ("</think>", 151668),
    ] {
        assert_eq!(tok.token_id(text), Some(id));
        assert_eq!(tok.token_text(id).as_deref(), Some(text));
        assert_eq!(tok.encode(text, false).unwrap(), [id]);
    }
    assert_eq!(tok.token_text(374).as_deref(), Some("Ġis"));
    assert_eq!(tok.vocab_size(), 151_669);
}

#[test]
fn qwen3_metadata_ids() {
    let tok = qwen3();
    assert_eq!(tok.bos_id(), Some(151643));
    assert_eq!(tok.eos_id(), Some(151645));
    assert!(!tok.add_bos());
    assert_eq!(tok.eog_ids(), [151643, 151645]);
    assert!(tok.is_eog(151645) && tok.is_eog(151643) && !tok.is_eog(151644));

    // add_bos_token = true puts BOS first, only with add_special.
    let with_bos = Tokenizer::from_gguf(&qwen3_gguf(true)).unwrap().unwrap();
    assert_eq!(with_bos.encode("Hi", true).unwrap(), [151643, 13048]);
    assert_eq!(with_bos.encode("Hi", false).unwrap(), [13048]);
}

#[test]
fn qwen3_decode_round_trip() {
    let tok = qwen3();
    let text = "<|im_start|>user\nWhat is 12 * 7? 日本語 😀 é<|im_end|>";
    let ids = tok.encode(text, false).unwrap();
    assert_eq!(tok.decode(&ids), text);
    // llama.cpp's anchor texts keep special tokens: " Paris.<|im_end|>".
    assert_eq!(tok.decode(&[12095, 13, 151645]), " Paris.<|im_end|>");
}

#[test]
fn no_tokenizer_json_means_none() {
    let mut w = GgufWriter::new();
    w.set(keys::ARCHITECTURE, MetaValue::String("qwen3".into()));
    let f = GgufFile::from_bytes("x", w.begin(Vec::new()).unwrap().finish().unwrap()).unwrap();
    assert!(Tokenizer::from_gguf(&f).unwrap().is_none());
    assert!(ChatTemplate::from_gguf(&f).unwrap().is_none());
}

#[test]
fn bad_tokenizer_metadata_is_an_error() {
    let build = |json: &str, extra: Option<(&str, MetaValue)>| {
        let mut w = GgufWriter::new();
        w.set(keys::TOKENIZER_HF_JSON, MetaValue::String(json.into()));
        if let Some((k, v)) = extra {
            w.set(k, v);
        }
        GgufFile::from_bytes("x", w.begin(Vec::new()).unwrap().finish().unwrap()).unwrap()
    };
    let e = Tokenizer::from_gguf(&build("{not json", None)).unwrap_err();
    assert!(matches!(e, TextError::TokenizerJson(_)), "{e}");
    let e = Tokenizer::from_gguf(&build(
        qwen3_json(),
        Some((keys::BOS_ID, MetaValue::U32(999_999))),
    ))
    .unwrap_err();
    assert!(e.to_string().contains("outside"), "{e}");
    let e = Tokenizer::from_gguf(&build(
        qwen3_json(),
        Some((keys::EOG_IDS, MetaValue::String("x".into()))),
    ))
    .unwrap_err();
    assert!(e.to_string().contains(keys::EOG_IDS), "{e}");
    let e = Tokenizer::from_gguf(&build(
        qwen3_json(),
        Some((keys::ADD_BOS, MetaValue::Bool(true))),
    ))
    .unwrap_err();
    assert!(e.to_string().contains(keys::BOS_ID), "{e}");
}

// ---- streaming ---------------------------------------------------------------

#[test]
fn stream_pieces_concatenate_to_decode() {
    let tok = qwen3();
    let texts = [
        "日本語のテキストを少しずつ出力します。中文字符也可以。한국어 문장.",
        "emoji: 😀🎉 family 👩‍👩‍👧‍👦, flags 🇫🇷🇯🇵, skin tone 👍🏽",
        "combining: e\u{301}le\u{300}ve, n\u{303}, a\u{30a}\u{301}, Z\u{335}\u{30d}\u{31a}",
        "<|im_start|>assistant\n<think>\n思考中…🤔\n</think>\n\n答え: 84<|im_end|>",
        "हिन्दी नमस्ते, ภาษาไทย, עִבְרִית",
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕓𝕠𝕝𝕕 and ℵ₀ ∑ ∫ — “quotes” ½",
    ];
    let mut split_seen = false;
    for text in texts {
        let ids = tok.encode(text, false).unwrap();
        let full = tok.decode(&ids);
        // Qwen3's normalizer is NFC: combining sequences that have a precomposed
        // form come back precomposed (e + U+0301 → é); the rest survive as is.
        let nfc = text
            .replace("e\u{301}", "é")
            .replace("e\u{300}", "è")
            .replace("n\u{303}", "ñ")
            .replace("a\u{30a}\u{301}", "ǻ");
        assert_eq!(full, nfc, "round trip");
        let mut dec = tok.stream_decoder();
        let mut joined = String::new();
        for &id in &ids {
            let piece = dec.push(id);
            assert!(!piece.contains('\u{FFFD}'), "replacement char in {piece:?}");
            if piece.is_empty() {
                split_seen = true;
            }
            joined.push_str(piece);
        }
        joined.push_str(dec.flush());
        assert_eq!(joined, full);
    }
    // The texts do contain characters split across tokens, so the hold-back
    // path ran.
    assert!(split_seen);
}

#[test]
fn stream_matches_decode_on_invalid_bytes() {
    // Single-byte tokens: a lone continuation byte, a truncated 3-byte sequence
    // at the end. decode() turns them into U+FFFD; the stream must agree.
    let tok = qwen3();
    let table = byte_level_table();
    let byte_token = |b: u8| {
        let c = (0..table.len())
            .find(|&i| table[i] == Some(b))
            .and_then(|i| char::from_u32(i as u32))
            .unwrap();
        tok.token_id(&c.to_string()).expect("byte token")
    };
    let hi = tok.encode("hi", false).unwrap();
    let mut ids = hi.clone();
    ids.push(byte_token(0x80));
    ids.extend(&hi);
    ids.push(byte_token(0xe6));
    ids.push(byte_token(0x97));
    let full = tok.decode(&ids);
    assert_eq!(full, "hi\u{FFFD}hi\u{FFFD}");
    let mut dec = tok.stream_decoder();
    let mut joined = String::new();
    for &id in &ids {
        joined.push_str(dec.push(id));
    }
    joined.push_str(dec.flush());
    assert_eq!(joined, full);
}

#[test]
fn drain_utf8_equals_lossy_conversion() {
    let mut rng = Rng::new(99);
    for _ in 0..2000 {
        let len = (rng.next_u64() % 24) as usize;
        // Bias towards multi-byte lead and continuation bytes.
        let bytes: Vec<u8> = (0..len)
            .map(|_| match rng.next_u64() % 4 {
                0 => b'a' + (rng.next_u64() % 26) as u8,
                1 => 0x80 + (rng.next_u64() % 64) as u8,
                2 => 0xc2 + (rng.next_u64() % 51) as u8,
                _ => rng.next_u64() as u8,
            })
            .collect();
        let mut pending = Vec::new();
        let mut out = String::new();
        let mut joined = String::new();
        let mut i = 0;
        while i < bytes.len() {
            let n = 1 + (rng.next_u64() % 4) as usize;
            let end = (i + n).min(bytes.len());
            pending.extend_from_slice(&bytes[i..end]);
            out.clear();
            drain_utf8(&mut pending, &mut out, false);
            joined.push_str(&out);
            i = end;
        }
        out.clear();
        drain_utf8(&mut pending, &mut out, true);
        joined.push_str(&out);
        assert!(pending.is_empty());
        assert_eq!(joined, String::from_utf8_lossy(&bytes), "{bytes:02x?}");
    }
}

#[test]
fn byte_level_alphabet_is_a_bijection() {
    let table = byte_level_table();
    let mut seen = [false; 256];
    for b in table.iter().flatten() {
        assert!(!seen[*b as usize]);
        seen[*b as usize] = true;
    }
    assert!(seen.iter().all(|&s| s));
    // Known points of GPT-2's alphabet: 'Ġ' (U+0120) is the space, 'Ċ' (U+010A)
    // the newline.
    assert_eq!(table[0x120], Some(b' '));
    assert_eq!(table[0x10a], Some(b'\n'));
}

// ---- chat template -----------------------------------------------------------

fn qwen3_template() -> ChatTemplate {
    ChatTemplate::from_gguf(&qwen3_gguf(false))
        .unwrap()
        .unwrap()
}

#[test]
fn qwen3_single_turn_no_thinking_ids() {
    let tmpl = qwen3_template();
    let text = tmpl
        .render(&[ChatMessage::new("user", "Hi")], true, Some(false))
        .unwrap();
    assert_eq!(
        text,
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    );
    // The fixture README's reference encoding of exactly this text.
    assert_eq!(
        qwen3().encode(&text, true).unwrap(),
        [151644, 872, 198, 13048, 151645, 198, 151644, 77091, 198, 151667, 271, 151668, 271]
    );
}

#[test]
fn qwen3_multi_turn() {
    let tmpl = qwen3_template();
    let messages = [
        ChatMessage::new("system", "You are a helpful assistant."),
        ChatMessage::new("user", "What is 2+2?"),
        ChatMessage::new("assistant", "<think>\nAdd them.\n</think>\n\n2+2 = 4."),
        ChatMessage::new("user", "And 3+3?"),
    ];
    // Read off Qwen3's template:
    // - no tools, messages[0] is the system turn → `<|im_start|>system\n…<|im_end|>\n`
    //   before the loop; the loop skips it (system only when not loop.first);
    // - ns.last_query_index = 3 (the last user turn not a <tool_response>);
    // - the assistant turn (index 2 ≤ 3) has `</think>`, so content becomes the
    //   part after it, `.lstrip('\n')` = "2+2 = 4.", and is written without
    //   its reasoning: `<|im_start|>assistant\n2+2 = 4.<|im_end|>\n`;
    // - add_generation_prompt with enable_thinking false →
    //   `<|im_start|>assistant\n<think>\n\n</think>\n\n`.
    let expected = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n\
                    <|im_start|>user\nWhat is 2+2?<|im_end|>\n\
                    <|im_start|>assistant\n2+2 = 4.<|im_end|>\n\
                    <|im_start|>user\nAnd 3+3?<|im_end|>\n\
                    <|im_start|>assistant\n<think>\n\n</think>\n\n";
    assert_eq!(tmpl.render(&messages, true, Some(false)).unwrap(), expected);

    // enable_thinking true or absent: the generation prompt stops at
    // `<|im_start|>assistant\n` (the template tests `enable_thinking is false`).
    let open = expected.strip_suffix("<think>\n\n</think>\n\n").unwrap();
    assert_eq!(tmpl.render(&messages, true, Some(true)).unwrap(), open);
    assert_eq!(tmpl.render(&messages, true, None).unwrap(), open);

    // An assistant turn after the last user turn keeps its reasoning, re-wrapped
    // as `<think>\n{reasoning.strip('\n')}\n</think>\n\n{content}`.
    let tail = [
        ChatMessage::new("user", "What is 2+2?"),
        ChatMessage::new(
            "assistant",
            "<think>\n\nAdd them.\n\n</think>\n\n\n2+2 = 4.",
        ),
    ];
    assert_eq!(
        tmpl.render(&tail, false, None).unwrap(),
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n\
         <|im_start|>assistant\n<think>\nAdd them.\n</think>\n\n2+2 = 4.<|im_end|>\n"
    );
}

#[test]
fn template_errors_are_errors() {
    let e = ChatTemplate::new("{% if %}", None, None).unwrap_err();
    assert!(matches!(e, TextError::TemplateSyntax(_)), "{e}");
    let t = ChatTemplate::new(
        "{% if messages[0].role != 'user' %}{{ raise_exception('first turn must be the user') }}{% endif %}ok",
        None,
        None,
    )
    .unwrap();
    assert_eq!(
        t.render(&[ChatMessage::new("user", "x")], false, None)
            .unwrap(),
        "ok"
    );
    let e = t
        .render(&[ChatMessage::new("system", "x")], false, None)
        .unwrap_err();
    assert!(matches!(e, TextError::TemplateRender(_)));
    assert!(e.to_string().contains("first turn must be the user"), "{e}");
    // Unknown functions and filters fail cleanly too.
    let t = ChatTemplate::new("{{ strftime_now('%Y') }}", None, None).unwrap();
    assert!(t.render(&[], false, None).is_err());
}

#[test]
fn template_variables_and_python_methods() {
    let t = ChatTemplate::new(
        "{{ bos_token }}|{{ eos_token }}|{{ tools is none }}|{{ enable_thinking is defined }}|\
         {{ messages[0].content.strip().upper() }}|{{ messages[0]['content'].split(',')[-1].lstrip() }}|\
         {{ messages[0].content.startswith(' a') }}|{{ messages[0].content.endswith('c ') }}|\
         {% for m in messages %}{% if loop.index0 == 1 %}{% break %}{% endif %}{{ m.role }}{% endfor %}",
        Some("<s>".into()),
        Some("</s>".into()),
    )
    .unwrap();
    let msgs = [
        ChatMessage::new("user", " a, b,  c "),
        ChatMessage::new("assistant", "x"),
    ];
    // Booleans print as Python prints them, as in Jinja2.
    assert_eq!(
        t.render(&msgs, false, None).unwrap(),
        "<s>|</s>|True|False|A, B,  C|c |True|True|user"
    );
}

#[test]
fn tojson_writes_like_python_json_dumps() {
    let t = ChatTemplate::new(
        "{{ {'name': 'f', 'n': 1, 'x': 1.5, 'ok': true, 'none': none, 'l': [1, 'é\"\\n'], 'e': {}} | tojson }}\n\
         {{ [1, {'a': 2}] | tojson(indent=2) }}",
        None,
        None,
    )
    .unwrap();
    // Python: json.dumps(..., ensure_ascii=False); keys in the map's order.
    let out = t.render(&[], false, None).unwrap();
    let (first, second) = out.split_once('\n').unwrap();
    let v: serde_json::Value = serde_json::from_str(first).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"name": "f", "n": 1, "x": 1.5, "ok": true, "none": null, "l": [1, "é\"\n"], "e": {}})
    );
    assert!(first.contains("\"l\": [1, \"é\\\"\\n\"]"), "{first}");
    assert!(first.contains("\"e\": {}"), "{first}");
    assert_eq!(second, "[\n  1,\n  {\n    \"a\": 2\n  }\n]");
}

// ---- the real models' templates ----------------------------------------------

fn real_model(name: &str) -> Option<GgufFile> {
    let dir = std::env::var_os("TAH_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/tah/models")
        });
    let path = dir.join(name);
    if !path.is_file() {
        if std::env::var("TAH_SKIP_REAL_MODELS").as_deref() == Ok("1") {
            eprintln!(
                "skipping: {} absent (TAH_SKIP_REAL_MODELS=1)",
                path.display()
            );
            return None;
        }
        panic!(
            "{} is absent: run models/fetch.sh (or set TAH_SKIP_REAL_MODELS=1)",
            path.display()
        );
    }
    Some(GgufFile::open(&path).unwrap())
}

fn france() -> Vec<ChatMessage> {
    vec![ChatMessage::new("user", "The capital of France is")]
}

#[test]
fn smollm2_template_matches_llama_cpp() {
    let Some(f) = real_model("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let t = ChatTemplate::from_gguf(&f).unwrap().unwrap();
    // anchors/README.md, SmolLM2 "jinja / France" tokenized text.
    assert_eq!(
        t.render(&france(), true, None).unwrap(),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nThe capital of France is<|im_end|>\n<|im_start|>assistant\n"
    );
    // The GGUF has no tokenizer.json: ids only.
    assert!(Tokenizer::from_gguf(&f).unwrap().is_none());
}

#[test]
fn qwen25_template_matches_llama_cpp() {
    let Some(f) = real_model("Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf") else {
        return;
    };
    let t = ChatTemplate::from_gguf(&f).unwrap().unwrap();
    let text = t.render(&france(), true, None).unwrap();
    // anchors/README.md, Qwen2.5-Coder "jinja / France" tokenized text.
    assert_eq!(
        text,
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nThe capital of France is<|im_end|>\n<|im_start|>assistant\n"
    );
    // Qwen2.5 and Qwen3 share the byte-level BPE and the ChatML specials, so
    // Qwen3's tokenizer gives llama.cpp's 34 prompt ids for this text.
    assert_eq!(
        qwen3().encode(&text, true).unwrap(),
        [
            151644, 8948, 198, 2610, 525, 1207, 16948, 11, 3465, 553, 54364, 14817, 13, 1446, 525,
            264, 10950, 17847, 13, 151645, 198, 151644, 872, 198, 785, 6722, 315, 9625, 374,
            151645, 198, 151644, 77091, 198
        ]
    );
}

/// A hostile template (the file is untrusted) must fail, not run for hours:
/// two nested 100,000-item loops are 10^10 steps without the fuel budget.
#[test]
fn endless_template_runs_out_of_fuel() {
    let t = ChatTemplate::new(
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
        None,
        None,
    )
    .unwrap();
    let start = std::time::Instant::now();
    let err = t.render(&[], true, None).unwrap_err();
    assert!(err.to_string().contains("fuel"), "{err}");
    assert!(start.elapsed().as_secs() < 60, "took {:?}", start.elapsed());
}

/// Output is capped: a 100 MB string printed in a loop must fail early.
#[test]
fn huge_template_output_is_refused() {
    let t = ChatTemplate::new(
        "{% set s = 'x' * 10000000 %}{% for i in range(100000) %}{{ s }}{% endfor %}",
        None,
        None,
    )
    .unwrap();
    let err = t.render(&[], true, None).unwrap_err();
    assert!(err.to_string().contains("exceeds"), "{err}");
}

/// Unbounded recursion through a macro is an error, not a stack overflow.
#[test]
fn recursive_template_is_an_error() {
    let t = ChatTemplate::new(
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        None,
        None,
    )
    .unwrap();
    assert!(t.render(&[], true, None).is_err());
}

/// The fuel budget leaves room for very long real conversations: 20,000
/// Qwen3 turns (with thinking blocks) render (~70 fuel per message).
#[test]
fn long_conversation_fits_the_fuel_budget() {
    let t = qwen3_template();
    let mut msgs = vec![ChatMessage::new("system", "You are helpful.")];
    for i in 0..10_000 {
        msgs.push(ChatMessage::new("user", format!("Question {i}?")));
        msgs.push(ChatMessage::new(
            "assistant",
            format!("<think>\nhm {i}\n</think>\n\nAnswer {i}."),
        ));
    }
    let out = t.render(&msgs, true, Some(false)).unwrap();
    assert!(out.contains("Question 9999?"));
}
