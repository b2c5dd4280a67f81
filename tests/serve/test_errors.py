"""Bad requests get their 4xx and an OpenAI error object; the server stays up."""

import pytest

from conftest import CTX

CHAT = "/v1/chat/completions"
MSG = [{"role": "user", "content": "hi"}]


def chat(**fields):
    return {"model": "any", "messages": MSG, "max_tokens": 4, **fields}


# (path, body, status, param)
BAD = [
    (CHAT, "{not json", 400, None),
    (CHAT, "[1, 2]", 400, None),
    (CHAT, "", 400, None),
    (CHAT, {"model": "any"}, 400, "messages"),
    (CHAT, chat(messages=[]), 400, "messages"),
    (CHAT, chat(messages="hi"), 400, "messages"),
    (CHAT, chat(messages=[{"role": "user"}]), 400, "messages[0].content"),
    (CHAT, chat(messages=[{"role": "user", "content": 7}]), 400, "messages[0].content"),
    (CHAT, chat(messages=[{"role": "tool", "content": "x"}]), 400, "messages[0].role"),
    (CHAT, chat(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:,"}}]}]), 400, "messages[0].content[0]"),
    (CHAT, chat(n=2), 400, "n"),
    (CHAT, chat(tools=[{"type": "function", "function": {"name": "f"}}]), 400, "tools"),
    (CHAT, chat(tool_choice="required"), 400, "tool_choice"),
    (CHAT, chat(functions=[{"name": "f"}]), 400, "functions"),
    (CHAT, chat(response_format={"type": "json_object"}), 400, "response_format"),
    (CHAT, chat(logprobs=True), 400, "logprobs"),
    (CHAT, chat(temperature=-1), 400, "temperature"),
    (CHAT, chat(temperature=2.5), 400, "temperature"),
    (CHAT, chat(temperature="warm"), 400, "temperature"),
    (CHAT, chat(top_p=0), 400, "top_p"),
    (CHAT, chat(presence_penalty=3), 400, "presence_penalty"),
    (CHAT, chat(max_tokens=CTX + 1), 400, "max_tokens"),
    (CHAT, chat(max_tokens=0), 400, "max_tokens"),
    (CHAT, chat(max_tokens="4"), 400, "max_tokens"),
    (CHAT, chat(max_completion_tokens=CTX * 10), 400, "max_completion_tokens"),
    (CHAT, chat(stop=[f"s{i}" for i in range(17)]), 400, "stop"),
    (CHAT, chat(stop=[""]), 400, "stop"),
    (CHAT, chat(stop=7), 400, "stop"),
    (CHAT, chat(stream="yes"), 400, "stream"),
    (CHAT, chat(think="sometimes"), 400, "think"),
    (CHAT, chat(think="budget:2"), 400, "think"),
    (CHAT, chat(think=True), 400, "think"),
    (CHAT, chat(tah_depths="yes"), 400, "tah_depths"),
    (CHAT, chat(logit_bias={"99999999": 1}), 400, "logit_bias"),
    (CHAT, chat(logit_bias={"word": 1}), 400, "logit_bias"),
    (CHAT, chat(logit_bias={"5": 101}), 400, "logit_bias"),
    (CHAT, chat(logit_bias={"5": "high"}), 400, "logit_bias"),
    (CHAT, chat(logit_bias=[5]), 400, "logit_bias"),
    (CHAT, chat(model=5), 400, "model"),
    ("/v1/completions", {"model": "any"}, 400, "prompt"),
    ("/v1/completions", {"prompt": ["a", "b"]}, 400, "prompt"),
    ("/v1/completions", {"prompt": [1, 2, 3]}, 400, "prompt"),
    ("/v1/completions", {"prompt": "a", "echo": True}, 400, "echo"),
    ("/v1/completions", {"prompt": "a", "logprobs": 2}, 400, "logprobs"),
    ("/v1/completions", {"prompt": "a", "best_of": 3}, 400, "best_of"),
]


def error_object(body):
    assert isinstance(body, dict), body
    e = body["error"]
    assert isinstance(e["message"], str) and e["message"]
    assert set(e) == {"message", "type", "param", "code"}
    return e


@pytest.mark.parametrize("path,body,status,param", BAD,
                         ids=[f"{i}-{p}" for i, (_, _, _, p) in enumerate(BAD)])
def test_bad_request(server, path, body, status, param):
    got, _, reply = server.request("POST", path, body)
    assert got == status, reply
    e = error_object(reply)
    assert e["type"] == "invalid_request_error"
    assert e["param"] == param
    assert e["code"] is None


def test_unsupported_says_so(server):
    _, _, reply = server.request("POST", CHAT, chat(tools=[{"type": "function"}]))
    assert "not supported" in reply["error"]["message"]


def test_prompt_longer_than_the_context(server):
    # Refused by the engine (the HTTP side cannot count tokens): still a 400.
    long = "one two three four five six seven eight nine ten " * 120
    got, _, reply = server.request("POST", "/v1/completions", {"prompt": long, "max_tokens": 4})
    assert got == 400, reply
    error_object(reply)
    got, _, reply = server.request("POST", CHAT, chat(stream=True, messages=[
        {"role": "user", "content": long}]))
    assert got == 400, reply


def test_oversized_body(server):
    # Above the default --max-body (1 MiB): 413, and the client gets to read it.
    body = '{"model": "any", "messages": [{"role": "user", "content": "' + "x" * (1 << 20) + '"}]}'
    got, _, reply = server.request("POST", CHAT, body)
    assert got == 413
    assert error_object(reply)["type"] == "invalid_request_error"


def test_routes(server):
    got, _, reply = server.request("GET", "/v1/nothing")
    assert got == 404 and error_object(reply)
    got, _, reply = server.request("POST", "/nothing", {})
    assert got == 404 and error_object(reply)
    got, _, reply = server.request("GET", CHAT)
    assert got == 405 and error_object(reply)
    got, _, reply = server.request("DELETE", "/v1/models")
    assert got == 405 and error_object(reply)
    # No --cors: no preflight answers, no CORS headers.
    got, headers, _ = server.request("OPTIONS", CHAT, headers={"Origin": "http://example.test"})
    assert got == 405
    _, headers, _ = server.request("GET", "/health")
    assert "access-control-allow-origin" not in {k.lower() for k in headers}


def test_still_healthy(server):
    got, _, reply = server.request("GET", "/health")
    assert (got, reply) == (200, {"status": "ok"})
    got, _, reply = server.request("POST", CHAT, chat(temperature=0))
    assert got == 200 and reply["choices"][0]["message"]["content"]
