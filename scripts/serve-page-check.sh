#!/usr/bin/env bash
# Opens the tutor page of `tah serve` in headless Chromium and checks it end to
# end with the real SmolLM2-135M-Instruct model:
#   1. a long answer (greedy, so it is long every run) stopped with the Stop
#      button (the page aborts the fetch; the server must log that it
#      cancelled, and take the next request);
#   2. "What is 12*7?" asked through the page's ?q= hook (think never, greedy,
#      at most 150 tokens): the streamed answer completes
#      (data-state="done"), is made of token
#      spans, has the summary line; KaTeX's script, CSS and fonts load from
#      the server; a 1000x800 screenshot is not blank;
#   3. the canned ?demo=1 answer (made-up depths) typesets its math with KaTeX
#      (.katex elements), shades depth-2 tokens (#ffc94d in the screenshot) and
#      folds the thinking away; also shot at a phone's width.
# Chromium is driven over --remote-debugging-pipe (DevTools protocol, Python
# standard library only): a headless --dump-dom does not wait for a stream.
#
#   scripts/serve-page-check.sh [OUT_DIR]     # screenshots and logs land there
#
# Builds the release binaries when missing. Needs `chromium`, python3 and the
# SmolLM2 GGUF (models/fetch.sh). Env: TAH_MODELS (default ~/.cache/tah/models),
# CHROMIUM (binary), TAH_SERVE_URL (test a server already running there instead
# of starting one).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$(mktemp -d)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
browser=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
if [ -z "$browser" ]; then
  echo "serve-page-check: chromium is not installed (apt-get install chromium)" >&2
  exit 1
fi

server=
profile=$(mktemp -d)
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$profile"
}
trap cleanup EXIT

url=${TAH_SERVE_URL:-}
if [ -z "$url" ]; then
  tah=$root/target/release/tah
  conv=$root/target/release/tah-convert
  if [ ! -x "$tah" ] || [ ! -x "$conv" ]; then
    (cd "$root" && cargo build --release -p tah -p tah-convert)
  fi
  gguf=${TAH_MODELS:-$HOME/.cache/tah/models}/SmolLM2-135M-Instruct.Q4_1.gguf
  [ -s "$gguf" ] || { echo "serve-page-check: $gguf is missing (models/fetch.sh)" >&2; exit 1; }
  "$conv" "$gguf" -o "$out/smollm2.tah" >/dev/null
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$tah" serve -m "$out/smollm2.tah" --port "$port" --parallel 1 >"$out/server.log" 2>&1 &
  server=$!
  url=http://127.0.0.1:$port
  for _ in $(seq 100); do
    python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/health", timeout=1)' "$url" 2>/dev/null && break
    kill -0 "$server" 2>/dev/null || { cat "$out/server.log" >&2; echo "serve-page-check: the server exited" >&2; exit 1; }
    sleep 0.2
  done
fi

python3 - "$browser" "$profile" "$url" "$out" <<'PY'
import base64, json, os, select, subprocess, sys, time

browser, profile, base, out = sys.argv[1:5]
r1, w1 = os.pipe()  # we write, Chromium reads fd 3
r2, w2 = os.pipe()  # Chromium writes fd 4, we read


def fds():
    a, b = os.dup(r1), os.dup(w2)
    os.dup2(a, 3)
    os.dup2(b, 4)


proc = subprocess.Popen(
    [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
     "--disable-background-networking", "--disable-component-update", "--disable-sync",
     "--hide-scrollbars", "--remote-debugging-pipe", "--user-data-dir=" + profile, "about:blank"],
    stdout=open(os.path.join(out, "chromium.log"), "wb"), stderr=subprocess.STDOUT,
    pass_fds=(3, 4), preexec_fn=fds)
os.close(r1)
os.close(w2)
buf, next_id, events = b"", 0, []


def send(method, params=None, session=None, timeout=30):
    """One DevTools command; its result (events on the way are kept)."""
    global buf, next_id
    next_id += 1
    msg = {"id": next_id, "method": method, "params": params or {}}
    if session:
        msg["sessionId"] = session
    os.write(w1, json.dumps(msg).encode() + b"\0")
    deadline = time.time() + timeout
    while True:
        while b"\0" not in buf:
            left = deadline - time.time()
            if left <= 0 or not select.select([r2], [], [], left)[0]:
                raise SystemExit(f"serve-page-check: no answer from Chromium to {method}")
            chunk = os.read(r2, 1 << 20)
            if not chunk:
                raise SystemExit("serve-page-check: Chromium exited")
            buf += chunk
        raw, buf = buf.split(b"\0", 1)
        m = json.loads(raw)
        if m.get("id") == next_id:
            if "error" in m:
                raise SystemExit(f"serve-page-check: {method}: {m['error']}")
            return m["result"]
        events.append(m)


