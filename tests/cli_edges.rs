//! The command line at its edges: out-of-range numbers are clear errors (exit
//! code 1 and a message, never a panic or an abort), outputs never replace a
//! device, FIFO or link and keep a replaced file's permissions, a failed write
//! to stdout fails the command, and `tah chat` survives a line that is not
//! UTF-8.

#![cfg(unix)]

mod common;
use common::*;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn tah() -> Command {
    bin_command(env!("CARGO_BIN_EXE_tah"))
}

fn run_fixture(extra: &[&str]) -> Output {
    tah()
        .args(["run", "-m"])
        .arg(fixture_tah())
        .args(["--prompt-ids", "1,2,3", "-n", "2", "--temp", "0"])
        .args(extra)
        .output()
        .unwrap()
}

/// Exit code 1 (the CLI's error exit, not a panic's 101 or a signal) and an
/// error message holding `want`.
fn assert_clean_error(out: &Output, want: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("tah: error:") && err.contains(want),
        "wanted an error about '{want}', got: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn out_of_range_numbers_are_clear_errors() {
    let cases: &[(&[&str], &str)] = &[
        (&["--ctx", "18446744073709551615"], "context length"),
        (&["--ctx", "1099511627776"], "context length"),
        (&["--batch", "4611686018427387904"], "batch size"),
        (&["--batch", "1000000000"], "batch size"),
        (&["--threads", "5000"], "threads"),
        (&["--threshold", "NaN"], "threshold"),
        (&["--max-depth", "99"], "depth"),
    ];
    for (args, want) in cases {
        let out = run_fixture(args);
        assert_clean_error(&out, want);
    }
}

#[test]
fn bench_numbers_are_clear_errors() {
    let cases: &[(&[&str], &str)] = &[
        (&["-r", "4611686018427387904"], "-r must be"),
        (&["-r", "0"], "-r must be"),
        (&["-p", "4611686018427387904"], "-p"),
        (&["-n", "4611686018427387904"], "-n"),
        (&["--threads-list", "1,5000"], "threads"),
    ];
    for (args, want) in cases {
        let out = tah()
            .args(["bench", "-m"])
            .arg(fixture_tah())
            .args(*args)
            .output()
            .unwrap();
        assert_clean_error(&out, want);
    }
}

#[test]
fn perplexity_refuses_a_context_that_scores_nothing() {
    let dir = scratch("edges-ppl");
    let text = dir.join("text.txt");
    std::fs::write(
        &text,
        "one two three four five six seven eight nine ten ".repeat(20),
    )
    .unwrap();
    let out = tah()
        .args(["perplexity", "-m"])
        .arg(tah_text_model())
        .arg("-f")
        .arg(&text)
        .args(["--ctx", "2"])
        .output()
        .unwrap();
    assert_clean_error(&out, "scores no prediction");
}

