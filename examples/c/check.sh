#!/usr/bin/env bash
# Checks the C ABI end to end with a real model (SmolLM2-135M-Instruct, converted
# to .tah): builds examples/c/math.c against libtah.a and libtah.so, runs both
# (greedy, so their answers must be identical), then runs a short generation under
# valgrind memcheck, which must report no errors and no definite leaks; checks
# the SONAME (libtah.so.0) and what the shared programs need; runs edges.c
# (hostile numbers) and abi.c (cancel, sampling, safe prompts, fd loading,
# versions, struct growth, log, vocabulary, save/restore), the short abi cases
# under valgrind too.
#   examples/c/check.sh
# Needs gcc, valgrind and the SmolLM2 GGUF (models/fetch.sh). Env:
#   TAH_MODELS   where the GGUF is (default ~/.cache/tah/models)
#   N_TOKENS     tokens of the native runs (default 48)
#   VG_TOKENS    tokens of the valgrind run (default 4)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
out="$root/target/c-example"
mkdir -p "$out"
gguf="${TAH_MODELS:-$HOME/.cache/tah/models}/SmolLM2-135M-Instruct.Q4_1.gguf"
model="$out/SmolLM2-135M-Instruct.Q4_1.tah"
[ -f "$gguf" ] || { echo "check.sh: $gguf is missing: run models/fetch.sh" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "check.sh: valgrind is missing (apt-get install valgrind)" >&2; exit 1; }

step() { echo "== $*" >&2; }
t0=$SECONDS
step "build (cargo build --release -p tah -p tah-convert; gcc static + shared)"
cargo build --release -q -p tah -p tah-convert
TAH_NO_CARGO=1 examples/c/build.sh
if [ ! -f "$model" ] || [ "$gguf" -nt "$model" ]; then
  step "convert $gguf"
  target/release/tah-convert "$gguf" -o "$model"
fi
echo "   $((SECONDS - t0)) s" >&2

n="${N_TOKENS:-48}"
t0=$SECONDS
step "static: math-static $n tokens"
"$out/math-static" "$model" "$n" 2 > "$out/static.txt" 2> "$out/static.err" || { cat "$out/static.err" >&2; exit 1; }
cat "$out/static.txt"; tail -n 1 "$out/static.err" >&2
step "shared: math-shared $n tokens"
"$out/math-shared" "$model" "$n" 2 > "$out/shared.txt" 2> "$out/shared.err" || { cat "$out/shared.err" >&2; exit 1; }
tail -n 1 "$out/shared.err" >&2
ldd "$out/math-shared" | grep -q "libtah.so" || { echo "check.sh: math-shared does not use libtah.so" >&2; exit 1; }
if ! cmp -s "$out/static.txt" "$out/shared.txt"; then
  echo "check.sh: the static and shared builds answered differently" >&2
  diff "$out/static.txt" "$out/shared.txt" >&2 || true
  exit 1
fi
[ -s "$out/static.txt" ] || { echo "check.sh: empty answer" >&2; exit 1; }
echo "   $((SECONDS - t0)) s" >&2

vg="${VG_TOKENS:-4}"
t0=$SECONDS
step "valgrind memcheck: math-static $vg tokens, 2 threads"
valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
  --log-file="$out/valgrind.log" "$out/math-static" "$model" "$vg" 2 > "$out/vg.txt" 2>"$out/vg.err" || {
  echo "check.sh: valgrind failed:" >&2; cat "$out/vg.err" "$out/valgrind.log" >&2; exit 1; }
grep -E "ERROR SUMMARY|(definitely|indirectly|possibly) lost:|still reachable:" "$out/valgrind.log" >&2 || true
echo "   $((SECONDS - t0)) s" >&2
t0=$SECONDS
step "hostile numbers through the C ABI: every call fails cleanly, the process survives"
"$out/edges" "$model" || { echo "check.sh: edges failed" >&2; exit 1; }
step "the same under valgrind"
valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
  --log-file="$out/valgrind-edges.log" "$out/edges" "$model" > "$out/edges-vg.txt" 2>&1 || {
  echo "check.sh: edges under valgrind failed:" >&2; cat "$out/edges-vg.txt" "$out/valgrind-edges.log" >&2; exit 1; }
echo "   $((SECONDS - t0)) s" >&2
step "SONAME: libtah.so is libtah.so.0, and the shared programs need libtah.so.0"
readelf -d "$out/lib/libtah.so.0" | grep -q "SONAME.*\[libtah.so.0\]" || {
  echo "check.sh: libtah.so has no SONAME libtah.so.0:" >&2; readelf -d "$out/lib/libtah.so.0" | grep -i soname >&2; exit 1; }
for p in math-shared abi; do
  readelf -d "$out/$p" | grep -q "NEEDED.*\[libtah.so.0\]" || {
    echo "check.sh: $p does not need libtah.so.0" >&2; readelf -d "$out/$p" | grep NEEDED >&2; exit 1; }
done
t0=$SECONDS
step "app-grade ABI (abi.c, shared): all cases"
"$out/abi" "$model" all > "$out/abi.txt" 2>&1 || { cat "$out/abi.txt" >&2; echo "check.sh: abi failed" >&2; exit 1; }
grep -E "^(note|skip)" "$out/abi.txt" >&2 || true
tail -n 1 "$out/abi.txt" >&2
step "the short abi cases under valgrind (static)"
valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
  --log-file="$out/valgrind-abi.log" "$out/abi-static" "$model" quick > "$out/abi-vg.txt" 2>&1 || {
  echo "check.sh: abi under valgrind failed:" >&2; cat "$out/abi-vg.txt" "$out/valgrind-abi.log" >&2; exit 1; }
grep -E "ERROR SUMMARY|definitely lost:" "$out/valgrind-abi.log" >&2 || true
echo "   $((SECONDS - t0)) s" >&2
echo "check.sh: C example OK (static, shared, valgrind, hostile numbers, SONAME, app-grade ABI)" >&2
