// The tutor page of `tah serve`: a chat streamed from /v1/chat/completions,
// every answer token shaded by the depth it ran to, math typeset with KaTeX,
// the model's <think>…</think> text folded away.
//
// Test hooks: ?q=TEXT asks TEXT on load, &think=MODE picks the think mode,
// &max_tokens=N caps every answer, &temp=T sets the temperature, &demo=1 shows a canned answer (made-up
// depths, math, thinking) through the same rendering.
// document.body.dataset.state is "busy" while answering, then "done" or "error";
// document.body.dataset.katex is KaTeX's version once it has loaded.
"use strict";
(function () {
  var $ = function (id) { return document.getElementById(id); };
  var log = $("log"), form = $("ask"), input = $("input"), sendBtn = $("send"),
    stopBtn = $("stop"), newBtn = $("new"), thinkSel = $("think"), keyIn = $("key"),
    showThink = $("show-think");
  var katex = window.katex;
  if (katex) document.body.dataset.katex = katex.version;

  var conversation = []; // {role, content} sent with every request
  var controller = null; // the running request's AbortController
  var systemPrompt = null;
  var maxTokens = 0; // 0: the server's limit
  // Sampling as `tah chat` does it (Qwen3's recommended settings), not the
  // API's default of temperature 1, which makes small models ramble.
  var sampling = { temperature: 0.6, top_p: 0.95, top_k: 20 };

  function store(k, v) {
    try { if (v) localStorage.setItem(k, v); else localStorage.removeItem(k); } catch (e) { /* private mode */ }
  }
  function load(k) {
    try { return localStorage.getItem(k) || ""; } catch (e) { return ""; }
  }

  var ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  function esc(s) { return s.replace(/[&<>"']/g, function (c) { return ESC[c]; }); }

  // ---- Rendering: tokens → HTML -------------------------------------------

  // The thinking spans of text s: {a, b} from <think> to </think> and the
  // whitespace after it, {from, to} the text between the tags. A text whose
  // first tag is </think> started inside (the prompt opened the span); an
  // unclosed span runs to the end.
  function thinkRanges(s) {
    var out = [], pos = 0, start = 0, from = 0;
    var o = s.indexOf("<think>"), c = s.indexOf("</think>");
    var inside = c >= 0 && (o < 0 || c < o);
    for (;;) {
      if (inside) {
        c = s.indexOf("</think>", pos);
        var to = c < 0 ? s.length : c, e = c < 0 ? s.length : c + 8;
        while (e < s.length && /\s/.test(s[e])) e++;
        out.push({ a: start, b: e, from: from, to: to });
        if (c < 0) break;
        pos = e;
        inside = false;
      } else {
        o = s.indexOf("<think>", pos);
        if (o < 0) break;
        start = o;
        from = pos = o + 7;
        inside = true;
      }
    }
    return out;
  }

  // Index of the brace closing the one at s[i] (nesting, \{ \} skipped), or -1.
  function closeBrace(s, i, end) {
    var depth = 0;
    for (; i < end; i++) {
      var ch = s[i];
      if (ch === "\\") { i++; continue; }
      if (ch === "{") depth++;
      else if (ch === "}" && --depth === 0) return i;
    }
    return -1;
  }

  // Math in s[a, b): [{a, b, tex, display}] for complete \( \), \[ \], $$ $$,
  // $ $ (not around spaces, no newline, not $5 and $6) and bare \boxed{…}.
  function mathRanges(s, a, b) {
    var out = [], i = a, j;
    function pair(open, close, display) {
      j = s.indexOf(close, i + open.length);
      if (j < 0 || j + close.length > b) return false;
      out.push({ a: i, b: j + close.length, tex: s.slice(i + open.length, j), display: display });
      i = j + close.length;
      return true;
    }
    while (i < b) {
      var two = s.substr(i, 2);
      if (two === "$$") { if (!pair("$$", "$$", true)) i += 2; continue; }
      if (two === "\\[") { if (!pair("\\[", "\\]", true)) i += 2; continue; }
      if (two === "\\(") { if (!pair("\\(", "\\)", false)) i += 2; continue; }
      if (two === "\\$") { i += 2; continue; }
      if (s[i] === "$") {
        j = s.indexOf("$", i + 1);
        var tex = j > 0 && j < b ? s.slice(i + 1, j) : "";
        if (tex && !/^\s|\s$|\n/.test(tex) && !/\d/.test(s[j + 1] || "")) {
          out.push({ a: i, b: j + 1, tex: tex, display: false });
          i = j + 1;
        } else i++;
        continue;
      }
      if (s.startsWith("\\boxed{", i)) {
        j = closeBrace(s, i + 6, b);
        if (j > 0) {
          out.push({ a: i, b: j + 1, tex: s.slice(i, j + 1), display: false });
          i = j + 1;
          continue;
        }
      }
      i++;
    }
    return out;
  }

  function depthClass(d) { return d >= 3 ? "d3" : d === 2 ? "d2" : "d1"; }
  function tokenTitle(t) {
    return "depth " + t.d + (typeof t.p === "number" ? ", p = " + t.p.toFixed(3) : "");
  }

  // Renders tokens [{t: text, d: depth, p: prob|null}] as
  // {think: HTML of the thinking, thinkTokens, answer: HTML, answerText}.
  function render(tokens) {
    var s = "", offs = [];
    tokens.forEach(function (t) { offs.push(s.length); s += t.t; });
    offs.push(s.length);
    var k = 0; // the first token that may overlap what comes next

    // Token spans for s[a, b) (a only grows from call to call).
    function spans(a, b) {
      var h = "";
      while (k < tokens.length && offs[k + 1] <= a) k++;
      for (var i = k; i < tokens.length && offs[i] < b; i++) {
        var piece = s.slice(Math.max(a, offs[i]), Math.min(b, offs[i + 1]));
        if (piece) {
          var t = tokens[i];
          h += '<span class="' + depthClass(t.d) + '" title="' + tokenTitle(t) + '">' + esc(piece) + "</span>";
        }
      }
      return h;
    }
    function tokensIn(a, b) {
      var n = 0, hard = 0;
      for (var i = 0; i < tokens.length; i++) {
        if (offs[i + 1] > a && offs[i] < b) { n++; if (tokens[i].d >= 2) hard++; }
      }
      return [n, hard];
    }
    function answerPart(a, b) {
      var h = "";
      mathRanges(s, a, b).forEach(function (m) {
        var html = null;
        if (katex) {
          try {
            html = katex.renderToString(m.tex, { displayMode: m.display, throwOnError: false, output: "html" });
          } catch (e) { html = null; }
        }
        if (html === null) return; // stays as token spans
        // A display block is a line of its own: the line breaks around it go.
        var before = m.a, after = m.b, tag = m.display ? "div" : "span";
        if (m.display) {
          while (before > a && s[before - 1] === "\n") before--;
          while (after < b && s[after] === "\n") after++;
        }
        h += spans(a, before);
        var c = tokensIn(m.a, m.b);
        h += "<" + tag + ' class="math' + (c[1] ? " hard" : "") + '" title="' + c[0] + " tokens, " + c[1] +
          ' at depth 2+">' + html + "</" + tag + ">";
        while (k < tokens.length && offs[k + 1] <= after) k++;
        a = after;
      });
      return h + spans(a, b);
    }

    // Whitespace at the ends of the answer and the thinking is not drawn.
    function trim(a, b) {
      while (a < b && /\s/.test(s[a])) a++;
      while (b > a && /\s/.test(s[b - 1])) b--;
      return [a, b];
    }
    var r = { think: "", thinkTokens: 0, answer: "", answerText: "" }, at = 0;
    var think = thinkRanges(s), end = trim(0, s.length)[1];
    at = trim(0, think.length ? think[0].a : end)[0];
    think.forEach(function (t) {
      r.answer += answerPart(at, t.a);
      r.answerText += s.slice(at, t.a);
      var inner = trim(t.from, t.to);
      r.think += spans(inner[0], inner[1]);
      r.thinkTokens += tokensIn(t.a, t.b)[0];
      at = t.b;
    });
    if (at < end) {
      r.answer += answerPart(at, end);
      r.answerText += s.slice(at, end);
    }
    return r;
  }

  // ---- Messages ------------------------------------------------------------

  function scrolledDown() {
    return window.innerHeight + window.scrollY >= document.body.scrollHeight - 80;
  }
  function keepDown(was) { if (was) window.scrollTo(0, document.body.scrollHeight); }

  function addUser(text) {
    var was = scrolledDown();
    var el = document.createElement("div");
    el.className = "msg user";
    el.innerHTML = '<div class="label">you</div><div class="plain"></div>';
    el.lastChild.textContent = text;
    log.appendChild(el);
    keepDown(was);
    return el;
  }

  // An assistant message: its tokens, stats and elements.
  function addAssistant() {
    var el = document.createElement("div");
    el.className = "msg assistant";
    el.innerHTML = '<div class="label">tutor</div><div class="parts"></div><div class="note"></div>';
    log.appendChild(el);
    var msg = {
      el: el, parts: el.children[1], note: el.children[2], tokens: [], stats: null,
      finish: null, streaming: true, failed: false, thinkOpen: showThink.checked, timer: 0, text: "",
    };
    el.addEventListener("toggle", function (e) {
      if (e.target.tagName === "DETAILS") msg.thinkOpen = e.target.open;
    }, true);
    draw(msg);
    return msg;
  }

  function draw(msg) {
    msg.timer = 0;
    var was = scrolledDown();
    var r = render(msg.tokens);
    msg.text = r.answerText;
    var h = "";
    if (r.think) {
      h += '<details class="think"' + (msg.thinkOpen ? " open" : "") + "><summary>thinking &middot; " +
        r.thinkTokens + " tokens</summary>" + '<div class="gen">' + r.think + "</div></details>";
    }
    if (r.answer || msg.streaming || !msg.failed) {
      h += '<div class="gen' + (msg.streaming ? " cursor" : "") + '">' + r.answer + "</div>";
    }
    msg.parts.innerHTML = h;
    msg.note.textContent = msg.failed && !msg.tokens.length ? "" : summary(msg);
    keepDown(was);
  }
  function drawSoon(msg) { if (!msg.timer) msg.timer = setTimeout(function () { draw(msg); }, 120); }

  function summary(msg) {
    var n = msg.tokens.length, hard = 0;
    msg.tokens.forEach(function (t) { if (t.d >= 2) hard++; });
    var st = msg.stats, perDepth = "";
    if (st && Array.isArray(st.tokens_per_depth)) {
      n = st.tokens_per_depth.reduce(function (x, y) { return x + y; }, 0);
      perDepth = st.tokens_per_depth.map(function (c, i) { return " \u00b7 depth " + (i + 1) + ": " + c; }).join("");
    }
    var rate = st && typeof st.hard_rate === "number" ? st.hard_rate : hard / Math.max(n, 1);
    var s = n + " tokens \u00b7 hard rate " + (100 * rate).toFixed(1) + "%" + perDepth;
    if (msg.streaming) return s + " \u2026";
    if (msg.finish === "length") s += " \u00b7 cut at the length limit";
    else if (msg.finish === "stopped") s += " \u00b7 stopped";
    else if (msg.finish && msg.finish !== "stop") s += " \u00b7 " + msg.finish;
    return s;
  }

  function showError(msg, text) {
    var e = document.createElement("div");
    e.className = "error";
    e.textContent = text;
    msg.el.appendChild(e);
  }

  // ---- Requests ------------------------------------------------------------

  function getPrompt() {
    if (systemPrompt !== null) return Promise.resolve(systemPrompt);
    return fetch("assets/tutor-prompt.txt").then(function (r) {
      if (!r.ok) throw new Error("could not load the tutor prompt (HTTP " + r.status + ")");
      return r.text();
    }).then(function (t) { systemPrompt = t; return t; });
  }

  // The message of a non-200 answer: {"error":{"message":…}} or the body text.
  function httpError(r) {
    return r.text().then(function (body) {
      var m = body;
      try { m = JSON.parse(body).error.message || body; } catch (e) { /* not JSON */ }
      return new Error("HTTP " + r.status + (m ? ": " + m : ""));
    });
  }

  // Reads a server-sent event stream, calling onData(parsed JSON) per event;
  // resolves at "data: [DONE]" (true) or the stream's end (false).
  async function readEvents(body, onData) {
    var reader = body.getReader(), dec = new TextDecoder(), buf = "", data = [];
    for (;;) {
      var chunk = await reader.read();
      if (chunk.done) return false;
      buf += dec.decode(chunk.value, { stream: true });
      var i;
      while ((i = buf.indexOf("\n")) >= 0) {
        var line = buf.slice(0, i).replace(/\r$/, "");
        buf = buf.slice(i + 1);
        if (line.startsWith("data:")) data.push(line.slice(line[5] === " " ? 6 : 5));
        else if (line === "" && data.length) {
          var d = data.join("\n");
          data = [];
          if (d === "[DONE]") { reader.cancel().catch(function () {}); return true; }
          onData(JSON.parse(d));
        }
      }
    }
  }

  function setBusy(busy) {
    sendBtn.disabled = busy;
    stopBtn.hidden = !busy;
    if (busy) document.body.dataset.state = "busy";
  }

  async function ask(question) {
    addUser(question);
    conversation.push({ role: "user", content: question });
    var msg = addAssistant();
    var ctl = controller = new AbortController();
    setBusy(true);
    var state = "done";
    try {
      var prompt = await getPrompt();
      var headers = { "Content-Type": "application/json" };
      if (keyIn.value.trim()) headers.Authorization = "Bearer " + keyIn.value.trim();
      var req = {
        messages: [{ role: "system", content: prompt }].concat(conversation),
        stream: true, tah_depths: true, think: thinkSel.value,
        temperature: sampling.temperature, top_p: sampling.top_p, top_k: sampling.top_k,
      };
      if (maxTokens > 0) req.max_tokens = maxTokens;
      var r = await fetch("v1/chat/completions", {
        method: "POST", headers: headers, signal: ctl.signal, body: JSON.stringify(req),
      }).catch(function (e) {
        if (e.name === "AbortError") throw e;
        throw new Error("could not reach the server (" + (e.message || e) + ")");
      });
      if (!r.ok) throw await httpError(r);
      var finished = await readEvents(r.body, function (ev) {
        if (ev.error) throw new Error(ev.error.message || JSON.stringify(ev.error));
        var ch = (ev.choices || [])[0] || {}, delta = ch.delta || {}, tah = ev.tah || {};
        if (typeof delta.content === "string" && delta.content) {
          msg.tokens.push({ t: delta.content, d: tah.depth || 1, p: typeof tah.prob === "number" ? tah.prob : null });
        }
        if (ch.finish_reason) msg.finish = ch.finish_reason;
        if (tah.tokens_per_depth) msg.stats = tah;
        drawSoon(msg);
      });
      if (!finished && !msg.finish) throw new Error("the answer broke off (the connection closed)");
    } catch (e) {
      if (e.name === "AbortError") msg.finish = "stopped";
      else {
        ctl.abort(); // a broken stream: let the server stop generating
        showError(msg, String(e.message || e));
        msg.failed = true;
        state = "error";
      }
    }
    clearTimeout(msg.timer);
    msg.streaming = false;
    draw(msg);
    if (ctl !== controller) return; // a new conversation replaced this one
    controller = null;
    if (state === "error" && !msg.tokens.length) {
      conversation.pop(); // unanswered: not part of the conversation
    } else {
      conversation.push({ role: "assistant", content: msg.text.trim() });
    }
    setBusy(false);
    document.body.dataset.state = state;
  }

  // ---- Controls ------------------------------------------------------------

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var q = input.value.trim();
    if (!q || controller) return;
    input.value = "";
    ask(q);
  });
  input.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit ? form.requestSubmit() : sendBtn.click();
    }
  });
  stopBtn.addEventListener("click", function () { if (controller) controller.abort(); });
  newBtn.addEventListener("click", function () {
    if (controller) controller.abort();
    controller = null;
    conversation = [];
    log.textContent = "";
    setBusy(false);
    delete document.body.dataset.state;
    input.focus();
  });
  showThink.addEventListener("change", function () {
    var open = showThink.checked;
    log.querySelectorAll("details.think").forEach(function (d) { d.open = open; });
    store("tah.showThinking", open ? "1" : "");
  });
  keyIn.addEventListener("change", function () { store("tah.apiKey", keyIn.value.trim()); });
  thinkSel.addEventListener("change", function () { store("tah.think", thinkSel.value); });

  function setThink(mode) {
    if (!mode) return;
    if (![].some.call(thinkSel.options, function (o) { return o.value === mode; })) {
      thinkSel.add(new Option(mode, mode));
    }
    thinkSel.value = mode;
  }

  // A canned answer with made-up depths, rendered like a streamed one.
  function demo() {
    var q = "What is 12 \u00d7 7?";
    var a = "<think>\n12 times 7: 10 times 7 is 70, 2 times 7 is 14, 70 + 14 = 84.\n</think>\n\n" +
      "Split the 12: \\(12 \\times 7 = 10 \\times 7 + 2 \\times 7\\), that is $70 + 14$.\n\n" +
      "$$12 \\times 7 = 84$$\n\nThe answer is \\(\\boxed{84}\\).";
    addUser(q);
    var msg = addAssistant();
    a.match(/\\[a-z]+|\d|\s+|[A-Za-z]+|[^\sA-Za-z\d]/g).forEach(function (t, i) {
      var hard = /^[\d=+\u00d7]$|^\\times$/.test(t);
      msg.tokens.push({ t: t, d: hard ? 2 : 1, p: ((i * 37) % 100) / 100 });
    });
    msg.streaming = false;
    msg.finish = "stop";
    draw(msg);
    conversation.push({ role: "user", content: q }, { role: "assistant", content: msg.text.trim() });
    document.body.dataset.state = "done";
  }

  keyIn.value = load("tah.apiKey");
  showThink.checked = load("tah.showThinking") === "1";
  setThink(load("tah.think"));
  var params = new URLSearchParams(location.search);
  setThink(params.get("think"));
  maxTokens = parseInt(params.get("max_tokens") || "0", 10) || 0;
  if (params.get("temp")) sampling.temperature = parseFloat(params.get("temp"));
  if (params.get("demo")) demo();
  if (params.get("q")) ask(params.get("q"));
  else input.focus();
})();
