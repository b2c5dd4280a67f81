#!/usr/bin/env bash
# What can be checked of the Android build without an NDK: the JNI bridge
# compiles for aarch64-linux-android into a static library (no linker needed)
# that exports every native method of android/java/ai/tah/Tah.java as a
# Java_ai_tah_Tah_* symbol. Linking libtah_jni.so needs the NDK (android/build.sh).
#   android/check.sh
# Needs: rustup target add aarch64-linux-android
#
# Why not simply `cargo rustc -p tah-jni --crate-type staticlib`: Cargo builds a
# dependency with all the crate types of its [lib], and the `tah` package is also
# a cdylib (libtah.so for C users), whose link step needs the NDK's linker and
# libraries (-llog, -lunwind). So this script builds `tah` (as an rlib only) and
# `jni` for the target with cargo, then compiles android/jni-bridge/src/lib.rs
# with rustc as Cargo would (target deps, and host deps for proc macros), but as
# a staticlib only.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
t=aarch64-linux-android
deps="target/$t/release/deps"
rlib_of() { # rlib_of CRATE < cargo json messages: the rlib that cargo built
  python3 -c '
import json, sys
name = sys.argv[1]
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == name:
        for f in m["filenames"]:
            if f.endswith(".rlib"):
                print(f)
' "$1" | tail -n 1
}
tah_rlib=$(cargo rustc -q -p tah --lib --target $t --release --crate-type rlib --message-format=json | rlib_of tah)
jni_rlib=$(cargo build -q -p jni --target $t --release --message-format=json | rlib_of jni)
[ -f "$tah_rlib" ] && [ -f "$jni_rlib" ] || { echo "check.sh: could not build tah / jni for $t" >&2; exit 1; }
version=$(sed -n 's/^version = "\(.*\)"/\1/p' android/jni-bridge/Cargo.toml | head -n 1)
lib="target/$t/release/libtah_jni.a"
CARGO_PKG_VERSION="$version" rustc --edition 2021 --crate-name tah_jni --crate-type staticlib \
  --target $t -C opt-level=3 -C codegen-units=4 -C strip=debuginfo \
  android/jni-bridge/src/lib.rs -L "dependency=$deps" -L dependency=target/release/deps \
  --extern tah="$tah_rlib" --extern jni="$jni_rlib" -o "$lib"

# The natives the Java class declares, and the symbols the archive defines.
want=$(grep -oE 'native [^(]+ (native[A-Za-z]+)\(' android/java/ai/tah/Tah.java | grep -oE 'native[A-Za-z]+\($' | tr -d '(' | sed 's/^/Java_ai_tah_Tah_/' | sort -u)
nm=$(command -v aarch64-linux-gnu-nm || command -v llvm-nm || echo nm)
have=$("$nm" --defined-only "$lib" 2>/dev/null | awk '$2 == "T" && $3 ~ /^Java_ai_tah_Tah_/ {print $3}' | sort -u)
missing=$(comm -23 <(echo "$want") <(echo "$have"))
if [ -z "$want" ] || [ -n "$missing" ]; then
  echo "check.sh: missing JNI symbols in $lib:" >&2; echo "${missing:-(no natives found in Tah.java)}" >&2; exit 1
fi
machine=$(readelf -h "$lib" 2>/dev/null | awk '/Machine:/ && m == "" {sub(/.*Machine: */, ""); m = $0} END {print m}')
[ "$machine" = "AArch64" ] || { echo "check.sh: $lib is for '$machine', not AArch64" >&2; exit 1; }
echo "check.sh: $lib ($(du -h "$lib" | cut -f1), $machine) exports all $(echo "$want" | wc -l) natives of Tah.java:" >&2
echo "$have" | sed 's/^/  /' >&2
