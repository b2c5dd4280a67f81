#!/usr/bin/env bash
# Builds examples/c/math.c against tah's C ABI twice: statically linked
# (target/release/libtah.a) and dynamically (target/release/libtah.so, found
# through an rpath). Outputs: target/c-example/math-static, math-shared.
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
mkdir -p "$out"
CC="${CC:-gcc}"
CFLAGS="${CFLAGS:--O2 -g -Wall -Wextra -Werror -std=c11}"
# Static: the archive holds the Rust runtime; the system libraries it needs.
$CC $CFLAGS -I include examples/c/math.c "$lib/libtah.a" -lpthread -ldl -lm -o "$out/math-static"
# Shared: link libtah.so by path and remember where it is.
$CC $CFLAGS -I include examples/c/math.c -L "$lib" -ltah -Wl,-rpath,"$lib" -o "$out/math-shared"
# Hostile numbers through the ABI (examples/c/check.sh runs it).
$CC $CFLAGS -I include examples/c/edges.c "$lib/libtah.a" -lpthread -ldl -lm -o "$out/edges"
echo "built $out/math-static, $out/math-shared and $out/edges" >&2
