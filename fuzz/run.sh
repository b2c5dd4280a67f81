#!/usr/bin/env bash
# Builds the fuzz targets and runs each for SECONDS (default 60), one after
# another, on the committed seeds (fuzz/seeds/<target>) plus a working corpus
# (fuzz/corpus/<target>, not committed). Exits non-zero if any target finds a
# crash, a timeout or an out-of-memory; crashing inputs land in
# fuzz/artifacts/<target>/. Prints the executions of each target.
#   fuzz/run.sh [SECONDS] [TARGET...]
# Needs the nightly toolchain; installs cargo-fuzz when it is missing.
set -uo pipefail
secs="${1:-60}"
shift || true
fuzz="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$fuzz")"
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(gguf_model safetensors_dir unpickle text chat_template tokenizer_json session_state)
export TAH_SHARED="${TAH_SHARED:-$repo/../shared}"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: installing cargo-fuzz" >&2
  cargo +nightly install cargo-fuzz --locked >&2 || { echo "fuzz/run.sh: cannot install cargo-fuzz" >&2; exit 2; }
fi

cd "$repo"
# One build for all targets (release with debug assertions, as cargo fuzz does).
cargo +nightly fuzz build --fuzz-dir "$fuzz" >&2 || { echo "fuzz/run.sh: build failed" >&2; exit 2; }

status=0
summary=()
for t in "${targets[@]}"; do
  mkdir -p "$fuzz/corpus/$t" "$fuzz/artifacts/$t"
  log="$fuzz/artifacts/$t.log"
  # -timeout: one input may take at most 30 s (a hang is a failure);
  # -rss_limit_mb / -malloc_limit_mb: memory beyond 2 GiB, or one allocation
  # beyond 1 GiB, is a failure (the inputs are at most a few MB).
  dirs=("$fuzz/corpus/$t" "$fuzz/seeds/$t")
  [ -d "$fuzz/seeds-big/$t" ] && dirs+=("$fuzz/seeds-big/$t") # from seed.sh --big
  cargo +nightly fuzz run --fuzz-dir "$fuzz" "$t" "${dirs[@]}" -- \
    -max_total_time="$secs" -timeout=30 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
    -print_final_stats=1 -artifact_prefix="$fuzz/artifacts/$t/" >"$log" 2>&1
  rc=$?
  execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)"
  if [ $rc -ne 0 ]; then
    status=1
    echo "fuzz/run.sh: $t FAILED (exit $rc); log $log; artifacts:" >&2
    ls "$fuzz/artifacts/$t" >&2
    grep -E 'ERROR|panicked|SUMMARY|Test unit written' "$log" | head -20 >&2
  fi
  summary+=("$(printf '%-16s %10s executions in %ss  %s' "$t" "${execs:-?}" "$secs" "$([ $rc -eq 0 ] && echo ok || echo FAILED)")")
done
printf '%s\n' "${summary[@]}"
exit $status
