//! `tah eval`, `tah chat --tutor` and `--html` through the command line, on a
//! TaH model that takes text (the fixture plus a byte-level tokenizer: random
//! weights, so the answers are noise — these tests check the plumbing) and on
//! SmolLM2 (a real model; see models/fetch.sh).

mod common;
use common::*;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

fn tah() -> Command {
    bin_command(env!("CARGO_BIN_EXE_tah"))
}

fn problems(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("tiny.jsonl");
    std::fs::write(
        &p,
        concat!(
            r#####"{"question": "Tom has 3 apples and buys 4 more. How many apples?", "answer": "3 + 4 = 7\n#### 7"}"#####,
            "\n",
            r#"{"question": "What is <b>half</b> of 10?", "answer": "\\boxed{5}"}"#,
            "\n",
            r#####"{"question": "A pen costs $2. What do 3 pens cost?", "answer": "#### 6"}"#####,
            "\n"
        ),
    )
    .unwrap();
    p
}

fn run_ok(cmd: &mut Command) -> (String, String) {
    let out = cmd.output().unwrap();
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "stdout: {o}\nstderr: {e}");
    (o, e)
}

#[test]
fn eval_runs_in_every_think_mode() {
    let dir = scratch("eval-modes");
    let data = problems(&dir);
    let model = tah_text_model();
    for mode in ["never", "auto", "always", "budget:0.2"] {
        let log = dir.join(format!("{mode}.jsonl"));
        let html = dir.join(format!("{mode}.html"));
        let (out, _) = run_ok(
            tah()
                .args(["eval", "-m"])
                .arg(&model)
                .arg("--data")
                .arg(&data)
                .args(["--think", mode, "-n", "12", "--json", "--log"])
                .arg(&log)
                .arg("--html")
                .arg(&html),
        );
        let s: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(s["problems"], 3, "{mode}: {s}");
        assert_eq!(s["think"], mode);
        let gen = s["generated_tokens"].as_u64().unwrap();
        assert!(gen > 0 && gen <= 36, "{mode}: {s}");
        let (rate, depth) = (
            s["hard_rate"].as_f64().unwrap(),
            s["avg_depth"].as_f64().unwrap(),
        );
        match mode {
            "never" => assert!(rate == 0.0 && depth == 1.0, "{s}"),
            "always" => assert!(rate == 1.0 && depth == 2.0, "{s}"),
            _ => assert!(
                (1.0..=2.0).contains(&depth) && (depth - 1.0 - rate).abs() < 1e-9,
                "{s}"
            ),
        }
        if mode == "budget:0.2" {
            assert!((s["budget_target"].as_f64().unwrap() - 0.2).abs() < 1e-6);
            assert!(s["budget_rate"].as_f64().is_some());
        } else {
            assert!(s["budget_target"].is_null());
        }
        let ci = s["accuracy_ci95"].as_array().unwrap();
        assert!(ci[0].as_f64().unwrap() <= s["accuracy"].as_f64().unwrap());
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        let expected: Vec<&str> = lines
            .iter()
            .map(|l| l["expected"].as_str().unwrap())
            .collect();
        assert_eq!(expected, ["7", "5", "6"]);
        for l in &lines {
            for k in [
                "question",
                "extracted",
                "correct",
                "output",
                "tokens",
                "hard_rate",
                "avg_depth",
                "tokens_per_depth",
                "time_s",
            ] {
                assert!(l.get(k).is_some(), "{mode}: no {k} in {l}");
            }
        }
        let page = std::fs::read_to_string(&html).unwrap();
        assert!(page.contains("Problem 3 (line 3)"));
        assert!(page.contains("What is &lt;b&gt;half&lt;/b&gt; of 10?"));
        assert!(!page.contains("<b>half"));
        if mode == "always" {
            assert!(page.contains("class=\"d2") && !page.contains("class=\"d1"));
        }
    }
}

