#!/usr/bin/env bash
# Cross-tests the aarch64 kernels (src/kernels/aarch64.rs) under qemu-user on
# three emulated CPUs, one per table:
#   cortex-a72 (Raspberry Pi 4: NEON only)   -> selects `neon`
#   cortex-a76 (FEAT_DotProd)                -> selects `dotprod`
#   max        (FEAT_DotProd + FEAT_I8MM)    -> selects `i8mm`
# Each run executes the lib's `kernels` unit tests: every table the emulated
# CPU supports against the generic table, plus a check of the selected table.
#
# Installs nothing. Needs: rustup target aarch64-unknown-linux-gnu, and the
# Debian/Ubuntu packages gcc-aarch64-linux-gnu, libc6-dev-arm64-cross,
# qemu-user (for qemu-aarch64).
#
# Usage: scripts/test-aarch64-kernels.sh [extra cargo test args, e.g. --release]
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=aarch64-unknown-linux-gnu
SYSROOT=${AARCH64_SYSROOT:-/usr/aarch64-linux-gnu}
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER:-aarch64-linux-gnu-gcc}
unset TAH_KERNELS

for tool in "$CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER" qemu-aarch64; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done

# Build once (no runner needed for --no-run).
cargo test --target "$TARGET" --lib "$@" --no-run

status=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for pair in cortex-a72:neon cortex-a76:dotprod max:i8mm; do
    cpu=${pair%%:*}
    want=${pair#*:}
    echo "=== qemu-aarch64 -cpu $cpu (expect kernels: $want)"
    start=$(date +%s%N)
    set +e
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L $SYSROOT -cpu $cpu" \
        TAH_EXPECT_KERNELS="$want" \
        cargo test --target "$TARGET" --lib "$@" kernels -- --nocapture >"$log" 2>&1
    rc=$?
    set -e
    end=$(date +%s%N)
    if [ "$rc" -eq 0 ]; then
        grep -E "aarch64 kernels:|all types match|^test |test result:" "$log" || true
    else
        cat "$log"
        status=1
    fi
    ms=$(( (end - start) / 1000000 ))
    printf '=== -cpu %s: exit %d, %d.%03d s\n' "$cpu" "$rc" $((ms / 1000)) $((ms % 1000))
done
exit $status
