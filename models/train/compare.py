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


KINDS = ["digit", "operator", "newline", "end", "word"]


def kind_of(t):
    if t.strip().isdigit():
        return "digit"
    if t.strip() in ("+", "-", "*", "/", "=", "") and "\n" not in t:
        return "operator"  # operators, '=' and the bare space before a number
    if "\n" in t:
        return "newline"
    if t.startswith("<|"):
        return "end"
    return "word"


def load(paths):
    """FILE or FILE+FILE+… (workers over parts of one run); merged by problem index."""
    recs = {}
    for p in paths.split("+"):
        for x in open(p):
            r = json.loads(x)
            recs.setdefault(r["i"], r)
    return [recs[i] for i in sorted(recs)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer")
    ap.add_argument("--sample", type=int, default=0)
    ap.add_argument("--n", type=int, help="use the first N problems of every file")
    ap.add_argument("--common", action="store_true", help="only problems present in every run")
    ap.add_argument("runs", nargs="+")
    a = ap.parse_args()
    runs = [(r.rsplit("=", 1)[0], load(r.rsplit("=", 1)[1])) for r in a.runs]
    if a.common:
        ids = set.intersection(*[{r["i"] for r in x} for _, x in runs])
        runs = [(lab, [r for r in x if r["i"] in ids]) for lab, x in runs]
    n = a.n or max(len(x) for _, x in runs)
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
                    kind = kind_of(tok.decode([r["tokens"][i]], skip_special_tokens=False))
                    tot[kind] += 1
                    cnt[kind] += r["depths"][i - 1] >= 2
            allh = sum(cnt.values())
            print(f"\n{label}: generated tokens predicted by a depth-2 pass, by kind"
                  " (depth-2 / all of that kind, share of all depth-2 predictions):")
            for kd in KINDS:
                print(f"    {kd:9s} {cnt[kd]:5d} / {tot[kd]:5d} ({cnt[kd] / max(tot[kd], 1):6.1%})"
                      f"  share {cnt[kd] / max(allh, 1):6.1%}")
            r = next((x for x in rs if x["i"] == a.sample), rs[0])
            out = [tok.decode([r["tokens"][0]])]
            for i in range(1, len(r["tokens"])):
                t = tok.decode([r["tokens"][i]], skip_special_tokens=False)
                out.append(f"[{t}]" if r["depths"][i - 1] >= 2 else t)
            print(f"sample (problem {r['i']}, gold {r['gold']}, pred {r['pred']}):\n    "
                  + "".join(out).replace("\n", "\\n"))


if __name__ == "__main__":
    main()