def js(expr, session):
    r = send("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True}, session)
    if "exceptionDetails" in r:
        raise SystemExit(f"serve-page-check: {expr[:60]}…: {r['exceptionDetails']}")
    return r["result"].get("value")


def page(query, width=1000, height=800, mobile=False):
    target = send("Target.createTarget", {"url": "about:blank"})["targetId"]
    s = send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    send("Runtime.enable", session=s)
    send("Emulation.setDeviceMetricsOverride",
         {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}, s)
    send("Page.navigate", {"url": base + "/" + query}, s)
    return s


def wait(s, cond, what, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if js(f"(() => {{ try {{ return !!({cond}); }} catch (e) {{ return false; }} }})()", s):
            return
        time.sleep(0.1)
    raise SystemExit(f"serve-page-check: timed out waiting for {what}: {js(STATE, s)}")


def shot(s, name):
    """A screenshot: its file and its colour statistics, counted in the page."""
    png = send("Page.captureScreenshot", {"format": "png"}, s)["data"]
    path = os.path.join(out, name)
    open(path, "wb").write(base64.b64decode(png))
    stats = js("""new Promise((ok, fail) => {
      const img = new Image();
      img.onload = () => {
        const c = document.createElement("canvas");
        c.width = img.width; c.height = img.height;
        const g = c.getContext("2d");
        g.drawImage(img, 0, 0);
        const d = g.getImageData(0, 0, c.width, c.height).data, seen = new Set();
        let amber = 0, white = 0;
        for (let i = 0; i < d.length; i += 4) {
          seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
          if (Math.abs(d[i] - 0xff) < 8 && Math.abs(d[i + 1] - 0xc9) < 8 && Math.abs(d[i + 2] - 0x4d) < 8) amber++;
          if (d[i] === 255 && d[i + 1] === 255 && d[i + 2] === 255) white++;
        }
        ok({w: c.width, h: c.height, colours: seen.size, amber, white});
      };
      img.onerror = fail;
      img.src = "data:image/png;base64,%s";
    })""" % png, s)
    print(f"{path}: {stats['w']}x{stats['h']}, {stats['colours']} colours, "
          f"{stats['amber']} depth-2 pixels, {stats['white']} white pixels")
    assert stats["colours"] > 20, "the page is blank"
    assert stats["white"] > stats["w"] * stats["h"] // 10, "no page background"
    return stats


STATE = """(() => {
  const msgs = document.querySelectorAll(".msg.assistant"), last = msgs[msgs.length - 1];
  const answer = last ? last.querySelector(".parts > .gen") : null;
  return {
    state: document.body.dataset.state || "", katex: document.body.dataset.katex || "",
    answer: answer ? answer.textContent : "", spans: answer ? answer.querySelectorAll("span[title^='depth ']").length : 0,
    hard: answer ? answer.querySelectorAll("span.d2, span.d3").length : 0,
    math: answer ? answer.querySelectorAll(".katex").length : 0,
    display: answer ? answer.querySelectorAll(".katex-display").length : 0,
    thinking: last ? last.querySelectorAll("details.think:not([open])").length : 0,
    note: last ? last.querySelector(".note").textContent : "",
    error: last && last.querySelector(".error") ? last.querySelector(".error").textContent : "",
    fonts: [...document.fonts].filter(f => f.family.startsWith("KaTeX") && f.status === "loaded").length,
  };
})()"""
FINISHED = "['done', 'error'].includes(document.body.dataset.state)"


def exceptions():
    return [e["params"]["exceptionDetails"] for e in events if e.get("method") == "Runtime.exceptionThrown"]


try:
    # 1. Stop: a long answer aborted after a few tokens.
    s = page("?q=Count+from+1+to+300,+one+number+per+line.&think=never&temp=0&max_tokens=1000")
    wait(s, "document.querySelectorAll('.msg.assistant span.d1, .msg.assistant span.d2').length >= 3",
         "the first tokens", 30)
    js("document.getElementById('stop').click()", s)
    wait(s, FINISHED, "the stopped answer", 10)
    st = js(STATE, s)
    print("stopped:", json.dumps({k: st[k] for k in ("state", "spans", "note")}))
    assert st["state"] == "done" and "stopped" in st["note"], st

    # 2. A real answer, streamed to the end.
    s = page("?q=What+is+12*7%3F&think=never&temp=0&max_tokens=150")
    wait(s, FINISHED, "the answer", 45)
    # The answer has no math, so no KaTeX font yet: load one (from the server).
    js("document.fonts.load('16px KaTeX_Main')", s)
    st = js(STATE, s)
    print("answer:", json.dumps(st))
    assert st["state"] == "done", st
    assert st["answer"].strip() and st["spans"] > 0, st
    assert st["katex"], "KaTeX did not load"
    assert "tokens" in st["note"] and "hard rate" in st["note"] and "\u2026" not in st["note"], st
    assert st["fonts"] > 0, "no KaTeX font loaded"
    shot(s, "answer.png")

    # 3. The canned answer: math, shading, thinking.
    s = page("?demo=1")
    wait(s, FINISHED, "the demo", 10)
    wait(s, "document.fonts.status === 'loaded'", "the fonts", 10)
    st = js(STATE, s)
    print("demo:", json.dumps({k: v for k, v in st.items() if k != "answer"}))
    assert st["state"] == "done" and st["math"] >= 4 and st["display"] == 1, st
    assert st["hard"] > 0 and st["thinking"] == 1 and st["fonts"] > 0, st
    assert "84" in st["answer"] and "<think>" not in st["answer"], st
    assert shot(s, "demo.png")["amber"] > 200, "no depth-2 shading visible"
    s = page("?demo=1", 390, 780, mobile=True)
    wait(s, FINISHED, "the demo on a phone", 10)
    wait(s, "document.fonts.status === 'loaded'", "the fonts", 10)
    shot(s, "demo-phone.png")
    assert js("document.documentElement.scrollWidth <= 390", s), "wider than a phone's screen"

    assert not exceptions(), exceptions()
finally:
    try:
        send("Browser.close", timeout=5)
    except SystemExit:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
PY
if [ -n "$server" ] && ! grep -q "cancelled" "$out/server.log"; then
  cat "$out/server.log" >&2
  echo "serve-page-check: the server did not log cancelling the stopped answer" >&2
  exit 1
fi
echo "serve-page-check: ok ($out)"
