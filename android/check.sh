#!/usr/bin/env bash
# What can be checked of the Android build without an NDK:
# 1. android/consumer-rules.pro keeps every class, method and field the JNI
#    bridge looks up by name (android/test/check-keep-rules.py).
# 2. The 16 KiB page-size linker flag that .cargo/config.toml gives the Android
#    targets yields 0x4000-aligned LOAD segments: a tiny cdylib is linked with
#    exactly those flags for the host (and for aarch64-linux-gnu when its cross
#    gcc is installed) and checked with readelf, against a control without the
#    flag. (The Android .so itself needs the NDK's linker: not linked here.)
# 3. The JNI bridge compiles for aarch64-linux-android into a static library (no
#    linker needed) that exports every native method of android/java/ai/tah/Tah.java
#    as a Java_ai_tah_Tah_* symbol. Linking libtah_jni.so needs the NDK
#    (android/build.sh).
# 4. That archive, linked into a shared object by the aarch64 GNU linker with the
#    configured link args (Android symbols left undefined: a layout check only),
#    has 0x4000-aligned LOAD segments. (An archive itself has no segments.)
#   android/check.sh
# Needs: rustup target add aarch64-linux-android; python3 (3.11+), readelf.
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

python3 android/test/check-keep-rules.py

# The page-size flag, read from .cargo/config.toml (the same for every Android target).
mapfile -t flags < <(python3 - <<'PY'
import tomllib
cfg = tomllib.load(open(".cargo/config.toml", "rb"))["target"]
flags = [cfg[t].get("rustflags") for t in ("aarch64-linux-android", "armv7-linux-androideabi", "x86_64-linux-android")]
assert all(f == flags[0] for f in flags), f"the Android targets' rustflags differ: {flags}"
print("\n".join(flags[0]))
PY
)
printf '%s\n' "${flags[@]}" | grep -qx 'link-arg=-Wl,-z,max-page-size=16384' \
  || { echo "check.sh: .cargo/config.toml lacks -C link-arg=-Wl,-z,max-page-size=16384 for Android" >&2; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
echo '#[no_mangle] pub extern "C" fn tah_page_probe() -> i32 { 16384 }' > "$tmp/probe.rs"
aligns() { readelf -lW "$1" | awk '$1 == "LOAD" {print $NF}' | sort -u | tr '\n' ' '; }
rustc --crate-type cdylib -O "$tmp/probe.rs" -o "$tmp/plain.so"
rustc --crate-type cdylib -O "${flags[@]}" "$tmp/probe.rs" -o "$tmp/host.so"
[ "$(aligns "$tmp/host.so")" = "0x4000 " ] && [ "$(aligns "$tmp/plain.so")" != "0x4000 " ] \
  || { echo "check.sh: host cdylib LOAD alignment with the flag: $(aligns "$tmp/host.so"), without: $(aligns "$tmp/plain.so")" >&2; exit 1; }
echo "check.sh: the Android page-size flag aligns LOAD segments to 0x4000 (host cdylib; without it: $(aligns "$tmp/plain.so"))" >&2
if command -v aarch64-linux-gnu-gcc >/dev/null && rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
  rustc --crate-type cdylib -O --target aarch64-unknown-linux-gnu -C linker=aarch64-linux-gnu-gcc \
    "${flags[@]}" "$tmp/probe.rs" -o "$tmp/arm64.so"
  [ "$(aligns "$tmp/arm64.so")" = "0x4000 " ] \
    || { echo "check.sh: aarch64 cdylib LOAD alignment with the flag: $(aligns "$tmp/arm64.so")" >&2; exit 1; }
  echo "check.sh: also for aarch64-linux-gnu: LOAD alignment $(aligns "$tmp/arm64.so")" >&2
fi

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

# The bridge's own code with the configured link args: the archive linked into a
# shared object by the aarch64 GNU linker (its Android libc/liblog symbols left
# undefined: not loadable, a segment-layout check only).
if command -v aarch64-linux-gnu-gcc >/dev/null; then
  largs=()
  for f in "${flags[@]}"; do [[ "$f" == link-arg=* ]] && largs+=("${f#link-arg=}"); done
  aarch64-linux-gnu-gcc -shared -o "$tmp/libtah_jni.so" -Wl,--whole-archive "$lib" -Wl,--no-whole-archive "${largs[@]}"
  [ "$(aligns "$tmp/libtah_jni.so")" = "0x4000 " ] \
    || { echo "check.sh: $lib linked with ${largs[*]}: LOAD alignment $(aligns "$tmp/libtah_jni.so")" >&2; exit 1; }
  echo "check.sh: $lib linked with ${largs[*]} (GNU ld, layout only): LOAD alignment $(aligns "$tmp/libtah_jni.so")" >&2
fi
