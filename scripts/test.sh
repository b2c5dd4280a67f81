#!/usr/bin/env bash
# Sets up everything the tests need on a fresh Debian machine (idempotent; downloads
# cached under ~/.cache/tah) and runs the whole test suite. This is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
cache="${TAH_CACHE:-$HOME/.cache/tah}"
mkdir -p "$cache"
export PIP_CACHE_DIR="$cache/pip-cache"
# Build outputs live outside the clone so repeated runs reuse compiled dependencies.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
step() { printf '\n=== %s (%s)\n' "$1" "$(date +%T)"; }

step "system packages"
need_apt=()
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

step "python packages"
python3 -m pip install --quiet --disable-pip-version-check gguf numpy safetensors

step "models"
export TAH_MODELS="$cache/models"
models/fetch.sh

step "build (release)"
cargo build --release --workspace --all-targets

step "tests"
cargo test --release --workspace
