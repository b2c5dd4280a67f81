#!/usr/bin/env bash
# Sets up everything the tests need on a fresh Debian machine (idempotent; model and
# pip downloads cached under ~/.cache/tah) and runs the test suite. CI runs this.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${TAH_CACHE:-$HOME/.cache/tah}"
mkdir -p "$cache"
export PIP_CACHE_DIR="$cache/pip-cache"
export TAH_MODELS="$cache/models"
step() { printf '\n=== %s (%s)\n' "$1" "$(date +%T)"; }

step "system packages"
need=()
for p in python3:python3 chromium:chromium valgrind:valgrind javac:openjdk-17-jdk-headless; do
  command -v "${p%%:*}" >/dev/null || need+=("${p#*:}")
done
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

step "rust targets and tools"
rustup target add aarch64-linux-android >/dev/null
# The C header check compares include/tah.h with a fresh cbindgen run (pinned:
# its output changes between versions).
if [ "$(cbindgen --version 2>/dev/null)" != "cbindgen 0.29.4" ]; then
  cargo install cbindgen --locked --version 0.29.4 --quiet
fi

step "python packages"
python3 -m pip install --quiet --disable-pip-version-check gguf numpy safetensors

step "models"
models/fetch.sh

step "build (release)"
cargo build --release --workspace --all-targets

step "tests"
cargo test --release --workspace

step "HTML depth map rendered by Chromium"
bash scripts/html-screenshot-check.sh

step "C example: static and shared library, valgrind"
bash examples/c/check.sh

step "Android bridge: aarch64-linux-android staticlib symbols, JVM test"
bash android/check.sh
bash android/test/run.sh

step "done"
