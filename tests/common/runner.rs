//! Running this build's binaries from tests (shared with convert/tests).

/// A command running `bin` (a binary of this build), through `$TAH_TEST_RUNNER`
/// when set: cross tests run target binaries under e.g. `qemu-aarch64 -L
/// /usr/aarch64-linux-gnu -cpu cortex-a72`, and without binfmt_misc the kernel
/// cannot exec them directly.
pub fn bin_command(bin: &str) -> std::process::Command {
    match std::env::var("TAH_TEST_RUNNER") {
        Ok(runner) if !runner.trim().is_empty() => {
            let mut words = runner.split_whitespace();
            let mut c = std::process::Command::new(words.next().unwrap());
            c.args(words).arg(bin);
            c
        }
        _ => std::process::Command::new(bin),
    }
}
