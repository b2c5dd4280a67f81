//! Running this build's binaries from tests (shared with convert/tests).
// Each test binary that includes this file uses only some of it.
#![allow(dead_code)]

/// A command running `bin` (a binary of this build), through `$TAH_TEST_RUNNER`
/// when set: cross tests run target binaries under e.g. `qemu-aarch64 -L
/// /usr/aarch64-linux-gnu -cpu cortex-a72`, and without binfmt_misc the kernel
/// cannot exec them directly.
pub fn bin_command(bin: &str) -> std::process::Command {
    match runner() {
        Some(runner) => {
            let mut words = runner.split_whitespace();
            let mut c = std::process::Command::new(words.next().unwrap());
            c.args(words).arg(bin);
            c
        }
        None => std::process::Command::new(bin),
    }
}

/// `$TAH_TEST_RUNNER` when set (the tests run under an emulator).
pub fn runner() -> Option<String> {
    std::env::var("TAH_TEST_RUNNER")
        .ok()
        .filter(|r| !r.trim().is_empty())
}
