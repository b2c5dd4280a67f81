"""`tah serve` with a TaH model (the fixture with a byte tokenizer): the
per-request `think` extension, the `tah` object, and batched decoding of
sessions that think differently — the hard tokens of all of them run depth 2
in one pass — giving each request exactly what it gets alone."""

import json
import os
import threading

import pytest

# <|im_end|>: banned, so every answer runs to max_tokens.
NO_END = {"257": -100}
N = 24


@pytest.fixture(scope="session")
def tah_server(start):
    model = os.environ.get("TAH_SERVE_TAH_MODEL")
    if not model:
        pytest.fail("TAH_SERVE_TAH_MODEL is not set (scripts/serve-check.sh sets it)")
    return start("--ctx", "256", "--parallel", "4", model=model)


def complete(server, prompt, think, n=N):
    status, _, body = server.request("POST", "/v1/completions", {
        "model": "tah-tiny", "prompt": prompt, "max_tokens": n, "temperature": 0,
        "logit_bias": NO_END, "think": think, "tah_depths": True})
    assert status == 200, body
    return body["choices"][0]["text"], body["tah"], body["usage"]


def test_think_modes_and_the_tah_object(tah_server):
    for think in ["never", "always", "auto", "budget:0.3"]:
        text, t, usage = complete(tah_server, "twelve plus seven is", think)
        d = t["depths"]
        assert len(d) == usage["completion_tokens"] == N, think
        assert sum(t["tokens_per_depth"]) == N
        assert t["tokens_per_depth"][0] == d.count(1)
        assert t["hard_rate"] == pytest.approx(sum(x >= 2 for x in d) / N)
        if think == "never":
            assert d == [1] * N and all(p is None for p in t["probs"])
        elif think == "always":
            assert d == [2] * N
        else:
            # The decider ran on every token and sent some, not all, deeper
            # (the fixture's decider sends about half).
            assert all(p is not None and 0 <= p <= 1 for p in t["probs"]), think
            assert 0 < d.count(2) < N, (think, d)
            if think == "auto":
                # the file's threshold decides (continue iff p > threshold)
                cfg = os.path.join(os.environ["TAH_SERVE_TAH_CKPT"], "tah_config.json")
                with open(cfg) as f:
                    thr = json.load(f)["iter_decider_kwargs"]["threshold"]
                assert [x == 2 for x in d] == [p > thr for p in t["probs"]]


def test_sessions_thinking_differently_batch_exactly(tah_server):
    asks = [("one two three", "auto"), ("the cat sat", "always"), ("numbers: 4 8 15", "never"),
            ("hello there", "budget:0.3")]
    alone = [complete(tah_server, p, t)[:2] for p, t in asks]
    # Different modes give different depths, so the batch mixes depth-2 rows.
    assert len({tuple(a[1]["depths"]) for a in alone}) > 1
    got = [None] * len(asks)

    def go(i):
        got[i] = complete(tah_server, *asks[i])[:2]

    for _ in range(2):
        threads = [threading.Thread(target=go, args=(i,)) for i in range(len(asks))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        for i, (a, g) in enumerate(zip(alone, got)):
            assert g is not None, asks[i]
            assert g[0] == a[0], (asks[i], g[0], a[0])
            assert g[1]["depths"] == a[1]["depths"], asks[i]
            assert g[1]["probs"] == a[1]["probs"], asks[i]