#[test]
fn eval_text_report_and_limit() {
    let dir = scratch("eval-text");
    let data = problems(&dir);
    let (out, err) = run_ok(
        tah()
            .args(["eval", "-m"])
            .arg(tah_text_model())
            .arg("--data")
            .arg(&data)
            .args(["--limit", "1", "-n", "4", "--think", "budget:0.06"]),
    );
    assert!(out.contains("accuracy") && out.contains("/ 1)"), "{out}");
    assert!(out.contains("Wilson 95% interval"), "{out}");
    assert!(out.contains("think budget: target 6.00%"), "{out}");
    assert!(err.contains("[1/1]"), "{err}");
}

#[test]
fn eval_needs_a_tokenizer_and_good_data() {
    let dir = scratch("eval-bad");
    let data = problems(&dir);
    let out = tah()
        .args(["eval", "-m"])
        .arg(fixture_tah())
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no tokenizer"), "{err}");

    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"question\": \"q\", \"answer\": \"7\"}\n").unwrap();
    let out = tah()
        .args(["eval", "-m"])
        .arg(tah_text_model())
        .arg("--data")
        .arg(&bad)
        .args(["--format", "gsm8k"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 1") && err.contains("####"), "{err}");
}

#[test]
fn run_html_page_shades_tokens() {
    let dir = scratch("run-html");
    let html = dir.join("run.html");
    let ids: Vec<String> = Reference::load()
        .i64("prefill_input_ids")
        .iter()
        .map(|t| t.to_string())
        .collect();
    run_ok(
        tah()
            .args(["run", "-m"])
            .arg(fixture_tah())
            .args([
                "--prompt-ids",
                &ids.join(","),
                "-n",
                "16",
                "--temp",
                "0",
                "--html",
            ])
            .arg(&html),
    );
    let page = std::fs::read_to_string(&html).unwrap();
    // The reference decode: 8 of 16 tokens hard.
    assert_eq!(page.matches("<span class=\"d2\"").count(), 8, "{page}");
    assert_eq!(page.matches("<span class=\"d1\"").count(), 8);
    assert!(page.contains("hard rate 50.0%"));
    assert!(page.contains("decider p = 0."));
    assert!(page.contains("token ids: ["));
}

/// Feeds `input` to `tah chat ARGS` and returns (stdout, stderr).
fn chat(model: &Path, args: &[&str], input: &str) -> (String, String) {
    let mut child = tah()
        .args(["chat", "-m"])
        .arg(model)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "stdout: {o}\nstderr: {e}");
    (o, e)
}

#[test]
fn chat_tutor_writes_the_conversation_page() {
    let dir = scratch("chat-html");
    let html = dir.join("chat.html");
    let html_s = html.to_str().unwrap();
    let (_, err) = chat(
        &tah_text_model(),
        &[
            "--tutor", "-n", "6", "--temp", "0", "--ctx", "1600", "--html", html_s,
        ],
        "What is 2 + 3?\n/show-thinking\nI think it is 5 & <6>.\n",
    );
    assert!(err.contains("thinking shown"), "{err}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("patient math tutor"),
        "the tutor system prompt"
    );
    assert!(page.contains("What is 2 + 3?"));
    assert!(page.contains("I think it is 5 &amp; &lt;6&gt;."));
    assert_eq!(page.matches(">assistant &middot;").count(), 2, "{page}");
}

#[test]
fn smollm2_eval_and_tutor() {
    let Some(gguf) = real_model("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let dir = scratch("smollm2");
    // A llama.cpp GGUF gets its tokenizer.json rebuilt by the converter.
    let model = dir.join("smollm2.tah");
    convert(&gguf, &model, None);
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/arith-100.jsonl");
    let log = dir.join("log.jsonl");
    let (out, _) = run_ok(
        tah()
            .args(["eval", "-m"])
            .arg(&model)
            .arg("--data")
            .arg(&data)
            .args([
                "--limit", "1", "-n", "24", "--think", "never", "--json", "--log",
            ])
            .arg(&log),
    );
    let s: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(s["problems"], 1);
    assert_eq!(s["hard_rate"], 0.0);
    let l: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&log).unwrap().trim()).unwrap();
    assert_eq!(l["expected"], "44");
    assert!(!l["output"].as_str().unwrap().is_empty());

    let (out, _) = chat(
        &model,
        &["--tutor", "-n", "16", "--temp", "0"],
        "I have 3 apples and get 4 more. Is the answer 7?\n",
    );
    assert!(out.trim().len() > 5, "{out}");
}
