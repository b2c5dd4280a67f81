"""Fixtures for the `tah serve` tests: servers started on free ports.

Needs TAH_BIN (the tah binary), TAH_SERVE_MODEL (SmolLM2-135M-Instruct
converted to .tah) and TAH_SERVE_TAH_MODEL (the TaH fixture with a byte
tokenizer, from make_tah_text.py); scripts/serve-check.sh sets them. Every server listens on
127.0.0.1 with --port 0; the port is read from its "listening on" line and
/health is polled before a test uses it. Server logs go to files under
pytest's temporary directory and are printed when a test fails.
"""

import http.client
import json
import os
import re
import signal
import subprocess
import time

import pytest

# SmolLM2's <|endoftext|> and <|im_end|>: banning them makes an answer run to
# max_tokens, for lengths the tests can count on.
NO_EOS = {"0": -100, "2": -100}
CTX = 1024
# Every server started, for the logs of a failed test.
SERVERS = []


class Server:
    def __init__(self, args, log_path, model=None):
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [os.environ["TAH_BIN"], "serve", "-m", model or os.environ["TAH_SERVE_MODEL"],
             "--host", "127.0.0.1", "--port", "0", "-t", "2", *args],
            stdout=subprocess.DEVNULL, stderr=self.log, stdin=subprocess.DEVNULL)
        if os.environ.get("TAH_SERVE_PIDS"):
            with open(os.environ["TAH_SERVE_PIDS"], "a") as f:
                f.write(f"{self.proc.pid}\n")
        self.host, self.port = "127.0.0.1", self._wait_port()
        self.url = f"http://{self.host}:{self.port}"
        self._wait_health()

    def text(self):
        with open(self.log_path) as f:
            return f.read()

    def _wait_port(self, limit=60):
        end = time.time() + limit
        while time.time() < end:
            # Up to the newline: the line may arrive in pieces.
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)\n", self.text())
            if m:
                return int(m.group(1))
            if self.proc.poll() is not None:
                raise RuntimeError(f"tah serve exited {self.proc.returncode}:\n{self.text()}")
            time.sleep(0.05)
        raise RuntimeError(f"tah serve did not start in {limit} s:\n{self.text()}")

    def _wait_health(self, limit=30):
        end = time.time() + limit
        while time.time() < end:
            try:
                status, _, body = self.request("GET", "/health")
                if status == 200 and body == {"status": "ok"}:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"/health did not answer in {limit} s:\n{self.text()}")

    def request(self, method, path, body=None, headers=None, timeout=60):
        """One raw request: (status, headers, parsed JSON body or raw bytes)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body)
            h = {"Content-Type": "application/json"} if body is not None else {}
            h.update(headers or {})
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            data = r.read()
            try:
                data = json.loads(data)
            except ValueError:
                pass
            return r.status, dict(r.getheaders()), data
        finally:
            conn.close()

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self):
        """SIGTERM, as a service manager would: the server must exit cleanly."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


@pytest.fixture(scope="session")
def start(tmp_path_factory):
    """start(*args) -> a running Server; all are stopped at the end."""
    servers = []

    def go(*args, model=None):
        s = Server(list(args), tmp_path_factory.mktemp("serve") / "server.log", model)
        servers.append(s)
        SERVERS.append(s)
        return s

    yield go
    codes = [(s.stop(), s) for s in servers]
    bad = [s for code, s in codes if code != 0]
    assert not bad, "a server did not exit cleanly on SIGTERM:\n" + "\n".join(s.text() for s in bad)


@pytest.fixture(scope="session")
def server(start):
    """The main server: default --parallel 4 and --queue 16."""
    return start("--ctx", str(CTX))


@pytest.fixture(scope="session")
def client(server):
    from openai import OpenAI
    return OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def model_id():
    return os.path.splitext(os.path.basename(os.environ["TAH_SERVE_MODEL"]))[0]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # A failed test shows the tail of every server's log next to it.
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for s in SERVERS:
            alive = "running" if s.proc.poll() is None else f"exited {s.proc.returncode}"
            tail = "\n".join(s.text().splitlines()[-30:])
            rep.sections.append((f"server {' '.join(s.proc.args[4:])} ({alive})", tail))
