//! The sampler chain through `generate` on the fixture models: option
//! validation, logit bias, penalties (checked against llama.cpp's formula on
//! the logged logits) and stop strings (held back across tokens, never
//! emitted).

mod common;
use common::*;
use tah::generate::{generate, GenerateOptions, Generation, LogitsLog, StopReason};
use tah::sample::SamplingParams;
use tah::session::{Session, SessionError, SessionOptions};
use tah::text::Tokenizer;

fn tah() -> std::process::Command {
    bin_command(env!("CARGO_BIN_EXE_tah"))
}

fn session(path: &std::path::Path) -> Session {
    let opts = SessionOptions {
        ctx: 256,
        ..Default::default()
    };
    Session::new(load(path), &opts).unwrap()
}

fn greedy(max_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        sampling: SamplingParams::greedy(),
        stop_at_eog: false,
        ..Default::default()
    }
}

const PROMPT: [u32; 6] = [1, 5, 9, 2, 7, 3];

/// Runs `opts` on the fixture (no tokenizer) from `PROMPT`.
fn run_ids(
    opts: &GenerateOptions,
    log: Option<&mut LogitsLog>,
) -> Result<Generation, SessionError> {
    let mut s = session(&fixture_tah());
    generate(&mut s, None, &PROMPT, opts, log, &mut |_| true)
}

fn bad_option(r: Result<Generation, SessionError>) -> String {
    match r {
        Err(SessionError::BadOption(m)) => m,
        other => panic!("expected BadOption, got {:?}", other.map(|g| g.tokens)),
    }
}

#[test]
fn bad_options_are_refused_before_generating() {
    let path = fixture_tah();
    let vocab = load(&path).cfg.vocab;
    let with = |f: &dyn Fn(&mut GenerateOptions)| {
        let mut o = greedy(4);
        f(&mut o);
        let mut s = session(&path);
        let r = generate(&mut s, None, &PROMPT, &o, None, &mut |_| true);
        // Nothing was fed.
        assert_eq!(s.n_past(), 0);
        bad_option(r)
    };
    assert_eq!(
        with(&|o| o.sampling.temperature = f32::NAN),
        "temperature NaN must be finite and ≥ 0"
    );
    assert_eq!(
        with(&|o| o.sampling.top_p = f32::NAN),
        "top_p NaN must be in (0, 1]"
    );
    assert_eq!(
        with(&|o| o.sampling.top_p = 0.0),
        "top_p 0 must be in (0, 1]"
    );
    assert_eq!(
        with(&|o| o.sampling.min_p = 2.0),
        "min_p 2 must be in [0, 1]"
    );
    assert_eq!(
        with(&|o| o.sampling.repeat_penalty = -1.0),
        "repeat_penalty -1 must be finite and > 0"
    );
    assert_eq!(
        with(&|o| o.logit_bias = vec![(vocab as u32, -100.0)]),
        format!("logit bias for token {vocab}: outside the vocabulary (size {vocab})")
    );
    assert_eq!(
        with(&|o| o.stop = vec!["x".to_string(); 17]),
        "17 stop strings: at most 16"
    );
    assert_eq!(
        with(&|o| o.stop = vec!["x".repeat(257)]),
        "a stop string of 257 bytes: at most 256"
    );
    assert_eq!(
        with(&|o| o.stop = vec![String::new()]),
        "an empty stop string"
    );
    // Well-formed stop strings, but no tokenizer to make text with.
    assert_eq!(
        with(&|o| o.stop = vec!["ab".into()]),
        "stop strings need the model's tokenizer"
    );
}

