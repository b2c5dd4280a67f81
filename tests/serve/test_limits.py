"""Disconnects, a full queue, the time limit and a bounded load."""

import json
import re
import socket
import threading
import time

import pytest

from conftest import NO_EOS

CHAT = "/v1/chat/completions"
# SmolLM2 decodes about 200 tokens/s on two cores: 2000 tokens take 8 s or
# more, far longer than any of the "prompt" limits below.
LONG = 2000


def chat(content="Count from one to a thousand.", **fields):
    return {"model": "any", "messages": [{"role": "user", "content": content}],
            "temperature": 0, "logit_bias": NO_EOS, **fields}


@pytest.fixture(scope="session")
def narrow_server(start):
    """One slot, one waiting job: a long job holds the server."""
    return start("--ctx", "2048", "--parallel", "1", "--queue", "1")


@pytest.fixture(scope="session")
def timeout_server(start):
    return start("--ctx", "2048", "--parallel", "1", "--timeout", "1")


def open_stream(server, body):
    """Sends a streaming request on a raw socket; returns it after the
    response headers and the first few events have arrived."""
    s = socket.create_connection((server.host, server.port), timeout=30)
    data = json.dumps(body).encode()
    s.sendall(b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              + f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    seen = b""
    while seen.count(b"data: ") < 4:
        chunk = s.recv(4096)
        assert chunk, seen
        seen += chunk
    assert seen.startswith(b"HTTP/1.1 200"), seen[:200]
    return s


def timed_short(server, **fields):
    t = time.time()
    got, _, reply = server.request("POST", CHAT, chat("Say hi.", max_tokens=8, **fields))
    return got, reply, time.time() - t


def log_line_of_cancel(server, limit=10):
    end = time.time() + limit
    while time.time() < end:
        m = re.findall(r"POST /v1/chat/completions \d+ (\d+) tok .*client gone", server.text())
        if m:
            return int(m[-1])
        time.sleep(0.05)
    return None


def test_disconnect_frees_the_slot(narrow_server):
    for _ in range(2):
        s = open_stream(narrow_server, chat(max_tokens=LONG, stream=True))
        s.close()
        # With one slot, this answer can only come this soon if the long
        # job was cancelled when its client went away.
        got, reply, took = timed_short(narrow_server)
        assert got == 200, reply
        assert took < 4, f"{took:.1f} s: the disconnected job kept its slot"
    tokens = log_line_of_cancel(narrow_server)
    assert tokens is not None and tokens < LONG, narrow_server.text()


def test_disconnect_while_not_streaming(narrow_server):
    s = socket.create_connection((narrow_server.host, narrow_server.port), timeout=30)
    data = json.dumps(chat(max_tokens=LONG)).encode()
    s.sendall(b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              + f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    time.sleep(0.5)
    s.close()
    got, reply, took = timed_short(narrow_server)
    assert got == 200, reply
    assert took < 4, f"{took:.1f} s: the abandoned job kept its slot"


def test_full_queue_is_503(narrow_server):
    results = []

    def one():
        results.append(narrow_server.request("POST", CHAT, chat(max_tokens=250)))

    threads = [threading.Thread(target=one) for _ in range(5)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join(120)
    statuses = sorted(r[0] for r in results)
    assert len(results) == 5
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(503) >= 2, statuses  # one slot + one queue place
    assert statuses.count(200) >= 1, statuses
    for got, headers, reply in results:
        if got == 503:
            assert headers.get("retry-after") == "1"
            assert reply["error"]["type"] == "server_error"
        else:
            assert reply["choices"][0]["finish_reason"] == "length"
            assert reply["usage"]["completion_tokens"] == 250
    got, _, _ = narrow_server.request("GET", "/health")
    assert got == 200
    got, reply, _ = timed_short(narrow_server)
    assert got == 200, reply


def test_time_limit(timeout_server):
    t = time.time()
    got, _, reply = timeout_server.request("POST", CHAT, chat(max_tokens=LONG))
    took = time.time() - t
    assert got == 200, reply
    assert reply["choices"][0]["finish_reason"] == "length"
    assert 0 < reply["usage"]["completion_tokens"] < LONG
    assert took < 6, took
    # Streamed: the stream ends with "length" and [DONE].
    got, headers, raw = timeout_server.request("POST", CHAT, chat(max_tokens=LONG, stream=True))
    assert got == 200 and headers["content-type"] == "text/event-stream"
    events = [e[len("data: "):] for e in raw.decode().split("\n\n") if e]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["choices"][0]["finish_reason"] == "length"
    assert "timeout" in timeout_server.text()
    # The slot is free again.
    got, reply, took = timed_short(timeout_server)
    assert got == 200 and took < 4, reply


def test_shutdown_ends_streams(start):
    """SIGINT: running streams are cancelled and closed, the process exits 0."""
    import signal
    srv = start("--ctx", "2048", "--parallel", "1")
    s = open_stream(srv, chat(max_tokens=LONG, stream=True))
    t = time.time()
    srv.proc.send_signal(signal.SIGINT)
    s.settimeout(10)
    rest = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    s.close()
    assert srv.proc.wait(timeout=15) == 0, srv.text()
    assert time.time() - t < 5, "shutdown waited for the long job"
    assert b"[DONE]" not in rest  # a cancelled stream just ends
    assert "shutting down" in srv.text()


def test_bounded_load(server):
    """16 clients x 5 short requests at once: every one a whole answer or a
    clean 503; memory bounded; the server still healthy."""
    rss_before = server.rss_kib()
    results, errors = [], []

    def client(i):
        for j in range(5):
            body = chat(f"Give me a word that rhymes with number {i * 5 + j}.",
                        max_tokens=8, stream=(j % 2 == 1))
            try:
                results.append(server.request("POST", CHAT, body, timeout=120))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

    t = time.time()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(180)
    took = time.time() - t
    assert not errors, errors[:3]
    assert len(results) == 80
    assert took < 150, took
    ok = 0
    for got, headers, reply in results:
        if got == 503:
            assert headers.get("retry-after") == "1" and reply["error"]["message"]
            continue
        assert got == 200, reply
        ok += 1
        if isinstance(reply, dict):
            assert reply["choices"][0]["finish_reason"] == "length"
            assert reply["usage"]["completion_tokens"] == 8
        else:
            events = [e for e in reply.decode().split("\n\n") if e]
            assert events[-1] == "data: [DONE]"
            assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] == "length"
    # --queue 16 + 4 slots hold 16 clients: all are served.
    assert ok == 80, f"{80 - ok} answers were 503"
    # Bound: the mapped model (95 MiB, counted as its pages are touched), four
    # f16 KV caches of 1024 tokens (4 x 23 MiB), tokenizer and buffers: about
    # 250 MiB at most (150 measured with one session); 512 MiB leaves room for
    # the allocator and still catches a per-request leak of a few MiB.
    rss = server.rss_kib()
    print(f"load: {ok} answers in {took:.1f} s, RSS {rss_before // 1024} -> {rss // 1024} MiB")
    assert rss < 512 * 1024, f"RSS {rss // 1024} MiB (before the load: {rss_before // 1024} MiB)"
    got, _, reply = server.request("GET", "/health")
    assert (got, reply) == (200, {"status": "ok"})
