//! A hostile tokenizer.json (it travels inside the untrusted model file) is refused at
//! load, or runs within fixed bounds: the limits of `src/text/tokenizer_limits.rs` and
//! of `Tokenizer::encode`. The attacks are small WordLevel tokenizers built here; the
//! real tokenizers (Qwen3's tokenizer.json, and SmolLM2's and Qwen2.5's synthesised
//! from their GGUF files) must still load and give llama.cpp's ids.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tah::text::tokenizer::{MAX_ENCODE_BYTES, MAX_NORMALIZED_BYTES};
use tah::text::tokenizer_limits::Growth;
use tah::text::Tokenizer;

/// A WordLevel tokenizer over a few words with the given pipeline.
fn json_with(normalizer: Value, pre_tokenizer: Value, decoder: Value) -> String {
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": null,
        "decoder": decoder,
        "model": {
            "type": "WordLevel",
            "vocab": {"[UNK]": 0, "a": 1, "b": 2, "ab": 3, "<0xE2>": 4, "<0x82>": 5, "<0xAC>": 6},
            "unk_token": "[UNK]"
        }
    })
    .to_string()
}

fn load_err(json: &str) -> String {
    Tokenizer::from_json(json).unwrap_err().to_string()
}

const PREFIX: &str = "cannot load the embedded tokenizer.json: ";

fn replace(pat: &str, content: &str) -> Value {
    json!({"type": "Replace", "pattern": {"String": pat}, "content": content})
}

fn split_regex(re: &str) -> Value {
    json!({"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false})
}

#[test]
fn megabyte_replace_is_refused() {
    let big = "x".repeat(1 << 20);
    let err = load_err(&json_with(replace("a", &big), Value::Null, Value::Null));
    assert_eq!(
        err,
        format!("{PREFIX}normalizer Replace: inserts 1048576 bytes (limit 64)")
    );
    // The same in a decoder.
    let err = load_err(&json_with(Value::Null, Value::Null, replace("a", &big)));
    assert_eq!(
        err,
        format!("{PREFIX}decoder Replace: inserts 1048576 bytes (limit 64)")
    );
}

#[test]
fn chain_of_replaces_is_bounded() {
    // 60-fold each: 3,600 > 128.
    let r = replace("a", &"a".repeat(60));
    let seq = json!({"type": "Sequence", "normalizers": [r.clone(), r]});
    assert_eq!(
        load_err(&json_with(seq, Value::Null, Value::Null)),
        format!("{PREFIX}normalizer Sequence: its steps grow a text more than 128-fold")
    );
    // Normalizer 16-fold × pre-tokenizer (Metaspace) 8-fold = 128 passes; with a
    // ByteLevel normalizer in front (2-fold) it does not.
    let r16 = replace("a", &"a".repeat(16));
    let meta =
        json!({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true});
    assert!(Tokenizer::from_json(&json_with(r16.clone(), meta.clone(), Value::Null)).is_ok());
    let seq = json!({"type": "Sequence", "normalizers": [{"type": "ByteLevel"}, r16]});
    assert_eq!(
        load_err(&json_with(seq, meta, Value::Null)),
        format!(
            "{PREFIX}normalizer × pre_tokenizer can grow a text 256-fold (limit {})",
            tah::text::tokenizer_limits::MAX_EXPANSION
        )
    );

    // Within the limit the bound is exact: a → bb → cccc grows 4-fold.
    let seq = json!({"type": "Sequence", "normalizers": [replace("a", "bb"), replace("b", "cc")]});
    let tok = Tokenizer::from_json(&json_with(seq, Value::Null, Value::Null)).unwrap();
    assert_eq!(
        tok.growth(),
        Growth {
            encode: 4,
            decode: 1
        }
    );
    assert_eq!(tok.pre_tokenized_len("aaaa").unwrap(), 16);
}

#[test]
fn prepend_blowup_is_refused() {
    let p = json!({"type": "Prepend", "prepend": "▁".repeat(1000)});
    assert_eq!(
        load_err(&json_with(p, Value::Null, Value::Null)),
        format!("{PREFIX}normalizer Prepend: inserts 3000 bytes (limit 64)")
    );
    // 61-fold (a 60-byte prefix on a 1-byte piece) × NFKC 11-fold.
    let seq = json!({"type": "Sequence", "normalizers": [
        {"type": "NFKC"}, {"type": "Prepend", "prepend": "p".repeat(60)}
    ]});
    assert_eq!(
        load_err(&json_with(seq, Value::Null, Value::Null)),
        format!("{PREFIX}normalizer Sequence: its steps grow a text more than 128-fold")
    );
    // A Llama-2 style pipeline loads: Prepend("▁") 4 × Replace(" ", "▁") 3.
    let llama = json!({"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "▁"}, replace(" ", "▁")
    ]});
    let tok = Tokenizer::from_json(&json_with(llama, Value::Null, Value::Null)).unwrap();
    assert_eq!(tok.growth().encode, 12);
    // "a" (1 byte) → "▁a" (4 bytes): the per-piece bound 4 × 3 holds.
    assert_eq!(tok.pre_tokenized_len("a b").unwrap(), 3 + 1 + 3 + 1);
}

#[test]
fn deep_nesting_is_refused() {
    let mut n = json!({"type": "NFC"});
    for _ in 0..6 {
        n = json!({"type": "Sequence", "normalizers": [n]});
    }
    assert_eq!(
        load_err(&json_with(n, Value::Null, Value::Null)),
        format!("{PREFIX}normalizer Sequence: Sequence nested deeper than 4 levels")
    );

    // Deep JSON anywhere (here in an unused key) stops before tokenizers sees it.
    let mut v = json!(0);
    for _ in 0..40 {
        v = json!([v]);
    }
    let mut doc: Value =
        serde_json::from_str(&json_with(Value::Null, Value::Null, Value::Null)).unwrap();
    doc["extra"] = v;
    assert_eq!(
        load_err(&doc.to_string()),
        format!("{PREFIX}JSON nested deeper than 32 levels")
    );

    // A million brackets: serde_json's recursion limit (128) answers, on a small
    // stack, without overflowing it: `{"model": ` is 10 bytes, the object is level 1,
    // the 127th '[' (column 137) level 128.
    let deep = format!(
        "{{\"model\": {}0{}}}",
        "[".repeat(1_000_000),
        "]".repeat(1_000_000)
    );
    let err = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || load_err(&deep))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(
        err,
        format!("{PREFIX}recursion limit exceeded at line 1 column 137")
    );
}