#[test]
fn logit_bias_bans_and_forces_in_greedy_mode() {
    let plain = run_ids(&greedy(12), None).unwrap();
    // +100 on a token the plain run never picks: every token is that one.
    let forced = (0u32..).find(|t| !plain.tokens.contains(t)).unwrap();
    let g = run_ids(
        &GenerateOptions {
            logit_bias: vec![(forced, 100.0)],
            ..greedy(12)
        },
        None,
    )
    .unwrap();
    assert_eq!(g.tokens, vec![forced; 12]);
    // -100 on every token the plain run picked: none of them appears.
    let banned: Vec<(u32, f32)> = plain.tokens.iter().map(|&t| (t, -100.0)).collect();
    let g = run_ids(
        &GenerateOptions {
            logit_bias: banned,
            ..greedy(12)
        },
        None,
    )
    .unwrap();
    assert_eq!(g.tokens.len(), 12);
    for t in &g.tokens {
        assert!(!plain.tokens.contains(t), "banned token {t} chosen");
    }
}

/// llama.cpp's `llama_sampler_penalties` on one row, written out directly:
/// counts over the window, then `/ or ·` repeat, `− count·freq − presence`.
fn llama_penalised_argmax(row: &[f32], window: &[u32], rep: f32, pres: f32, freq: f32) -> u32 {
    let mut row = row.to_vec();
    let mut counts = std::collections::HashMap::new();
    for &t in window {
        *counts.entry(t).or_insert(0u32) += 1;
    }
    for (&t, &c) in &counts {
        let l = &mut row[t as usize];
        *l = if *l <= 0.0 { *l * rep } else { *l / rep };
        *l -= c as f32 * freq + (c > 0) as u32 as f32 * pres;
    }
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

#[test]
fn penalties_match_llama_cpp_on_the_logged_logits() {
    // Negative presence and frequency penalties pull the argmax back into the
    // window (this random-weight model rarely repeats on its own), so they
    // change the run.
    let (rep, pres, freq, last_n) = (0.8f32, -1.5f32, -0.5f32, 8usize);
    let opts = GenerateOptions {
        sampling: SamplingParams {
            repeat_penalty: rep,
            presence_penalty: pres,
            frequency_penalty: freq,
            repeat_last_n: last_n,
            ..SamplingParams::greedy()
        },
        ..greedy(20)
    };
    let mut log = LogitsLog::default();
    let g = run_ids(&opts, Some(&mut log)).unwrap();
    assert_eq!(g.tokens.len(), 20);
    let vocab = load(&fixture_tah()).cfg.vocab;
    let mut history: Vec<u32> = PROMPT.to_vec();
    for (j, &tok) in g.tokens.iter().enumerate() {
        // Token j comes from the prompt's last row, then from decode row j-1.
        let row = if j == 0 {
            &log.prefill[(PROMPT.len() - 1) * vocab..PROMPT.len() * vocab]
        } else {
            &log.decode[(j - 1) * vocab..j * vocab]
        };
        let window = &history[history.len().saturating_sub(last_n)..];
        assert_eq!(
            tok,
            llama_penalised_argmax(row, window, rep, pres, freq),
            "token {j}"
        );
        history.push(tok);
    }
    // The penalties changed the run (else this test would not test them).
    let plain = run_ids(&greedy(20), None).unwrap();
    assert_ne!(plain.tokens, g.tokens);
}

/// Greedy generation on the text model; returns the generation and the pieces
/// the callback saw.
fn run_text(tok: &Tokenizer, opts: &GenerateOptions) -> (Generation, Vec<String>) {
    let mut s = session(&tah_text_model());
    let prompt = tok.encode("The capital of France is", true).unwrap();
    let mut pieces = Vec::new();
    let g = generate(&mut s, Some(tok), &prompt, opts, None, &mut |e| {
        pieces.push(e.piece.to_string());
        true
    })
    .unwrap();
    (g, pieces)
}

/// A stop string spanning tokens i and i+1 (i > 0): the first pair of
/// non-empty consecutive pieces whose concatenation first occurs exactly where
/// the pair starts. Returns (i, the stop string, its byte offset).
fn pick_stop(pieces: &[String], text: &str) -> (usize, String, usize) {
    let mut offset = 0;
    for i in 0..pieces.len() - 1 {
        let stop = format!("{}{}", pieces[i], pieces[i + 1]);
        if !pieces[i].is_empty()
            && !pieces[i + 1].is_empty()
            && i > 0
            && text.find(&stop) == Some(offset)
        {
            return (i, stop, offset);
        }
        offset += pieces[i].len();
    }
    panic!("no pair of tokens to stop at in {text:?}");
}

#[test]
fn stop_string_spanning_two_tokens_ends_generation_unseen() {
    let model = load(&tah_text_model());
    let tok = model.tokenizer.as_ref().unwrap();
    let (first, pieces) = run_text(tok, &greedy(40));
    assert_eq!(pieces.len(), 40);
    assert_eq!(pieces.concat(), first.text);
    let (i, stop, offset) = pick_stop(&pieces, &first.text);
    let before = &first.text[..offset];

    let (g, seen) = run_text(
        tok,
        &GenerateOptions {
            stop: vec!["\u{7}never\u{7}".into(), stop.clone()],
            ..greedy(40)
        },
    );
    assert_eq!(g.stop, StopReason::StopString);
    assert_eq!(g.text, before);
    assert_eq!(seen.concat(), before);
    // It stopped at the token completing the stop string.
    assert_eq!(g.tokens, &first.tokens[..i + 2]);
    // Everything before the stop string was out by the token starting it; the
    // token completing it released nothing.
    assert_eq!(seen[..=i].concat(), before);
    assert_eq!(seen[i + 1], "");

    // A stop string whose start appears but which never completes: everything
    // is released, the last held text with the last token.
    let start = &pieces[i];
    let never = format!("{start}\u{7}");
    assert!(!first.text.contains(&never));
    let (g, seen) = run_text(
        tok,
        &GenerateOptions {
            stop: vec![never],
            ..greedy(40)
        },
    );
    assert_eq!(g.stop, StopReason::MaxTokens);
    assert_eq!(g.text, first.text);
    assert_eq!(seen.concat(), first.text);
}

#[test]
fn repeat_penalty_breaks_smollm2_paris_loop() {
    let Some(path) = real_tah("SmolLM2-135M-Instruct.Q4_1.gguf", None) else {
        return;
    };
    let model = load(&path);
    let Some(tok) = model.tokenizer.as_ref() else {
        eprintln!("skipping: no tokenizer after conversion");
        return;
    };
    let prompt = tok.encode("The capital of France is", true).unwrap();
    let run = |repeat_penalty: f32| {
        let mut s = Session::new(
            std::sync::Arc::clone(&model),
            &SessionOptions {
                ctx: 128,
                ..Default::default()
            },
        )
        .unwrap();
        let opts = GenerateOptions {
            sampling: SamplingParams {
                repeat_penalty,
                ..SamplingParams::greedy()
            },
            ..greedy(80)
        };
        generate(&mut s, Some(tok), &prompt, &opts, None, &mut |_| true)
            .unwrap()
            .text
    };
    let plain = run(1.0);
    // The known loop (greedy, 80 tokens): " Paris." then "The United States
    // has a population of approximately 311 million people." over and over.
    let lines: Vec<&str> = plain.lines().filter(|l| !l.trim().is_empty()).collect();
    let sentence = lines
        .iter()
        .find(|l| l.ends_with('.') && lines.iter().filter(|m| m == l).count() >= 3)
        .unwrap_or_else(|| panic!("no loop in {plain:?}"))
        .to_string();
    let penalised = run(1.3);
    assert!(
        penalised.matches(sentence.as_str()).count() <= 1,
        "{sentence:?} recurs in {penalised:?}"
    );
}

/// `tah run` with `args` after `-m MODEL`: (success, stdout, stderr).
fn cli(model: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = tah()
        .args(["run", "-m"])
        .arg(model)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn cli_flags_reach_the_sampler() {
    let m = fixture_tah();
    let base = ["--prompt-ids", "1,5,9,2,7,3", "-n", "6", "--json"];
    let tokens = |extra: &[&str]| {
        let (ok, out, err) = cli(&m, &[&base[..], &["--temp", "0"], extra].concat());
        assert!(ok, "{err}");
        let j: serde_json::Value = serde_json::from_str(&out).unwrap();
        ids(&j["tokens"])
    };
    // Repeatable and comma-separated; +100 forces token 7.
    assert_eq!(
        tokens(&["--logit-bias", "9=-100,7=100", "--logit-bias", "8=5"]),
        vec![7; 6]
    );
    // The penalties change the greedy run exactly as the library does.
    let lib = run_ids(
        &GenerateOptions {
            sampling: SamplingParams {
                repeat_penalty: 0.8,
                presence_penalty: -1.5,
                frequency_penalty: -0.5,
                repeat_last_n: 8,
                ..SamplingParams::greedy()
            },
            ..greedy(6)
        },
        None,
    )
    .unwrap();
    assert_eq!(
        tokens(&[
            "--kv-type",
            "f16",
            "--ctx",
            "256",
            "--repeat-penalty",
            "0.8",
            "--presence-penalty",
            "-1.5",
            "--frequency-penalty",
            "-0.5",
            "--repeat-last-n",
            "8"
        ]),
        lib.tokens
    );
    // Bad values: a clear error, nothing generated.
    for (extra, want) in [
        (
            &["--temp", "nan"][..],
            "temperature NaN must be finite and ≥ 0",
        ),
        (&["--min-p", "2"], "min_p 2 must be in [0, 1]"),
        (&["--top-p", "0"], "top_p 0 must be in (0, 1]"),
        (&["--logit-bias", "7"], "'7': expected ID=BIAS"),
        (
            &["--logit-bias", "100000=1"],
            "logit bias for token 100000: outside the vocabulary",
        ),
    ] {
        let (ok, out, err) = cli(&m, &[&base[..], extra].concat());
        assert!(!ok && out.is_empty(), "{extra:?}: {out}");
        assert!(err.contains(want), "{extra:?}: {err}");
    }
}

#[test]
fn cli_stop_string() {
    let m = tah_text_model();
    let model = load(&m);
    let tok = model.tokenizer.as_ref().unwrap();
    let (first, pieces) = run_text(tok, &greedy(40));
    let (_, stop, offset) = pick_stop(&pieces, &first.text);
    let before = &first.text[..offset];
    let args = [
        "-p",
        "The capital of France is",
        "-n",
        "40",
        "--temp",
        "0",
        "--ignore-eos",
        "--ctx",
        "256",
        "--stop",
        "\u{7}never",
        "--stop",
        &stop,
    ];
    // Streamed: the text before the stop string, then a newline.
    let (ok, out, err) = cli(&m, &args);
    assert!(ok, "{err}");
    assert_eq!(out, format!("{before}\n"));
    assert!(err.contains("stop: StopString"), "{err}");
    // JSON: the same text, stop "stop_string".
    let (ok, out, err) = cli(&m, &[&args[..], &["--json"]].concat());
    assert!(ok, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["text"], before);
    assert_eq!(j["stop"], "stop_string");
}

/// `tah chat` with `args`, one user line: (stdout, stderr).
fn chat(args: &[&str]) -> (String, String) {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = tah()
        .args(["chat", "-m"])
        .arg(tah_text_model())
        .args(["-n", "30", "--temp", "0", "--ctx", "256", "--no-think"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"The capital of France is\n").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{err}");
    (String::from_utf8(out.stdout).unwrap(), err)
}

#[test]
fn chat_stop_string() {
    let (answer, _) = chat(&[]);
    let answer = answer.strip_suffix('\n').unwrap();
    // Two characters from the middle of the answer, at their first occurrence.
    let chars: Vec<(usize, char)> = answer.char_indices().collect();
    let (at, stop) = (chars.len() / 2..chars.len() - 1)
        .map(|k| (chars[k].0, format!("{}{}", chars[k].1, chars[k + 1].1)))
        .find(|(at, s)| answer.find(s.as_str()) == Some(*at))
        .unwrap_or_else(|| panic!("no stop string in {answer:?}"));
    let (out, err) = chat(&["--stop", &stop, "--stats"]);
    assert_eq!(out, format!("{}\n", &answer[..at]));
    assert!(err.contains("stop: StopString"), "{err}");
}