/// `--logits-out` into a character device made here: it is written through and
/// is still the same device afterwards (renaming over it, as root, would have
/// replaced it with a regular file).
#[test]
fn a_device_output_is_written_through_not_replaced() {
    let dir = scratch("edges-dev");
    let dev = dir.join("null");
    // The same device as /dev/null (1, 3); needs root, as CI runs.
    let made = Command::new("mknod")
        .arg(&dev)
        .args(["c", "1", "3"])
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        eprintln!("skipping: mknod needs root");
        return;
    }
    let before = std::fs::symlink_metadata(&dev).unwrap();
    let out = run_fixture(&["--logits-out", dev.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = std::fs::symlink_metadata(&dev).unwrap();
    assert!(
        after.file_type().is_char_device(),
        "the device was replaced"
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(after.rdev(), before.rdev());
    assert_eq!(after.ino(), before.ino());
    // No temporary left beside it.
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
}

#[test]
fn a_fifo_output_is_written_through() {
    let dir = scratch("edges-fifo");
    let fifo = dir.join("pipe");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    let out = run_fixture(&["--logits-out", fifo.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = reader.join().unwrap();
    // A safetensors file: an 8-byte header length, then a JSON header.
    assert!(bytes.len() > 8 && bytes[8] == b'{', "{} bytes", bytes.len());
    let meta = std::fs::symlink_metadata(&fifo).unwrap();
    assert!(meta.file_type().is_fifo(), "the FIFO was replaced");
}

#[test]
fn a_link_output_writes_its_target_and_stays_a_link() {
    let dir = scratch("edges-link");
    let target = dir.join("target.safetensors");
    std::fs::write(&target, b"old").unwrap();
    let link = dir.join("link.safetensors");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let out = run_fixture(&["--logits-out", link.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let bytes = std::fs::read(&target).unwrap();
    assert!(bytes.len() > 8 && bytes[8] == b'{');
}

#[test]
fn a_replaced_file_keeps_its_permissions() {
    let dir = scratch("edges-perm");
    let path = dir.join("logits.safetensors");
    std::fs::write(&path, b"old").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = run_fixture(&["--logits-out", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    assert!(std::fs::read(&path).unwrap().len() > 8);
}

#[test]
fn an_output_error_names_the_file() {
    let dir = scratch("edges-dir");
    let out = run_fixture(&["--logits-out", dir.to_str().unwrap()]);
    assert_clean_error(&out, &dir.display().to_string());
    let missing = dir.join("no/such/dir/logits.safetensors");
    let out = run_fixture(&["--logits-out", missing.to_str().unwrap()]);
    assert_clean_error(&out, "no/such/dir");
}

#[test]
fn a_full_stdout_fails_the_command() {
    if !Path::new("/dev/full").exists() {
        eprintln!("skipping: no /dev/full");
        return;
    }
    for json in [false, true] {
        let mut c = tah();
        c.args(["run", "-m"]).arg(fixture_tah()).args([
            "--prompt-ids",
            "1,2,3",
            "-n",
            "4",
            "--temp",
            "0",
        ]);
        if json {
            c.arg("--json");
        }
        let out = c
            .stdout(std::fs::File::create("/dev/full").unwrap())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_clean_error(&out, "No space left on device");
    }
    let out = tah()
        .arg("info")
        .arg(fixture_tah())
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_clean_error(&out, "No space left on device");
}

#[test]
fn chat_survives_a_line_that_is_not_utf8() {
    use std::io::Write;
    let mut child = tah()
        .args(["chat", "-m"])
        .arg(tah_text_model())
        .args(["-n", "3", "--temp", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"caf\xe9 au lait\nhello\n/exit\n").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("not valid UTF-8"), "{err}");
    // The second line was answered: three tokens of the byte-level model.
    assert!(!out.stdout.is_empty(), "{err}");
}

/// A write in progress when SIGINT or SIGTERM arrives leaves no temporary file:
/// a child process (this test binary, re-run) opens an output, says so and
/// waits; the signal ends it, and its directory is empty.
#[test]
fn a_signal_removes_the_temporary_of_a_write_in_progress() {
    if let Ok(dir) = std::env::var("TAH_EDGES_CHILD_DIR") {
        tah::app::output::remove_temporaries_on_signals();
        let mut out =
            tah::app::output::OutputFile::create(&Path::new(&dir).join("out.bin")).unwrap();
        use std::io::Write;
        out.write_all(&[7u8; 1 << 20]).unwrap();
        out.flush().unwrap();
        println!("ready");
        std::thread::sleep(std::time::Duration::from_secs(60));
        panic!("not stopped by the signal");
    }
    for (sig, name) in [("-INT", "SIGINT"), ("-TERM", "SIGTERM")] {
        let dir = scratch(&format!("edges-signal{sig}"));
        // Through the test runner (qemu-user in the cross-built suite).
        let mut child = bin_command(std::env::current_exe().unwrap().to_str().unwrap())
            .args([
                "a_signal_removes_the_temporary_of_a_write_in_progress",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("TAH_EDGES_CHILD_DIR", &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        assert!(
            lines.any(|l| l.unwrap().contains("ready")),
            "the child did not start"
        );
        let during: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(during.len(), 1, "the temporary exists while writing");
        assert!(Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .unwrap()
            .success());
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert!(status.signal().is_some(), "{name}: {status:?}");
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "{name} left {left:?}");
    }
}

/// A FIFO, a device or a directory given as the model is refused at once (a
/// FIFO used to block the open forever).
#[test]
fn a_model_that_is_not_a_regular_file_is_refused() {
    let dir = scratch("edges-model");
    let fifo = dir.join("model.fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for (path, want) in [
        (fifo.as_path(), "not a regular file"),
        (Path::new("/dev/zero"), "not a regular file"),
        (dir.as_path(), "a directory"),
    ] {
        let mut child = tah()
            .args(["run", "-m"])
            .arg(path)
            .args(["--prompt-ids", "1", "-n", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > std::time::Duration::from_secs(20) {
                let _ = child.kill();
                panic!("{}: still running after 20 s", path.display());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        assert_clean_error(&out, want);
    }
}
