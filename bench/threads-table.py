#!/usr/bin/env python3
"""Markdown table from bench/threads.sh's JSON lines (stdin): per file, test and
thread count, the median over rounds of each round's median t/s, [min–max]."""
import json, os, statistics, sys
from collections import defaultdict

runs = defaultdict(list)
for line in sys.stdin:
    if line.startswith("{"):
        r = json.loads(line)
        key = (os.path.basename(r["model"]), r["test"], r["threads"])
        runs[key, r["pool"]].append(r["tokens_per_s"]["median"])

def cell(v):
    return f"{statistics.median(v):.1f} [{min(v):.1f}–{max(v):.1f}]" if v else "–"

print("| file | test | -t | rayon t/s | spin t/s | spin/rayon | rounds |")
print("|---|---|---|---|---|---|---|")
for key in sorted({k for k, _ in runs}):
    a, b = runs[key, "rayon"], runs[key, "spin"]
    ratio = statistics.median(b) / statistics.median(a) if a and b else float("nan")
    print(f"| {key[0]} | {key[1]} | {key[2]} | {cell(a)} | {cell(b)} | {ratio:.3f} | {len(a)} |")
