//! Arbitrary UTF-8 through the text side, with Qwen3's real tokenizer and chat
//! template (loaded once from the project's shared fixtures):
//! - encode, decode, and the streaming decoder, whose pieces must add up to
//!   `decode` (its documented contract); also decode of arbitrary ids;
//! - the Qwen3 template rendering messages cut from the input;
//! - the input as a template of its own: it must render or fail with an
//!   error, never panic, hang or exhaust memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tah::text::{ChatMessage, ChatTemplate, Tokenizer};

fn shared() -> String {
    std::env::var("TAH_SHARED")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared").into())
}

fn tokenizer() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        let path = format!("{}/fixtures/tokenizers/qwen3-tokenizer.json", shared());
        let json = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        Tokenizer::from_json(&json).expect("Qwen3 tokenizer loads")
    })
}

fn qwen3_template() -> &'static ChatTemplate {
    static T: OnceLock<ChatTemplate> = OnceLock::new();
    T.get_or_init(|| {
        let path = format!(
            "{}/fixtures/tokenizers/qwen3-tokenizer_config.json",
            shared()
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let v: serde_json::Value = serde_json::from_str(&text).expect("tokenizer_config.json");
        let src = v["chat_template"].as_str().expect("chat_template");
        ChatTemplate::new(src, None, Some("<|im_end|>".into())).expect("Qwen3 template parses")
    })
}

const ROLES: [&str; 5] = ["system", "user", "assistant", "tool", "narrator"];

/// Messages cut from the input at NUL characters; the role cycles with the
/// segment's index and length.
fn messages(s: &str) -> Vec<ChatMessage> {
    s.split('\0')
        .enumerate()
        .map(|(i, c)| ChatMessage::new(ROLES[(i + c.len()) % ROLES.len()], c))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let tok = tokenizer();

    // Tokenizer: encode, decode, stream-decode.
    if let Ok(ids) = tok.encode(s, true) {
        check_stream(tok, &ids);
    }
    // Arbitrary ids, in and out of the vocabulary.
    let limit = tok.vocab_size() as u32 + 16;
    let ids: Vec<u32> = data
        .chunks(3)
        .map(|c| c.iter().fold(0u32, |a, &b| a << 8 | b as u32) % limit)
        .collect();
    check_stream(tok, &ids);

    // The real template with messages cut from the input.
    let msgs = messages(s);
    let qwen = qwen3_template();
    for (gen, think) in [(true, None), (false, Some(false)), (true, Some(true))] {
        let _ = qwen.render(&msgs, gen, think);
    }

    // The input as a template.
    if let Ok(t) = ChatTemplate::new(s, Some("<s>".into()), Some("</s>".into())) {
        let _ = t.render(&[ChatMessage::new("user", "hi")], true, None);
        let _ = t.render(&msgs, false, Some(true));
    }
});

fn check_stream(tok: &Tokenizer, ids: &[u32]) {
    let whole = tok.decode(ids);
    let mut d = tok.stream_decoder();
    let mut pieces = String::new();
    for &id in ids {
        pieces.push_str(d.push(id));
    }
    pieces.push_str(d.flush());
    assert_eq!(pieces, whole, "stream pieces != decode for ids {ids:?}");
}
