#!/usr/bin/env bash
# Builds the JNI bridge as a host cdylib (target/release/libtah_jni.so; cargo
# reuses an up-to-date build), compiles android/java + TahTest.java with javac,
# and runs the test on a real JVM with -Xcheck:jni: the TaH fixture (token ids,
# greedy; tokens and depths must match the reference implementation's), sampling,
# cancel/close from other threads, the logger, loading from a descriptor, saved
# sessions, and SmolLM2 through the chat API. Also compiles the Android-only
# android/java/android-only/ai/tah/TahAndroid.java against compile-only stubs of
# the two android.* classes it uses (test/android-stubs/; never run).
#   android/test/run.sh
# Needs javac/java (17+), ../shared beside the checkout (or TAH_SHARED), and the
# SmolLM2 GGUF (models/fetch.sh; TAH_SKIP_REAL_MODELS=1 runs the fixture only).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
shared="${TAH_SHARED:-$root/../shared}"
fixture="$shared/fixtures/tah-tiny"
out="$root/target/jni-test"
mkdir -p "$out/classes"

cargo build --release -q -p tah-jni -p tah-convert
[ -f "$out/tah-tiny.tah" ] || target/release/tah-convert "$fixture" -o "$out/tah-tiny.tah" >&2
args=("$out/tah-tiny.tah")
# The prompt and the reference's greedy tokens and depths, from reference.json.
mapfile -t ref < <(python3 - "$fixture/reference.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for k in ("prefill_input_ids", "decode_token_ids", "decode_iter_count"):
    print(",".join(str(v) for v in r[k]))
PY
)
args+=("${ref[@]}")
if [ "${TAH_SKIP_REAL_MODELS:-0}" != 1 ]; then
  gguf="${TAH_MODELS:-$HOME/.cache/tah/models}/SmolLM2-135M-Instruct.Q4_1.gguf"
  [ -f "$gguf" ] || { echo "run.sh: $gguf is missing: run models/fetch.sh (or TAH_SKIP_REAL_MODELS=1)" >&2; exit 1; }
  smol="$out/SmolLM2-135M-Instruct.Q4_1.tah"
  [ -f "$smol" ] && [ "$smol" -nt "$gguf" ] || target/release/tah-convert "$gguf" -o "$smol" >&2
  args+=("$smol")
fi
javac -Xlint:all -Werror -d "$out/classes" android/java/ai/tah/*.java android/test/TahTest.java
# TahAndroid against the stubs, into a directory of its own (never on the test's classpath).
rm -rf "$out/android-classes" && mkdir -p "$out/android-classes"
javac -Xlint:all -Werror -d "$out/android-classes" -cp "$out/classes" \
  $(find android/test/android-stubs -name '*.java') android/java/android-only/ai/tah/TahAndroid.java
java -Xcheck:jni -Djava.library.path="$root/target/release" -cp "$out/classes" TahTest "${args[@]}"
