//! The real models (models/fetch.sh) against llama.cpp's own outputs on this kind
//! of machine (shared/anchors): prompt ids, greedy continuations, perplexity.

mod common;
use common::*;
use std::sync::Arc;
use tah::model::Model;
use tah::session::{Session, SessionOptions};
use tah::text::ChatMessage;

const MODELS: [&str; 2] = [
    "SmolLM2-135M-Instruct.Q4_1",
    "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M",
];
const PROMPTS: [(&str, &str); 2] = [
    ("fr", "The capital of France is"),
    (
        "qa",
        "Question: Tom has 3 apples and buys 5 more. How many apples does he have? Answer:",
    ),
];

fn model(name: &str) -> Option<Arc<Model>> {
    Some(load(&real_tah(&format!("{name}.gguf"), None)?))
}

/// Prompt ids of every anchored run: raw text, and the chat template in llama.cpp's
/// "jinja" mode (the model's template, with its default system prompt).
#[test]
fn prompt_ids_equal_llama_cpp() {
    for name in MODELS {
        let Some(m) = model(name) else { return };
        let tok = m.tokenizer.as_ref().unwrap();
        let tmpl = m.chat_template.as_ref().unwrap();
        for (tag, text) in PROMPTS {
            let raw = anchor(&format!("greedy-{name}-raw-{tag}.json"));
            assert_eq!(
                tok.encode(text, true).unwrap(),
                ids(&raw["prompt_ids"]),
                "{name} raw {tag}"
            );
            let jinja = anchor(&format!("greedy-{name}-jinja-{tag}.json"));
            let rendered = tmpl
                .render(&[ChatMessage::new("user", text)], true, None)
                .unwrap();
            assert_eq!(
                rendered,
                jinja["tokenized_text"].as_str().unwrap(),
                "{name} jinja {tag} text"
            );
            assert_eq!(
                tok.encode(&rendered, true).unwrap(),
                ids(&jinja["prompt_ids"]),
                "{name} jinja {tag}"
            );
            let legacy = anchor(&format!("greedy-{name}-legacy-{tag}.json"));
            let legacy_text = legacy["tokenized_text"].as_str().unwrap();
            assert_eq!(
                tok.encode(legacy_text, true).unwrap(),
                ids(&legacy["prompt_ids"]),
                "{name} legacy {tag}"
            );
        }
    }
}

/// Our greedy tokens for one anchored run and how many lead ones agree.
fn greedy_agreement(m: &Arc<Model>, a: &serde_json::Value, n: usize) -> (Vec<u32>, usize) {
    let want = ids(&a["gen_ids"]);
    let n = want.len().min(n);
    let opts = SessionOptions {
        ctx: 256,
        ..Default::default()
    };
    let mut s = Session::new(Arc::clone(m), &opts).unwrap();
    s.feed(&ids(&a["prompt_ids"]), None).unwrap();
    let mut got = Vec::new();
    let mut next = tah::sample::argmax(s.logits());
    for _ in 0..n {
        got.push(next);
        next = tah::sample::argmax(s.decode(next).unwrap());
    }
    let agree = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
    (got, agree)
}

/// The first 10 greedy tokens of the raw prompts equal llama.cpp's AVX-512 path
/// (its own two code paths diverge on SmolLM2 after 14–19 tokens). The
/// chat-formatted runs are reported, not asserted: they hit near-ties (top-2
/// margins of 0.03–0.13) where summation order decides.
#[test]
fn greedy_continuations_equal_llama_cpp() {
    for name in MODELS {
        let Some(m) = model(name) else { return };
        for mode in ["raw", "jinja", "legacy"] {
            for (tag, _) in PROMPTS {
                let a = anchor(&format!("greedy-noamx-{name}-{mode}-{tag}.json"));
                let (got, agree) = greedy_agreement(&m, &a, 32);
                let want = ids(&a["gen_ids"]);
                eprintln!(
                    "{name} {mode} {tag}: {agree} of {} greedy tokens agree with llama.cpp",
                    want.len()
                );
                if mode == "raw" {
                    let n = want.len().min(10);
                    assert_eq!(
                        got[..n],
                        want[..n],
                        "{name} {mode} {tag}: ours vs llama.cpp"
                    );
                }
            }
        }
    }
}

/// Perplexity on gpl-3.txt at ctx 512 within 1% of llama.cpp's figure
/// (anchors/README.md: 18.3645 and 5.3103, 14 chunks each).
///
/// Not yet run to completion (the machine was saturated all session): ignored in
/// the default run until it has been seen to pass; `cargo test --release --test
/// real_models -- --ignored` runs it.
#[test]
#[ignore]
fn perplexity_within_one_percent_of_llama_cpp() {
    for (name, want) in [(MODELS[0], 18.3645), (MODELS[1], 5.3103)] {
        let Some(m) = model(name) else { return };
        let text = std::fs::read_to_string(shared().join("anchors/gpl-3.txt")).unwrap();
        let tok = m.tokenizer.as_ref().unwrap();
        let tokens = tok.encode(&text, true).unwrap();
        let mut s = Session::new(
            Arc::clone(&m),
            &SessionOptions {
                ctx: 512,
                batch: 128,
                ..Default::default()
            },
        )
        .unwrap();
        let p = tah::perplexity::perplexity(&mut s, &tokens, 512, None, &mut |_, _, _| {}).unwrap();
        let rel = (p.ppl - want).abs() / want;
        eprintln!(
            "{name}: ppl {:.4} (llama.cpp {want}), {} chunks, rel. diff {:.3}%",
            p.ppl,
            p.chunks,
            100.0 * rel
        );
        assert_eq!(p.chunks, 14);
        assert!(rel < 0.01, "{name}: ppl {} vs llama.cpp {want}", p.ppl);
    }
}
