#!/usr/bin/env python3
"""Throughput of `tah serve` (or any OpenAI-compatible server, e.g. llama-server)
with 1, 2, 4, 8 concurrent greedy streams against the same requests one after
another. Standard library only.

    bench/serve-bench.py URL [--tokens 128] [--streams 1,2,4,8] [--json]

Each stream asks a different question with temperature 0 and `max_tokens`
tokens (`ignore_eos` is sent for llama-server; tah's answers are long enough
at 128). Reports, per stream count: wall time of the concurrent run, of the
same requests sequentially, generated tokens/s both ways, the speed-up, and
the median first-token latency of the concurrent run (streaming).
"""
import argparse, json, statistics, sys, threading, time, urllib.request

QUESTIONS = [
    "Explain step by step how to add the fractions 3/4 and 5/6.",
    "A shop sells pencils at 35 cents each. How much do 12 pencils cost? Show your working.",
    "Write a short story about a robot who learns to bake bread.",
    "What are the prime numbers below 50, and how do you check each one?",
    "Describe how the water cycle works, in simple words for a child.",
    "A train leaves at 9:40 and arrives at 13:15. How long is the trip? Explain.",
    "List ten animals that live in the ocean and one fact about each.",
    "How do you find the area of a triangle? Give two worked examples.",
]


def stream(url, q, tokens, out):
    body = json.dumps({
        "model": "m", "stream": True, "temperature": 0, "max_tokens": tokens,
        "ignore_eos": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": q}],
    }).encode()
    req = urllib.request.Request(url + "/v1/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    first, n = None, 0
    with urllib.request.urlopen(req, timeout=600) as r:
        for line in r:
            line = line.strip()
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            c = json.loads(line[6:])
            if c.get("usage"):
                n = c["usage"]["completion_tokens"]
            if first is None and c.get("choices") and c["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - t0
    out.append((n, first or 0.0))


def concurrent(url, k, tokens):
    out, ts = [], []
    t0 = time.perf_counter()
    for i in range(k):
        t = threading.Thread(target=stream, args=(url, QUESTIONS[i % len(QUESTIONS)], tokens, out))
        t.start()
        ts.append(t)
    for t in ts:
        t.join()
    return time.perf_counter() - t0, out


def sequential(url, k, tokens):
    out = []
    t0 = time.perf_counter()
    for i in range(k):
        stream(url, QUESTIONS[i % len(QUESTIONS)], tokens, out)
    return time.perf_counter() - t0, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--streams", default="1,2,4,8")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    url = a.url.rstrip("/")
    stream(url, QUESTIONS[0], 8, [])  # warm-up
    rows = []
    for k in map(int, a.streams.split(",")):
        tc, oc = concurrent(url, k, a.tokens)
        ts, os_ = sequential(url, k, a.tokens)
        nc, ns = sum(n for n, _ in oc), sum(n for n, _ in os_)
        row = {
            "streams": k, "tokens": nc, "concurrent_s": round(tc, 2), "sequential_s": round(ts, 2),
            "concurrent_tps": round(nc / tc, 1), "sequential_tps": round(ns / ts, 1),
            "speedup": round((nc / tc) / (ns / ts), 2),
            "first_token_ms_median": round(1000 * statistics.median(f for _, f in oc), 1),
            "first_token_ms_max": round(1000 * max(f for _, f in oc), 1),
        }
        rows.append(row)
        if not a.json:
            print(f"{k} streams: {row['concurrent_tps']} t/s together, {row['sequential_tps']} t/s one after another"
                  f" -> {row['speedup']}x; first token median {row['first_token_ms_median']} ms,"
                  f" max {row['first_token_ms_max']} ms", flush=True)
    if a.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    sys.exit(main())
