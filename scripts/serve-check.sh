#!/usr/bin/env bash
# Tests `tah serve` from outside, as its users would: the official `openai`
# Python client and raw HTTP (bad requests, auth, CORS, disconnects, a full
# queue, time limits, a bounded load) against servers running SmolLM2-135M.
#
#   scripts/serve-check.sh [PYTEST ARGS...]
#
# Needs python3 with `openai` and `pytest` (scripts/test.sh installs them), the
# SmolLM2 GGUF in $TAH_MODELS (models/fetch.sh), and the release binaries
# (built when missing). The tests start and stop their own servers on free
# loopback ports (tests/serve/conftest.py); nothing is left running. A TaH
# model (the fixture in ../shared with a byte tokenizer) serves the think tests.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
models=${TAH_MODELS:-$HOME/.cache/tah/models}
gguf=$models/SmolLM2-135M-Instruct.Q4_1.gguf

tah=$root/target/release/tah
conv=$root/target/release/tah-convert
if [ ! -x "$tah" ] || [ ! -x "$conv" ]; then
  (cd "$root" && cargo build --release -p tah -p tah-convert)
fi
if [ ! -s "$gguf" ]; then
  echo "serve-check: $gguf is missing (run models/fetch.sh)" >&2
  exit 1
fi

work=$(mktemp -d)
# The fixtures stop their servers; the pids they list here are for a pytest
# that was itself killed.
export TAH_SERVE_PIDS=$work/pids
cleanup() {
  if [ -s "$TAH_SERVE_PIDS" ]; then
    while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$TAH_SERVE_PIDS"
  fi
  rm -rf "$work"
}
trap cleanup EXIT
# The .tah carries the tokenizer and the chat template.
"$conv" "$gguf" -o "$work/SmolLM2-135M-Instruct.tah" >/dev/null

# A TaH model that takes text: the fixture with a byte tokenizer.
shared=${TAH_SHARED:-$root/../shared}
python3 "$root/tests/serve/make_tah_text.py" "$shared/fixtures/tah-tiny" "$work/tah-tiny-text"
"$conv" "$work/tah-tiny-text" -o "$work/tah-tiny-text.tah" >/dev/null

export TAH_BIN=$tah
export TAH_SERVE_MODEL=$work/SmolLM2-135M-Instruct.tah
export TAH_SERVE_TAH_MODEL=$work/tah-tiny-text.tah TAH_SERVE_TAH_CKPT=$work/tah-tiny-text
cd "$root/tests/serve"
# -p no:cacheprovider: no .pytest_cache in the source tree.
[ $# -gt 0 ] || set -- .
python3 -m pytest -p no:cacheprovider -q -rfE --basetemp="$work/pytest" "$@"
