#!/usr/bin/env bash
# Throughput of tah vs llama.cpp on the same GGUF files, same thread counts.
#
#   bench/compare.sh [-t "1 2"] [-r 5] [-p 128] [-n 64] [--rounds K] FILE.gguf...
#
# Per file and thread count T, K rounds (default 1) of, in this order:
#   llama-bench -m FILE -p P -n N -t T -r R -o json  (noamx build on AVX-512 hosts, else native)
#   tah bench   -m FILE.tah -p P -n N -t T -r R --json
# so both engines see the same machine state (interleaved, never all-llama then all-tah).
# The .tah is made once with `tah-convert FILE -o FILE.tah` (cached next to FILE;
# TAH_CONVERT_ARGS, e.g. "--quant q8_0", is passed through; delete the .tah to redo it).
# Prints a markdown table: median [min-max] t/s per engine and the ratio of medians
# tah/llama per (file, test, threads). With K>1, llama's samples are pooled and tah's
# per-round medians are reduced by their median.
# If `tah bench` does not exist yet (or tah/tah-convert are not built), the tah column
# says so and the llama side still runs.
#
# Environment: LLAMA_CACHE, LLAMA_VARIANT (default: noamx on AVX-512
#   hosts, native elsewhere: `bench/build-llama.sh default-variant`), TAH (default
#   target/release/tah, else `tah` on PATH), TAH_CONVERT (likewise tah-convert),
#   TAH_CONVERT_ARGS, OUTDIR (raw outputs; default $LLAMA_CACHE/compare/<time>).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
LLAMA_CACHE=${LLAMA_CACHE:-$HOME/.cache/tah/llama.cpp}
VARIANT=${LLAMA_VARIANT:-$("$here/build-llama.sh" default-variant)}
B=$LLAMA_CACHE/$VARIANT/bin

threads="1 2"; reps=5; np=128; ng=64; rounds=1
files=()
while [ $# -gt 0 ]; do
  case $1 in
    -t) threads=${2//,/ }; shift 2 ;;
    -r) reps=$2; shift 2 ;;
    -p) np=$2; shift 2 ;;
    -n) ng=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) files+=("$1"); shift ;;
  esac
