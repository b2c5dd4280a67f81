#!/usr/bin/env bash
# rayon against the spin pool (TAH_POOL), interleaved: per round, per file and
# thread count, both pools one after the other (the order alternates by round).
# Prints one JSON line per test (the round and pool added) to stdout; summarize
# with bench/threads-table.py.
# usage: bench/threads.sh ROUNDS FILE.tah...   (env: THREADS="1 2", ARGS)
set -euo pipefail
rounds=$1; shift
tah=${TAH:-target/release/tah}
for r in $(seq 1 "$rounds"); do
  if ((r % 2)); then pools="rayon spin"; else pools="spin rayon"; fi
  for f in "$@"; do
    for t in ${THREADS:-1 2}; do
      for p in $pools; do
        TAH_POOL=$p "$tah" bench -m "$f" ${ARGS:--p 128 -n 64 -r 5} -t "$t" --json |
          sed "s/^{/{\"round\":$r,\"pool\":\"$p\",/"
      done
    done
  done
done