#[test]
fn pathological_regexes_are_refused() {
    let cases = [
        (r"(a+)+$", "a repeated group holds a quantifier or an alternation (exponential backtracking)"),
        (r"(a|aa)*c", "a repeated group holds a quantifier or an alternation (exponential backtracking)"),
        (r"(?:x?y){2,}", "a repeated group holds a quantifier or an alternation (exponential backtracking)"),
        (r"(a)\1", "back references are not allowed"),
        (r"a{1000}", "repetition count 1000 (limit 256)"),
        (r"(?(1)a|b)", "conditionals are not allowed"),
        (r"x|a*a*(?=c)|.", "an alternative with look-around holds more than one variable quantifier (polynomial backtracking)"),
    ];
    for (re, why) in cases {
        let err = load_err(&json_with(Value::Null, split_regex(re), Value::Null));
        assert_eq!(
            err,
            format!("{PREFIX}pre_tokenizer Split: regex {re:?}: {why}"),
            "{re}"
        );
    }
    let long = "a".repeat(2000);
    assert_eq!(
        load_err(&json_with(Value::Null, split_regex(&long), Value::Null)),
        format!(
            "{PREFIX}pre_tokenizer Split: regex \"{}…\": 2000 bytes long (limit 1024)",
            "a".repeat(40)
        )
    );
    // The same rules for a Replace normalizer's regex.
    let r = json!({"type": "Replace", "pattern": {"Regex": "(a+)+$"}, "content": ""});
    assert!(load_err(&json_with(r, Value::Null, Value::Null)).contains("normalizer Replace: regex"));

    // The real shapes pass: an optional alternation group, fixed counts in a
    // repeated group, look-ahead.
    for re in [
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}",
        r"\d{3}(?=(?:\d{3})*\b)",
        r"[\]\[(]+|\{|x{2}",
    ] {
        if let Err(e) = Tokenizer::from_json(&json_with(Value::Null, split_regex(re), Value::Null))
        {
            panic!("{re}: {e}");
        }
    }
}

