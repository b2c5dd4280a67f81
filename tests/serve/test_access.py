"""--api-key and --cors; the page and its assets are public."""

import openai
import pytest

KEY = "s3cret-key"
ORIGIN = "http://tutor.example"
MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="session")
def auth_server(start):
    return start("--ctx", "512", "--parallel", "1", "--api-key", KEY, "--cors", ORIGIN)


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def test_health_needs_no_key(auth_server):
    got, _, reply = auth_server.request("GET", "/health")
    assert (got, reply) == (200, {"status": "ok"})


@pytest.mark.parametrize("headers", [
    {}, bearer("wrong"), bearer(KEY + "x"), bearer(KEY[:-1]), {"Authorization": KEY},
    {"Authorization": f"Basic {KEY}"}, bearer(""),
])
def test_api_needs_the_key(auth_server, headers):
    for method, path, body in [("GET", "/v1/models", None),
                               ("POST", "/v1/chat/completions", {"messages": MSG}),
                               ("POST", "/v1/completions", {"prompt": "a"}),
                               ("GET", "/v1/unknown", None)]:
        got, h, reply = auth_server.request(method, path, body, headers=headers)
        assert got == 401, (path, reply)
        assert reply["error"]["code"] == "invalid_api_key"
        assert reply["error"]["type"] == "invalid_request_error"
        assert h.get("www-authenticate") == "Bearer"


def test_the_key_opens_the_api(auth_server):
    got, _, reply = auth_server.request("GET", "/v1/models", headers=bearer(KEY))
    assert got == 200 and reply["object"] == "list"
    c = openai.OpenAI(base_url=auth_server.url + "/v1", api_key=KEY, max_retries=0)
    r = c.chat.completions.create(model="any", messages=MSG, temperature=0, max_tokens=4)
    assert r.choices[0].message.content
    bad = openai.OpenAI(base_url=auth_server.url + "/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="any", messages=MSG, max_tokens=4)


def test_page_is_public(auth_server):
    got, h, page = auth_server.request("GET", "/")
    assert got == 200 and h["content-type"].startswith("text/html")
    assert b"<html" in page.lower()
    got, h, _ = auth_server.request("GET", "/assets/tutor.js")
    assert got == 200 and "javascript" in h["content-type"]
    assert h.get("x-content-type-options") == "nosniff"
    # A page path that does not exist is not public: no key, no answer.
    got, _, _ = auth_server.request("GET", "/assets/../../etc/passwd")
    assert got == 401


def test_cors(auth_server):
    got, h, _ = auth_server.request("OPTIONS", "/v1/chat/completions", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert got == 204
    assert h["access-control-allow-origin"] == ORIGIN
    assert "authorization" in h["access-control-allow-headers"]
    assert "content-type" in h["access-control-allow-headers"]
    assert "POST" in h["access-control-allow-methods"]
    # Every answer carries the origin, errors too (the page must read them).
    for headers in ({}, bearer(KEY)):
        _, h, _ = auth_server.request("GET", "/v1/models", headers={"Origin": ORIGIN, **headers})
        assert h["access-control-allow-origin"] == ORIGIN


def test_no_key_server_takes_any(server):
    got, _, _ = server.request("GET", "/v1/models")
    assert got == 200
    got, _, _ = server.request("GET", "/v1/models", headers=bearer("whatever"))
    assert got == 200
    got, h, _ = server.request("GET", "/")
    assert got == 200 and h["content-type"].startswith("text/html")
