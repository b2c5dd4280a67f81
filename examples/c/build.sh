#!/usr/bin/env bash
# Builds the C programs against tah's C ABI (include/tah.h):
# - examples/c/math.c statically (target/release/libtah.a) and dynamically;
# - examples/c/edges.c (hostile numbers) and examples/c/abi.c (the app-grade
#   ABI checks) statically, and abi.c dynamically too.
# The dynamic builds link libtah the way a distribution installs it:
#   lib/libtah.so.0.1.0        the library (SONAME libtah.so.0, set by build.rs)
#   lib/libtah.so.0 -> libtah.so.0.1.0   the runtime link, named by the SONAME
#   lib/libtah.so   -> libtah.so.0       the development link, for -ltah
# so the programs record NEEDED libtah.so.0 and find it through an rpath.
# Outputs: target/c-example/{math-static,math-shared,edges,abi,abi-static,lib/}.
#   examples/c/build.sh            (runs cargo build --release -p tah first)
#   TAH_NO_CARGO=1 examples/c/build.sh   (use the libraries already built)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
if [ "${TAH_NO_CARGO:-0}" != 1 ]; then
  cargo build --release -p tah --lib
fi
lib="$root/target/release"
out="$root/target/c-example"
mkdir -p "$out/lib"
CC="${CC:-gcc}"
CFLAGS="${CFLAGS:--O2 -g -Wall -Wextra -Werror -std=c11}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"
cp -f "$lib/libtah.so" "$out/lib/libtah.so.$version"
ln -sfn "libtah.so.$version" "$out/lib/libtah.so.0"
ln -sfn libtah.so.0 "$out/lib/libtah.so"
# Static: the archive holds the Rust runtime; the system libraries it needs.
$CC $CFLAGS -I include examples/c/math.c "$lib/libtah.a" -lpthread -ldl -lm -o "$out/math-static"
# Shared: -ltah through the development link; the rpath finds libtah.so.0.
$CC $CFLAGS -I include examples/c/math.c -L "$out/lib" -ltah -Wl,-rpath,"$out/lib" -o "$out/math-shared"
# Hostile numbers through the ABI (examples/c/check.sh runs it).
$CC $CFLAGS -I include examples/c/edges.c "$lib/libtah.a" -lpthread -ldl -lm -o "$out/edges"
# The app-grade ABI checks: shared (the full run) and static (under valgrind).
$CC $CFLAGS -pthread -I include examples/c/abi.c -L "$out/lib" -ltah -Wl,-rpath,"$out/lib" -lm -o "$out/abi"
$CC $CFLAGS -pthread -I include examples/c/abi.c "$lib/libtah.a" -lpthread -ldl -lm -o "$out/abi-static"
echo "built $out/{math-static,math-shared,edges,abi,abi-static} and $out/lib" >&2
