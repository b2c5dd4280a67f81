#!/usr/bin/env python3
"""Comparison table (markdown) from eval_engine.py result files, plus a sample
answer with the tokens that were *predicted by a depth-2 pass* in [brackets]
(the engine's depths[i] is the depth of the forward that fed token i, so the
token produced by that forward is token i+1).

    python compare.py --tokenizer HF_DIR/tokenizer.json LABEL=FILE.jsonl ...
"""
import argparse
import collections
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from eval_engine import wilson  # noqa: E402


def load(path):
    return [json.loads(x) for x in open(path)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer")
    ap.add_argument("--sample", type=int, default=0)
    ap.add_argument("--n", type=int, help="use the first N problems of every file")
    ap.add_argument("runs", nargs="+")
    a = ap.parse_args()
    runs = [(r.split("=", 1)[0], load(r.split("=", 1)[1])) for r in a.runs]
    n = a.n or min(len(x) for _, x in runs)
    print(f"| model | think | n | accuracy | Wilson 95% | hard rate (generated) | hard rate (prompt) | mean generated tokens | decode tok/s (median) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, rs in runs:
        rs = rs[:n]
        k = sum(r["correct"] for r in rs)
        lo, hi = wilson(k, len(rs))
        gen = sum(len(r["depths"]) for r in rs)
        hard = sum(sum(1 for d in r["depths"] if d >= 2) for r in rs)
        ph = sum(r["prompt_hard"] or 0 for r in rs)
        pt = sum(r["prompt_tokens"] or 0 for r in rs)
        tps = sorted(r["decode_tps"] for r in rs if r["decode_tps"])
        name, _, think = label.partition(":")
        print(f"| {name} | {think or '-'} | {len(rs)} | {k / len(rs):.1%} ({k}) | {lo:.1%}–{hi:.1%} |"
              f" {hard / max(gen, 1):.1%} | {ph / max(pt, 1):.1%} | {gen / len(rs):.1f} |"
              f" {tps[len(tps) // 2]:.1f} |")
    if a.tokenizer:
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(a.tokenizer)
        for label, rs in runs:
            if not any(d >= 2 for r in rs for d in r["depths"]):
                continue
            cnt = collections.Counter()
            tot = collections.Counter()
            for r in rs[:n]:
                for i in range(1, len(r["tokens"])):
                    kind = "digit" if tok.decode([r["tokens"][i]]).strip().isdigit() else "other"
                    tot[kind] += 1
                    cnt[kind] += r["depths"][i - 1] >= 2
            print(f"\n{label}: tokens predicted at depth 2: digits {cnt['digit']}/{tot['digit']}"
                  f" ({cnt['digit'] / max(tot['digit'], 1):.1%}), other {cnt['other']}/{tot['other']}"
                  f" ({cnt['other'] / max(tot['other'], 1):.1%}); share of depth-2 predictions that are digits"
                  f" {cnt['digit'] / max(cnt['digit'] + cnt['other'], 1):.1%}")
            r = rs[a.sample]
            out = [tok.decode([r["tokens"][0]])]
            for i in range(1, len(r["tokens"])):
                t = tok.decode([r["tokens"][i]])
                out.append(f"[{t}]" if r["depths"][i - 1] >= 2 else t)
            print(f"sample (problem {r['i']}, gold {r['gold']}, pred {r['pred']}):\n    "
                  + "".join(out).replace("\n", "\\n"))


if __name__ == "__main__":
    main()
