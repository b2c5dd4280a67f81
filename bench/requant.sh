#!/usr/bin/env bash
# Re-quantize the two real models with llama.cpp's llama-quantize and measure
# llama-perplexity on the originals and the re-quantizations.
#
#   bench/requant.sh             # requantize (cached) + perplexity -> bench/llama-ppl.json
#   SKIP_PPL=1 bench/requant.sh  # requantize only
#
# Makes, next to the originals in $TAH_MODELS (default ~/.cache/tah/models):
#   <model>.llama-Q8_0.gguf  <model>.llama-Q4_0.gguf
# from SmolLM2-135M-Instruct.Q4_1.gguf and Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf
# (`llama-quantize --allow-requantize IN OUT TYPE`, llama.cpp's default type policy:
# llama-quantize picks its own types for token_embd/output; they are printed below and
# stored in the JSON so that tah-convert --quant can be compared fairly).
# Note: these are re-quantizations of already-quantized weights, so their quality is
# bounded by the source file (a "Q8_0" of a Q4_1 file is still a Q4_1 model in content).
#
# Perplexity: `llama-perplexity -m FILE -f /work/shared/anchors/gpl-3.txt -c 512 -b 512 -t 2`
# with the noamx build (AVX-512 path). The anchors measured the originals with the AMX
# build (18.3645 / 5.3103). Results: bench/llama-ppl.json
#   {file: {"ppl", "stderr", "chunks", "build", "command", "token_embd_type", "output_type"}}
# output_type is null when the model ties output to token_embd.
#
# Environment: TAH_MODELS, LLAMA_CACHE, LLAMA_VARIANT (default: noamx on AVX-512
#   hosts, native elsewhere: `bench/build-llama.sh default-variant`), PPL_TEXT,
#              PPL_THREADS (default 2), OUT (default bench/llama-ppl.json),
#              COLLECT_ONLY=1 (no new perplexity runs: write the JSON from the logs so far).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
LLAMA_CACHE=${LLAMA_CACHE:-$HOME/.cache/tah/llama.cpp}
VARIANT=${LLAMA_VARIANT:-$("$here/build-llama.sh" default-variant)}
B=$LLAMA_CACHE/$VARIANT/bin
M=${TAH_MODELS:-$HOME/.cache/tah/models}
PPL_TEXT=${PPL_TEXT:-/work/shared/anchors/gpl-3.txt}
PPL_THREADS=${PPL_THREADS:-2}
OUT=${OUT:-$here/llama-ppl.json}
LOGS=$LLAMA_CACHE/logs
mkdir -p "$LOGS"

log() { echo "[requant] $*" >&2; }

[ -x "$B/llama-quantize" ] || "$here/build-llama.sh" "$VARIANT"

ORIGS=(SmolLM2-135M-Instruct.Q4_1.gguf Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf)
for f in "${ORIGS[@]}"; do
  [ -s "$M/$f" ] || TAH_MODELS=$M "$repo/models/fetch.sh" >/dev/null
done

FILES=()
for f in "${ORIGS[@]}"; do
  model=${f%.*.gguf}            # strip ".<QUANT>.gguf"
  FILES+=("$f")
  for q in Q8_0 Q4_0; do
    out=$model.llama-$q.gguf
    FILES+=("$out")
    if [ -s "$M/$out" ]; then log "$out exists"; continue; fi
    log "llama-quantize --allow-requantize $f $out $q"
    nice -n 10 "$B/llama-quantize" --allow-requantize "$M/$f" "$M/$out.part" "$q" 2 \
      > "$LOGS/quantize-$out.log" 2>&1 || { tail -n 20 "$LOGS/quantize-$out.log" >&2; exit 1; }
    mv "$M/$out.part" "$M/$out"
  done
done

# Tensor types llama-quantize chose (plus the originals, for reference).
types_json=$LOGS/types.json
fresh=1
for f in "${FILES[@]}"; do [ "$types_json" -nt "$M/$f" ] || fresh=0; done
[ "$fresh" = 1 ] || python3 - "$M" "${FILES[@]}" > "$types_json.part" <<'PY'
import json, sys, collections
from gguf import GGUFReader
d, files = sys.argv[1], sys.argv[2:]
res = {}
for f in files:
    r = GGUFReader(f"{d}/{f}")
    t = {x.name: x.tensor_type.name for x in r.tensors}
    res[f] = {"token_embd_type": t.get("token_embd.weight"),
              "output_type": t.get("output.weight"),
              "counts": dict(collections.Counter(t.values()))}
print(json.dumps(res))
PY
[ "$fresh" = 1 ] || mv "$types_json.part" "$types_json"
python3 - "$types_json" <<'PY' >&2
import json, sys
for f, v in json.load(open(sys.argv[1])).items():
    print(f"  {f:48s} token_embd={v['token_embd_type']:6s} output={str(v['output_type']):6s} all={v['counts']}")
PY

[ "${SKIP_PPL:-0}" = 1 ] && exit 0

# Perplexity on all files; one log per file, parsed into the JSON.
for f in "${FILES[@]}"; do
  lg=$LOGS/ppl-$VARIANT-$f.log
  if [ "${FORCE:-0}" != 1 ] && grep -q 'Final estimate' "$lg" 2>/dev/null; then
    log "ppl $f: cached ($lg)"; continue
  fi
  if [ "${COLLECT_ONLY:-0}" = 1 ]; then log "ppl $f: not measured yet, left out"; continue; fi
  log "llama-perplexity $f"
  t0=$(date +%s)
  "$B/llama-perplexity" -m "$M/$f" -f "$PPL_TEXT" -c 512 -b 512 -t "$PPL_THREADS" > "$lg" 2>&1 \
    || { tail -n 20 "$lg" >&2; exit 1; }
  log "  $(grep 'Final estimate' "$lg") ($(( $(date +%s) - t0 )) s)"
done

python3 - "$OUT" "$VARIANT" "$PPL_THREADS" "$PPL_TEXT" "$types_json" "$LOGS" "${FILES[@]}" <<'PY'
import json, re, sys
out, variant, thr, text, types_json, logs, files = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7:]
types = json.load(open(types_json))
res = {}
for f in files:
    try:
        s = open(f"{logs}/ppl-{variant}-{f}.log", errors="replace").read()
    except FileNotFoundError:
        continue
    m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", s)
    c = re.search(r"calculating perplexity over (\d+) chunks", s)
    if not (m and c):
        continue
    res[f] = {"ppl": float(m.group(1)), "stderr": float(m.group(2)), "chunks": int(c.group(1)),
              "build": variant,
              "command": f"llama-perplexity -m ~/.cache/tah/models/{f} -f {text} -c 512 -b 512 -t {thr}",
              "token_embd_type": types[f]["token_embd_type"], "output_type": types[f]["output_type"]}
with open(out, "w") as fh:
    json.dump(res, fh, indent=2)
    fh.write("\n")
for f, v in res.items():
    print(f"| {f} | {v['chunks']} | {v['ppl']:.4f} ± {v['stderr']:.4f} | {v['token_embd_type']} | {v['output_type']} |")
PY
log "wrote $OUT"
