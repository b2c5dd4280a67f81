#!/usr/bin/env python3
"""Evaluates a model through OUR engine: `tah run --json --temp 0 --chat` per
problem of a GSM8K-format jsonl (answer ends in `#### N`); the prediction is the
last number in the generated text. Prints accuracy with a Wilson 95% interval,
the hard-token rate of the generated tokens, and tokens/s; writes per-problem
results as jsonl.

    python eval_engine.py --tah target/release/tah -m model.tah --data data/test.jsonl \
        --think auto --out results.jsonl [--limit 200] [-n 96]
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys
import time

NUM = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def last_number(text):
    m = NUM.findall(text)
    if not m:
        return None
    s = m[-1].replace(",", "").rstrip(".")
    try:
        v = float(s)
    except ValueError:
        return None
    return int(v) if v == int(v) else v


def wilson(k, n, z=1.96):
    if n == 0:
        return (0.0, 0.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (c - h, c + h)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tah", default="target/release/tah")
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--think", default="auto")
    ap.add_argument("--threshold", type=float)
    ap.add_argument("-n", type=int, default=96)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--start", type=int, default=0, help="first problem (to split a run over workers)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    ap.add_argument("--label", default="")
    ap.add_argument("--summary-only", action="store_true", help="summarize --out, run nothing")
    a = ap.parse_args()
    rows = [json.loads(x) for x in open(a.data)]
    if a.limit:
        rows = rows[:a.limit]
    done = []
    if a.out and os.path.exists(a.out):  # resume
        done = [json.loads(x) for x in open(a.out)]
    if a.summary_only:
        summarize(done[:len(rows)], a.label or a.model, a.think)
        return
    outf = open(a.out, "a") if a.out else None
    t0 = time.time()
    for i, row in enumerate(rows):
        if i < a.start + len(done):
            continue
        cmd = [a.tah, "run", "-m", a.model, "--chat", "-p", row["question"], "--temp", "0",
               "-n", str(a.n), "--json", "--think", a.think, "-t", str(a.threads)]
        if a.threshold is not None:
            cmd += ["--threshold", str(a.threshold)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"engine failed on problem {i}: {p.stderr}")
        g = json.loads(p.stdout)
        gold = last_number(row["answer"].split("####")[-1])
        pred = last_number(g["text"])
        depths = g.get("depths", [])
        st = g.get("stats", {})
        rec = {"i": i, "gold": gold, "pred": pred, "correct": pred == gold, "text": g["text"],
               "depths": depths, "tokens": g.get("tokens", []),
               "decode_tps": st.get("decode_tokens_per_s"),
               "prefill_tps": st.get("prefill_tokens_per_s"),
               "generated": st.get("generated_tokens"),
               "prompt_hard": st.get("prompt_hard_tokens"),
               "prompt_tokens": st.get("prompt_tokens")}
        done.append(rec)
        if outf:
            outf.write(json.dumps(rec) + "\n")
            outf.flush()
        if i % 10 == 0:
            k = sum(r["correct"] for r in done)
            print(f"{a.label} {i + 1}/{len(rows)} acc {k}/{len(done)} "
                  f"{time.time() - t0:.0f}s", file=sys.stderr, flush=True)
    summarize(done, a.label or a.model, a.think)


def summarize(done, label, think):
    n = len(done)
    k = sum(r["correct"] for r in done)
    lo, hi = wilson(k, n)
    gen = sum(len(r["depths"]) for r in done)
    hard = sum(sum(1 for d in r["depths"] if d >= 2) for r in done)
    ph = sum(r["prompt_hard"] or 0 for r in done)
    pt = sum(r["prompt_tokens"] or 0 for r in done)
    tps = sorted(r["decode_tps"] for r in done if r["decode_tps"])
    res = {"label": label, "think": think, "n": n, "correct": k, "accuracy": k / max(n, 1),
           "wilson95": [lo, hi], "generated_tokens": gen,
           "hard_rate_generated": hard / max(gen, 1), "hard_rate_prompt": ph / max(pt, 1),
           "decode_tokens_per_s_median": tps[len(tps) // 2] if tps else None}
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
