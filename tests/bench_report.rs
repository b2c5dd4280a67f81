//! `tah bench --report`: one JSON object with this machine, the file and the
//! figures, as a user posts it.

mod common;
use common::*;

fn report(env: &[(&str, &str)]) -> serde_json::Value {
    let mut cmd = bin_command(env!("CARGO_BIN_EXE_tah"));
    cmd.args(["bench", "-m"]).arg(fixture_tah()).args([
        "-p",
        "8",
        "-n",
        "4",
        "-r",
        "1",
        "--threads-list",
        "1",
        "--report",
    ]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[test]
fn report_names_machine_file_and_figures() {
    let r = report(&[]);
    let m = &r["machine"];
    assert_eq!(m["arch"], std::env::consts::ARCH);
    assert!(m["cores"].as_u64().unwrap() >= 1);
    let available: Vec<&str> = m["kernels_available"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(available[0], "generic");
    assert!(available.contains(&m["kernels"].as_str().unwrap()));
    if cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        // the CPU's name as the kernel reports it
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
        let name = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim())
            .unwrap();
        assert_eq!(m["cpu"], name);
        let has = |f: &str| m["features"].as_array().unwrap().iter().any(|x| x == f);
        assert_eq!(has("avx2"), cpuinfo.contains(" avx2"));
    }
    // the fixture as tah-convert writes it: a Qwen3 TaH file of 130 tensors
    let model = &r["model"];
    assert_eq!(model["architecture"], "qwen3");
    assert_eq!(model["tah"], true);
    let tensors: u64 = model["types"]
        .as_object()
        .unwrap()
        .values()
        .map(|t| t["tensors"].as_u64().unwrap())
        .sum();
    assert_eq!(tensors, 130);
    assert_eq!(r["kv_type"], "f16");
    let results = r["results"].as_array().unwrap();
    let tests: Vec<&str> = results
        .iter()
        .map(|x| x["test"].as_str().unwrap())
        .collect();
    assert_eq!(tests, ["pp8", "tg4"]);
    for x in results {
        assert_eq!(x["threads"], 1);
        assert!(x["tokens_per_s"]["median"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn report_follows_the_kernel_override() {
    let r = report(&[("TAH_KERNELS", "generic")]);
    assert_eq!(r["machine"]["kernels"], "generic");
}