done
[ ${#files[@]} -gt 0 ] || { echo "usage: $0 [-t \"1 2\"] [-r R] [-p P] [-n N] [--rounds K] FILE.gguf..." >&2; exit 2; }

[ -x "$B/llama-bench" ] || "$here/build-llama.sh" "$VARIANT"

find_bin() {  # find_bin ENVVALUE NAME
  if [ -n "$1" ]; then echo "$1"; return; fi
  if [ -x "$repo/target/release/$2" ]; then echo "$repo/target/release/$2"; return; fi
  command -v "$2" 2>/dev/null || true
}
TAH=$(find_bin "${TAH:-}" tah)
TAH_CONVERT=$(find_bin "${TAH_CONVERT:-}" tah-convert)

tah_status=ok
if [ -z "$TAH" ] || [ ! -x "$TAH" ]; then
  tah_status="tah bench missing (no tah binary; cargo build --release)"
elif ! "$TAH" bench --help >/dev/null 2>&1; then
  tah_status="tah bench missing"
fi

OUTDIR=${OUTDIR:-$LLAMA_CACHE/compare/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUTDIR"
runs=$OUTDIR/runs.tsv      # engine file threads round status output-file
: > "$runs"
log() { echo "[compare] $*" >&2; }
log "raw outputs in $OUTDIR; tah: ${TAH:-none} ($tah_status)"

for f in "${files[@]}"; do
  [ -s "$f" ] || { echo "no such file: $f" >&2; exit 1; }
  tf=${f%.gguf}.tah
  fstat=$tah_status
  if [ "$fstat" = ok ] && { [ ! -s "$tf" ] || [ "$tf" -ot "$f" ]; }; then
    if [ -z "$TAH_CONVERT" ] || [ ! -x "$TAH_CONVERT" ]; then
      fstat="tah-convert missing"
    else
      log "tah-convert $f -o $tf ${TAH_CONVERT_ARGS:-}"
      # shellcheck disable=SC2086
      "$TAH_CONVERT" "$f" -o "$tf" ${TAH_CONVERT_ARGS:-} > "$OUTDIR/convert-$(basename "$f").log" 2>&1 \
        || fstat="tah-convert failed (see $OUTDIR/convert-$(basename "$f").log)"
    fi
  fi
  for t in $threads; do
    for k in $(seq 1 "$rounds"); do
      base=$OUTDIR/$(basename "$f")-t$t-r$k
      log "llama-bench $(basename "$f") t=$t round $k"
      if "$B/llama-bench" -m "$f" -p "$np" -n "$ng" -t "$t" -r "$reps" -o json \
           > "$base.llama.json" 2> "$base.llama.err"; then
        printf 'llama\t%s\t%s\t%s\tok\t%s\n' "$f" "$t" "$k" "$base.llama.json" >> "$runs"
      else
        printf 'llama\t%s\t%s\t%s\tllama-bench failed\t%s\n' "$f" "$t" "$k" "$base.llama.err" >> "$runs"
      fi
      if [ "$fstat" = ok ]; then
        log "tah bench $(basename "$tf") t=$t round $k"
        if "$TAH" bench -m "$tf" -p "$np" -n "$ng" -t "$t" -r "$reps" --json \
             > "$base.tah.jsonl" 2> "$base.tah.err"; then
          printf 'tah\t%s\t%s\t%s\tok\t%s\n' "$f" "$t" "$k" "$base.tah.jsonl" >> "$runs"
        else
          printf 'tah\t%s\t%s\t%s\ttah bench failed\t%s\n' "$f" "$t" "$k" "$base.tah.err" >> "$runs"
        fi
      else
        printf 'tah\t%s\t%s\t%s\t%s\t-\n' "$f" "$t" "$k" "$fstat" >> "$runs"
      fi
    done
  done
done

python3 - "$runs" "$np" "$ng" <<'PY' | tee "$OUTDIR/table.md"
import json, os, statistics, sys
runs, np_, ng = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tests = [f"pp{np_}", f"tg{ng}"]
llama, tah, status, order = {}, {}, {}, []
for line in open(runs):
    eng, f, t, k, st, path = line.rstrip("\n").split("\t")
    t = int(t)
    for test in tests:
        key = (f, test, t)
        if key not in order:
            order.append(key)
        status.setdefault((eng,) + key, st)
    if st != "ok":
        continue
    if eng == "llama":
        for r in json.load(open(path)):
            test = f"pp{r['n_prompt']}" if r["n_gen"] == 0 else f"tg{r['n_gen']}"
            llama.setdefault((f, test, t), []).extend(r["samples_ts"])
    else:
        for l in open(path):
            l = l.strip()
            if not l.startswith("{"):
                continue
            r = json.loads(l)
            tah.setdefault((f, r["test"], t), []).append(r["tokens_per_s"])

def fmt(med, lo, hi):
    return f"{med:.1f} [{lo:.1f}–{hi:.1f}]"

print("| file | test | threads | llama.cpp t/s median [min–max] | tah t/s median [min–max] | tah/llama |")
print("|---|---|---|---|---|---|")
for key in order:
    f, test, t = key
    lm = None
    if key in llama:
        s = llama[key]
        lm = statistics.median(s)
        lcol = fmt(lm, min(s), max(s))
    else:
        lcol = status.get(("llama",) + key, "no data")
    tm = None
    if key in tah:
        rs = tah[key]
        tm = statistics.median(r["median"] for r in rs)
        tcol = fmt(tm, min(r["min"] for r in rs), max(r["max"] for r in rs))
    else:
        st = status.get(("tah",) + key, "no data")
        tcol = st if st != "ok" else "no data"
    ratio = f"{tm / lm:.2f}" if (tm and lm) else "–"
    print(f"| {os.path.basename(f)} | {test} | {t} | {lcol} | {tcol} | {ratio} |")
PY
