#!/usr/bin/env bash
# A greedy generation with a real model (SmolLM2-135M-Instruct, converted to
# .tah) must give the same tokens and depths on aarch64 (under qemu-user, per CPU)
# as on this x86-64 host:
#   tah run -m smol.tah -p PROMPT --temp 0 -n 32 --ignore-eos --json
#   scripts/aarch64-parity.sh [CPU...]      (default: cortex-a72 cortex-a76)
# Needs what scripts/test-aarch64.sh needs, and the GGUF (models/fetch.sh).
# PROFILE=dev (default: reuses what `cargo test` and scripts/test-aarch64.sh built)
# or PROFILE=release. Rust does not contract or reorder float operations between
# optimization levels, so both profiles must give the same tokens.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
cpus=("$@")
[ ${#cpus[@]} -gt 0 ] || cpus=(cortex-a72 cortex-a76)
gguf="${TAH_MODELS:-$HOME/.cache/tah/models}/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -f "$gguf" ] || { echo "aarch64-parity.sh: $gguf is missing: run models/fetch.sh" >&2; exit 1; }
out="$root/target/aarch64-parity"
mkdir -p "$out"
profile="${PROFILE:-dev}"
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
cargo build -q --profile "$profile" -p tah -p tah-convert --bins
cargo build -q --profile "$profile" -p tah --bin tah --target aarch64-unknown-linux-gnu
model="$out/SmolLM2-135M-Instruct.Q4_1.tah"
[ -f "$model" ] && [ "$model" -nt "$gguf" ] || "target/$dir/tah-convert" "$gguf" -o "$model" >&2
# 32 tokens whatever the model says (--ignore-eos): the anchors' raw prompt, whose
# greedy run has no near-tie in its first 32 tokens. Prompts that hit a near-tie
# can differ: the kernel tables sum float lanes in different orders (e.g. the
# anchors' "qa" prompt flips at its 6th token between NEON and AVX-512).
args=(run -m "$model" -p "The capital of France is" --temp 0 -n 32 --ignore-eos --json -t 2)
fields() { # tokens and depths of a --json result
  python3 -c 'import json,sys; j=json.load(sys.stdin); print(json.dumps({k: j[k] for k in ("prompt_ids", "tokens", "depths", "text")}))'
}
"target/$dir/tah" "${args[@]}" | fields > "$out/x86_64.json"
echo "x86_64:       $(cat "$out/x86_64.json")" >&2
status=0
for cpu in "${cpus[@]}"; do
  t0=$SECONDS
  qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu "$cpu" \
    "target/aarch64-unknown-linux-gnu/$dir/tah" "${args[@]}" | fields > "$out/$cpu.json"
  if cmp -s "$out/x86_64.json" "$out/$cpu.json"; then
    echo "$cpu: same tokens ($((SECONDS - t0)) s)" >&2
  else
    echo "$cpu: DIFFERENT: $(cat "$out/$cpu.json")" >&2
    status=1
  fi
done
exit $status
