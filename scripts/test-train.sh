#!/usr/bin/env bash
# The trainer's differentiable TaH forward (models/train/tah_model.py) against the
# reference outputs in shared/fixtures/tah-tiny, with pytest. torch is large, so
# its venv lives in the cache outside the clone: created once, then reused.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${TAH_CACHE:-$HOME/.cache/tah}"
venv="$cache/venv-train"
py="$venv/bin/python"
if ! "$py" -c 'import torch, safetensors, numpy, pytest' 2>/dev/null; then
  echo "test-train.sh: creating $venv (torch, safetensors, numpy, pytest)" >&2
  python3 -m venv "$venv"
  # shellcheck disable=SC2046 # the pinned versions from requirements.txt
  PIP_CACHE_DIR="$cache/pip-cache" "$venv/bin/pip" install --quiet --disable-pip-version-check \
    $(grep -E '^(torch|safetensors|numpy|pytest)==' models/train/requirements.txt)
fi
"$py" -m pytest -q -rs models/train/test_fixture.py