/// What the rules let through stays within the quadratic bound: `a*(?=c)|.` scans
/// the rest of a run of `a`s at each position. (Before the one-quantifier rule,
/// `a*a*a*a*(?=c)|.` took 15.7 s on 5 KB of runs of 60 `a`s.) Two 5,000-byte
/// prompts, runs of 60 and one run of 5,000, each split into one piece per byte.
#[test]
fn allowed_regex_worst_case_is_bounded() {
    let re = r"a*(?=c)|.";
    let tok = Tokenizer::from_json(&json_with(Value::Null, split_regex(re), Value::Null)).unwrap();
    for text in [format!("{}b", "a".repeat(60)).repeat(82), "a".repeat(5002)] {
        let start = Instant::now();
        let ids = tok.encode(&text, false).unwrap();
        let took = start.elapsed();
        eprintln!("{} bytes through {re}: {took:?}", text.len());
        assert_eq!(ids.len(), text.len());
        assert!(took < Duration::from_secs(10), "took {took:?}");
    }
}

#[test]
fn overlong_prompt_is_refused() {
    let tok = Tokenizer::from_json(&json_with(
        Value::Null,
        json!({"type": "Whitespace"}),
        Value::Null,
    ))
    .unwrap();
    let text = "a".repeat(MAX_ENCODE_BYTES + 1);
    assert_eq!(
        tok.encode(&text, false).unwrap_err().to_string(),
        "cannot tokenize the text: the text is 16777217 bytes long (limit 16777216)"
    );
    // NFKC (11) × Metaspace (8) = 88-fold: 2 MiB could become 176 MiB.
    let meta =
        json!({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true});
    let tok = Tokenizer::from_json(&json_with(json!({"type": "NFKC"}), meta, Value::Null)).unwrap();
    assert_eq!(tok.growth().encode, 88);
    let text = "a ".repeat(1 << 20);
    assert_eq!(
        tok.encode(&text, false).unwrap_err().to_string(),
        format!(
            "cannot tokenize the text: the text is 2097152 bytes long and this tokenizer's \
             normalizers can grow it 88-fold, to 184549376 bytes (limit {MAX_NORMALIZED_BYTES})"
        )
    );
    // Half of it is fine: "a a … a" is 2^19 words, each "▁a" (unknown: [UNK]).
    let ids = tok.encode(&text[..(1 << 20) - 1], false).unwrap();
    assert_eq!(ids.len(), 1 << 19);
    assert!(ids.iter().all(|&id| id == 0));
}

#[test]
fn added_tokens_are_bounded() {
    let with_added = |added: Vec<Value>| {
        let mut doc: Value =
            serde_json::from_str(&json_with(Value::Null, Value::Null, Value::Null)).unwrap();
        doc["added_tokens"] = Value::Array(added);
        doc.to_string()
    };
    let tok = |id: u64, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": true})
    };
    // The vocabulary has 7 entries: added tokens follow from id 7.
    let many: Vec<Value> = (0..70_000)
        .map(|i| tok(7 + i, &format!("<t{i}>")))
        .collect();
    assert_eq!(
        load_err(&with_added(many)),
        format!("{PREFIX}70000 added tokens (limit 65536)")
    );
    let long = "x".repeat(300);
    assert_eq!(
        load_err(&with_added(vec![tok(7, &long)])),
        format!(
            "{PREFIX}added token \"{}…\" is 300 bytes long (limit 256)",
            "x".repeat(40)
        )
    );
    // tokenizers 0.23.2 renumbers added tokens, but a file claiming an id near
    // u32::MAX is malformed.
    assert_eq!(
        load_err(&with_added(vec![tok(4_000_000_000, "<big>")])),
        format!("{PREFIX}added token \"<big>\" has id 4000000000 (limit 4194304)")
    );
    let ok: Vec<Value> = (0..1000).map(|i| tok(7 + i, &format!("<t{i}>"))).collect();
    let t = Tokenizer::from_json(&with_added(ok)).unwrap();
    assert_eq!(t.encode("<t5><t999>", false).unwrap(), [12, 1006]);
}

