"""The API as the official `openai` Python client uses it."""

import json
import os
import subprocess
import threading

import openai
import pytest

from conftest import NO_EOS

MSG = [{"role": "user", "content": "What is 2+2?"}]


def extra(obj, name):
    """A field outside OpenAI's schema (the `tah` object), as the client keeps it."""
    return (obj.model_extra or {}).get(name)


def tah_run_prompt_ids(*args):
    """The prompt ids `tah run` feeds for the same prompt (the CLI's --json)."""
    out = subprocess.run(
        [os.environ["TAH_BIN"], "run", "-m", os.environ["TAH_SERVE_MODEL"], "-t", "1",
         "-n", "1", "--temp", "0", "--json", *args],
        check=True, capture_output=True, text=True).stdout
    return json.loads(out)["prompt_ids"]


def test_models(client, model_id):
    assert [m.id for m in client.models.list()] == [model_id]
    assert client.models.retrieve(model_id).id == model_id
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_chat_streaming_equals_plain(client):
    r = client.chat.completions.create(model="any", messages=MSG, temperature=0, max_tokens=24)
    c = r.choices[0]
    assert r.object == "chat.completion" and c.message.role == "assistant"
    assert c.message.content and c.finish_reason in ("stop", "length")
    assert 0 < r.usage.completion_tokens <= 24
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    # prompt_tokens: the rendered chat, as `tah run --chat` tokenizes it.
    assert r.usage.prompt_tokens == len(tah_run_prompt_ids("--chat", "-p", MSG[0]["content"]))
    assert r.usage.prompt_tokens_details.cached_tokens <= r.usage.prompt_tokens

    chunks = list(client.chat.completions.create(
        model="any", messages=MSG, temperature=0, max_tokens=24, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(ch.object == "chat.completion.chunk" for ch in chunks)
    assert len({ch.id for ch in chunks}) == 1
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == c.message.content
    ends = [ch for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert len(ends) == 1 and ends[0].choices[0].finish_reason == c.finish_reason
    assert extra(ends[0], "tah")["tokens_per_depth"]
    # include_usage: one more chunk, with no choices, carries the usage.
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.prompt_tokens == r.usage.prompt_tokens
    assert last.usage.completion_tokens == r.usage.completion_tokens
    assert all(ch.usage is None for ch in chunks[:-1])


def test_stream_without_usage(client):
    chunks = list(client.chat.completions.create(
        model="any", messages=MSG, temperature=0, max_tokens=4, stream=True))
    assert chunks[-1].choices[0].finish_reason
    assert all(ch.usage is None for ch in chunks)


def test_length_and_token_counts(client):
    r = client.chat.completions.create(
        model="any", messages=MSG, temperature=0, max_tokens=10, logit_bias=NO_EOS)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 10
    # tah_depths: one chunk per generated token, even one with no text yet.
    chunks = list(client.chat.completions.create(
        model="any", messages=MSG, temperature=0, max_tokens=10, logit_bias=NO_EOS,
        stream=True, extra_body={"tah_depths": True}))
    tokens = [ch for ch in chunks if ch.choices and not ch.choices[0].finish_reason
              and ch.choices[0].delta.role is None]
    assert len(tokens) == 10
    assert "".join(ch.choices[0].delta.content for ch in tokens) == r.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "length"


def test_completions(client):
    prompt = "The capital of France is"
    r = client.completions.create(model="any", prompt=prompt, temperature=0, max_tokens=8)
    c = r.choices[0]
    assert r.object == "text_completion" and c.text and c.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens == len(tah_run_prompt_ids("-p", prompt))
    assert 0 < r.usage.completion_tokens <= 8
    chunks = list(client.completions.create(
        model="any", prompt=prompt, temperature=0, max_tokens=8, stream=True,
        stream_options={"include_usage": True}))
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == c.text
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == r.usage.prompt_tokens
    # An array of one string is the same prompt.
    r2 = client.completions.create(model="any", prompt=[prompt], temperature=0, max_tokens=8)
    assert r2.choices[0].text == c.text


def test_text_parts_and_system(client):
    plain = client.chat.completions.create(model="any", messages=MSG, temperature=0, max_tokens=12)
    parts = client.chat.completions.create(
        model="any", temperature=0, max_tokens=12,
        messages=[{"role": "user", "content": [{"type": "text", "text": MSG[0]["content"]}]}])
    assert parts.choices[0].message.content == plain.choices[0].message.content
    sys = client.chat.completions.create(
        model="any", temperature=0, max_tokens=12,
        messages=[{"role": "system", "content": "Answer in French."}, *MSG])
    assert sys.usage.prompt_tokens != plain.usage.prompt_tokens


def test_stop_string(client):
    r = client.chat.completions.create(
        model="any", messages=MSG, temperature=0, max_tokens=24, logit_bias=NO_EOS)
    text = r.choices[0].message.content
    words = text.split()
    assert len(words) >= 3, text
    stop = " " + words[2]
    cut = client.chat.completions.create(
        model="any", messages=MSG, temperature=0, max_tokens=24, logit_bias=NO_EOS, stop=[stop])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == text[:text.index(stop)]


def test_seed_repeats(client):
    def once():
        return client.chat.completions.create(
            model="any", messages=MSG, temperature=1.0, seed=1234, max_tokens=16
        ).choices[0].message.content
    assert once() == once()


def test_penalties_accepted(client):
    r = client.chat.completions.create(
        model="any", messages=MSG, temperature=0, max_tokens=8,
        presence_penalty=1.5, frequency_penalty=0.5)
    assert r.choices[0].message.content


def test_tah_object(client):
    r = client.chat.completions.create(
        model="any", messages=MSG, temperature=0, max_tokens=8, logit_bias=NO_EOS,
        extra_body={"think": "never", "tah_depths": True})
    t = extra(r, "tah")
    n = r.usage.completion_tokens
    assert n == 8
    assert t["depths"] == [1] * n and len(t["probs"]) == n
    assert sum(t["tokens_per_depth"]) == n and t["hard_rate"] == 0
    # Without tah_depths: the summary only.
    r = client.chat.completions.create(model="any", messages=MSG, temperature=0, max_tokens=4)
    assert set(extra(r, "tah")) == {"tokens_per_depth", "hard_rate"}


def test_think_on_a_plain_model(client):
    # SmolLM2 has no TaH parts: every think mode runs depth 1 only, as
    # `tah run --think always` does on a plain model; the answer says so.
    for think in ("always", "auto", "budget:0.5"):
        r = client.chat.completions.create(
            model="any", messages=MSG, temperature=0, max_tokens=6, logit_bias=NO_EOS,
            extra_body={"think": think, "tah_depths": True})
        t = extra(r, "tah")
        assert t["depths"] == [1] * 6, think
        assert t["hard_rate"] == 0


def test_streamed_depths(client):
    chunks = list(client.chat.completions.create(
        model="any", messages=MSG, temperature=0, max_tokens=6, logit_bias=NO_EOS, stream=True,
        extra_body={"think": "never", "tah_depths": True}))
    body = [ch for ch in chunks[1:] if ch.choices and not ch.choices[0].finish_reason]
    assert len(body) == 6
    for ch in body:
        assert extra(ch, "tah") == {"depth": 1, "prob": None}
    final = extra(chunks[-1], "tah")
    assert final["depths"] == [1] * 6 and final["tokens_per_depth"][0] == 6


PROMPTS = ["Name a colour.", "What is the capital of Italy?", "Say hello in Spanish.",
           "What is 3 times 5?"]


def test_greedy_alone_and_together_agree(client):
    """Greedy answers do not depend on what runs beside them or ran before in
    the same session slot (a reused cached prefix): the server computes every
    token row by row (`Batch::set_exact`), so an answer is a function of its
    prompt only. (`tah run` prefills with panel products, whose rounding
    differs: its greedy text may differ after a near-tie, so it is not the
    reference here.)"""
    def ask(p, n, out, i):
        chunks = client.chat.completions.create(
            model="any", messages=[{"role": "user", "content": p}], temperature=0,
            max_tokens=n, stream=True)
        out[i] = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)

    def together(prompts, n):
        out = [None] * len(prompts)
        threads = [threading.Thread(target=ask, args=(p, n, out, i)) for i, p in enumerate(prompts)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        return out

    def alone(prompts, n):
        out = [None] * len(prompts)
        for i, p in enumerate(prompts):
            ask(p, n, out, i)
        return out

    want = alone(PROMPTS, 24)
    assert len(set(want)) == len(PROMPTS) and all(want)
    # Other prompts in every slot first (their caches share the system prompt).
    together([f"Give me a word that rhymes with number {i}." for i in range(8)], 8)
    assert together(PROMPTS, 24) == want
    assert alone(PROMPTS, 24) == want
    assert together(PROMPTS[::-1], 24) == want[::-1]


def test_client_side_errors(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="any", messages=MSG, n=2)
    assert e.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="any", messages=MSG,
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    assert "not supported" in e.value.body["message"]
