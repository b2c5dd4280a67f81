//! The fixture's reference outputs reproduced through the command line:
//! `tah run --prompt-ids … --json --logits-out`.

mod common;
use common::*;
use std::process::Command;

fn tah() -> Command {
    bin_command(env!("CARGO_BIN_EXE_tah"))
}

#[test]
fn run_json_and_logits_out_match_reference() {
    let r = Reference::load();
    let ids: Vec<String> = r
        .i64("prefill_input_ids")
        .iter()
        .map(|t| t.to_string())
        .collect();
    let out_path = scratch("cli").join("logits.safetensors");
    let out = tah()
        .args(["run", "-m"])
        .arg(fixture_tah())
        .args([
            "--prompt-ids",
            &ids.join(","),
            "-n",
            "16",
            "--temp",
            "0",
            "--kv-type",
            "f32",
            "--json",
            "--logits-out",
        ])
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = |k: &str| {
        j[k].as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(list("prompt_depths"), r.i64("prefill_iter_count"));
    assert_eq!(list("tokens"), r.i64("decode_token_ids"));
    assert_eq!(list("depths"), r.i64("decode_iter_count"));
    let stats = &j["stats"];
    assert_eq!(stats["generated_tokens"], 16);
    assert_eq!(stats["hard_tokens"], 8);
    assert_eq!(stats["prompt_hard_tokens"], 10);

    let bytes = std::fs::read(&out_path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let get = |name: &str| -> Vec<f32> {
        let t = st.tensor(name).unwrap();
        t.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let (_, want_p) = r.f32("prefill_logits");
    let (_, want_d) = r.f32("decode_logits");
    assert_eq!(st.tensor("prefill_logits").unwrap().shape(), &[24, 512]);
    assert_eq!(st.tensor("decode_logits").unwrap().shape(), &[16, 512]);
    assert!(max_abs_diff(&get("prefill_logits"), &want_p) < 5e-4);
    assert!(max_abs_diff(&get("decode_logits"), &want_d) < 5e-4);
}

#[test]
fn bad_requests_are_one_line_errors() {
    let model = fixture_tah();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--threshold", "1.5"], "outside [0, 1]"),
        (vec!["--max-depth", "0"], "at least 1"),
        (vec!["--think", "sometimes"], "unknown think mode"),
        (vec!["--ctx", "8"], "the context holds 8"),
    ];
    for (extra, want) in cases {
        let out = tah()
            .args(["run", "-m"])
            .arg(&model)
            .args(["--prompt-ids", "1,2,3,4,5,6,7,8,9,10"])
            .args(&extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?} succeeded");
        assert!(err.contains(want), "{extra:?}: {err}");
        assert!(!err.contains("panicked"), "{extra:?}: {err}");
    }
    for path in ["/nonexistent/model.tah", "/tmp"] {
        let out = tah()
            .args(["run", "-m", path, "--prompt-ids", "1"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.starts_with("tah: error: ") && err.lines().count() == 1,
            "{path}: {err}"
        );
    }
}