#[test]
fn components_that_panic_in_tokenizers_are_refused() {
    let strip = json!({"type": "Strip", "content": " ", "start": 0, "stop": 2});
    assert_eq!(
        load_err(&json_with(Value::Null, Value::Null, strip)),
        format!(
            "{PREFIX}decoder Strip: stop > 0 (tokenizers 0.23.2 panics when it exceeds a token)"
        )
    );
    let fixed = json!({"type": "FixedLength", "length": 0});
    assert_eq!(
        load_err(&json_with(Value::Null, fixed, Value::Null)),
        format!("{PREFIX}pre_tokenizer FixedLength: length 0 (tokenizers panics on it)")
    );
    let untyped = json!({"prepend": "x"});
    assert_eq!(
        load_err(&json_with(untyped, Value::Null, Value::Null)),
        format!("{PREFIX}normalizer without a \"type\"")
    );
    // A padding length of 10^12 would be a terabyte: padding is dropped at load.
    let mut doc: Value =
        serde_json::from_str(&json_with(Value::Null, Value::Null, Value::Null)).unwrap();
    doc["padding"] = json!({"strategy": {"Fixed": 1_000_000_000_000u64}, "direction": "Right",
        "pad_to_multiple_of": null, "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"});
    let t = Tokenizer::from_json(&doc.to_string()).unwrap();
    assert_eq!(t.encode("ab", false).unwrap(), [3]);
}

// ---- Precompiled (SentencePiece charsmap) ---------------------------------------

