#!/usr/bin/env bash
# Builds libtah_jni.so for Android apps with cargo-ndk (needs an Android NDK:
# ANDROID_NDK_HOME, or the NDK of the Android SDK) and copies it into an app's
# jniLibs:
#   cargo install cargo-ndk
#   rustup target add aarch64-linux-android armv7-linux-androideabi x86_64-linux-android
#   android/build.sh [APP_DIR]          (default: ./app)
# which runs, from the repository root:
#   cargo ndk -t arm64-v8a -o APP_DIR/src/main/jniLibs build --release -p tah-jni
# (add -t armeabi-v7a -t x86_64 via ABIS="arm64-v8a x86_64" for more ABIs; x86_64
# is the emulator's). .cargo/config.toml links them with 16 KiB-aligned segments;
# this script checks that with readelf. Then copy android/java/ai/tah/*.java and
# android/java/android-only/ai/tah/TahAndroid.java into the app (or a library
# module) and add android/consumer-rules.pro to its R8 rules: docs/android.md.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
app="$(cd "${1:-app}" 2>/dev/null && pwd || { echo "build.sh: app directory ${1:-app} not found" >&2; exit 1; })"
command -v cargo-ndk >/dev/null || { echo "build.sh: cargo-ndk missing: cargo install cargo-ndk" >&2; exit 1; }
targets=()
for abi in ${ABIS:-arm64-v8a}; do targets+=(-t "$abi"); done
cd "$root"
cargo ndk "${targets[@]}" -o "$app/src/main/jniLibs" build --release -p tah-jni
ls -l "$app"/src/main/jniLibs/*/libtah_jni.so
# 16 KiB pages (Android 15+ arm64/x86_64 devices): every LOAD segment 0x4000-aligned.
readelf=$(command -v llvm-readelf || command -v readelf || true)
if [ -n "$readelf" ]; then
  for so in "$app"/src/main/jniLibs/*/libtah_jni.so; do
    align=$("$readelf" -lW "$so" | awk '$1 == "LOAD" {print $NF}' | sort -u | tr '\n' ' ')
    echo "$so: LOAD alignment $align"
    case "$so" in
      */arm64-v8a/* | */x86_64/*) [ "$align" = "0x4000 " ] || { echo "build.sh: $so is not 16 KiB-aligned (RUSTFLAGS set? it replaces .cargo/config.toml's)" >&2; exit 1; } ;;
    esac
  done
fi
