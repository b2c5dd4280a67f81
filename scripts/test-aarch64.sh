#!/usr/bin/env bash
# Runs the whole test suite cross-compiled for aarch64-unknown-linux-gnu under
# qemu-user with a given CPU model:
#   scripts/test-aarch64.sh cortex-a72   # Raspberry Pi 4
#   scripts/test-aarch64.sh cortex-a76   # Raspberry Pi 5
#   scripts/test-aarch64.sh max          # every extension qemu has (dotprod, i8mm, SVE...)
# Extra arguments go to cargo test (e.g. -- --skip slow_test).
# Needs: rustup target add aarch64-unknown-linux-gnu;
#        apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
# The runner set here overrides .cargo/config.toml's default (cortex-a72).
# TAH_TEST_RUNNER lets tests that spawn the `tah` binary run it under qemu too
# (without binfmt_misc the kernel cannot exec an aarch64 binary). Tests find
# ../shared and ~/.cache/tah/models by host paths, which qemu-user sees as is.
set -euo pipefail
cpu="${1:?usage: scripts/test-aarch64.sh CPU (cortex-a72 | cortex-a76 | max) [cargo test args]}"
shift
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
runner="qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu $cpu"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="$runner"
export TAH_TEST_RUNNER="$runner"
echo "== cargo test --target aarch64-unknown-linux-gnu --workspace under: $runner" >&2
cargo test --target aarch64-unknown-linux-gnu --workspace "$@"