fn base64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |a, (i, &b)| a | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A darts-clone trie with the single key "a" (root node at 256, the "a" node at
/// 512) and the replacement strings `normalized`; `root` moves the root node.
fn charsmap(root: u32, normalized: &str) -> String {
    let mut trie = vec![0u32; 768];
    trie[0] = root << 10;
    let a = 0x61u32;
    let node_a = 256 ^ a;
    trie[node_a as usize] = ((node_a ^ 512) << 10) | (1 << 8) | a;
    trie[512] = 1 << 31; // value 0: the first string
    let mut bytes = ((trie.len() * 4) as u32).to_le_bytes().to_vec();
    for u in trie {
        bytes.extend_from_slice(&u.to_le_bytes());
    }
    bytes.extend_from_slice(normalized.as_bytes());
    base64(&bytes)
}

fn precompiled(map: String) -> Value {
    json!({"type": "Precompiled", "precompiled_charsmap": map})
}

#[test]
fn precompiled_charsmap_is_checked() {
    // a → xyz: 3-fold, and tokenizers agrees.
    let tok = Tokenizer::from_json(&json_with(
        precompiled(charsmap(256, "xyz\0")),
        Value::Null,
        Value::Null,
    ))
    .unwrap();
    assert_eq!(tok.growth().encode, 3);
    assert_eq!(tok.pre_tokenized_len("aab").unwrap(), 7);

    let big = format!("{}\0", "x".repeat(200));
    assert_eq!(
        load_err(&json_with(
            precompiled(charsmap(256, &big)),
            Value::Null,
            Value::Null
        )),
        format!(
            "{PREFIX}normalizer Precompiled: a precompiled_charsmap rule grows its key 200-fold"
        )
    );
    // A root outside the trie: spm_precompiled would index out of bounds.
    assert_eq!(
        load_err(&json_with(
            precompiled(charsmap(4096, "xyz\0")),
            Value::Null,
            Value::Null
        )),
        format!("{PREFIX}normalizer Precompiled: precompiled_charsmap trie indexes outside itself")
    );
}

// ---- the growth constants, measured ---------------------------------------------

/// The per-character growth factors `tokenizer_limits` assumes for the Unicode
/// normalizers hold for every code point (as `tokenizers` implements them).
#[test]
fn unicode_normalizer_factors_hold() {
    use tokenizers::normalizers::{BertNormalizer, Lowercase, Nmt, NFC, NFD, NFKC, NFKD};
    use tokenizers::{NormalizedString, Normalizer};
    let cases: [(&str, Box<dyn Normalizer>, usize); 7] = [
        ("NFC", Box::new(NFC), 3),
        ("NFD", Box::new(NFD), 3),
        ("NFKC", Box::new(NFKC), 11),
        ("NFKD", Box::new(NFKD), 11),
        ("Lowercase", Box::new(Lowercase), 2),
        (
            "Bert",
            Box::new(BertNormalizer::new(true, true, Some(true), true)),
            8,
        ),
        ("Nmt", Box::new(Nmt), 1),
    ];
    for (name, n, factor) in cases {
        let mut worst = (0usize, '\0');
        for c in (0..=0x10ffffu32).filter_map(char::from_u32) {
            let mut s = NormalizedString::from(c.to_string().as_str());
            n.normalize(&mut s).unwrap();
            let growth = s.get().len().div_ceil(c.len_utf8());
            if growth > worst.0 {
                worst = (growth, c);
            }
        }
        eprintln!("{name}: {}-fold at U+{:04X}", worst.0, worst.1 as u32);
        assert!(worst.0 <= factor, "{name}: {worst:?} > {factor}");
    }
}

// ---- decoding ---------------------------------------------------------------------

/// Streaming with a decoder that is not byte-level stays linear: ids outside the
/// vocabulary are skipped, and ids that never complete a character are let out
/// every 32 ids. The pieces still add up to `decode`.
#[test]
fn stream_decoder_window_is_bounded() {
    let tok = Tokenizer::from_json(&json_with(
        Value::Null,
        Value::Null,
        json!({"type": "ByteFallback"}),
    ))
    .unwrap();
    // <0xE2> alone is never a complete character.
    let mut ids = vec![4u32; 20_000];
    ids.extend(std::iter::repeat_n(1_000_000u32, 200_000));
    ids.extend([1, 4, 5, 6]); // "a€"
    let start = Instant::now();
    let mut d = tok.stream_decoder();
    let mut pieces = String::new();
    for &id in &ids {
        pieces.push_str(d.push(id));
    }
    pieces.push_str(d.flush());
    let took = start.elapsed();
    assert!(took < Duration::from_secs(30), "took {took:?}");
    let whole = tok.decode(&ids);
    assert_eq!(whole, format!("{}a€", "\u{FFFD}".repeat(20_000)));
    assert_eq!(pieces, whole);
}

// ---- the real tokenizers still load --------------------------------------------

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

#[test]
fn qwen3_tokenizer_json_loads() {
    let path = shared().join("fixtures/tokenizers/qwen3-tokenizer.json");
    let json = std::fs::read_to_string(&path).unwrap();
    let tok = Tokenizer::from_json(&json).unwrap();
    assert_eq!(
        tok.growth(),
        Growth {
            encode: 6,
            decode: 2
        }
    );
    // fixtures/tokenizers/README.md / llama.cpp anchors.
    assert_eq!(
        tok.encode("The capital of France is", false).unwrap(),
        [785, 6722, 315, 9625, 374]
    );
    let text = "Grüße, 世界! ﷺ x\u{FDFA}";
    let n = tok.pre_tokenized_len(text).unwrap() as u64;
    assert!(n <= tok.growth().encode * text.len() as u64, "{n}");
}

fn models_dir() -> PathBuf {
    std::env::var_os("TAH_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/tah/models")
        })
}

/// SmolLM2's and Qwen2.5's tokenizer.json as the converter synthesises them from the
/// GGUF metadata load through the limits and give llama.cpp's ids (anchors).
#[test]
fn gguf_synthesised_tokenizers_load() {
    let cases: [(&str, &[u32]); 2] = [
        (
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            &[504, 3575, 282, 4649, 314],
        ),
        (
            "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
            &[785, 6722, 315, 9625, 374],
        ),
    ];
    for (file, want) in cases {
        let path = models_dir().join(file);
        if !path.is_file() {
            if std::env::var("TAH_SKIP_REAL_MODELS").as_deref() == Ok("1") {
                eprintln!("skipping: {} absent", path.display());
                continue;
            }
            panic!(
                "{} is absent: run models/fetch.sh (or set TAH_SKIP_REAL_MODELS=1)",
                path.display()
            );
        }
        let f = tah::format::GgufFile::open(&path).unwrap();
        let json = tah_convert::gguf_tokenizer::tokenizer_json_from_gguf(&|k| f.get(k)).unwrap();
        let tok = Tokenizer::from_json(&json).unwrap();
        assert_eq!(
            tok.encode("The capital of France is", false).unwrap(),
            want,
            "{file}"
        );
        assert!(tok.growth().encode <= 4, "{file}: {:?}", tok.growth());
    }
}
