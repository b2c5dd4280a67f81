#!/usr/bin/env bash
# Renders a `tah run --html` page with headless Chromium and checks the picture:
# a PNG of the window size, not blank (many colours), with the depth-2 shading
# (#ffc94d) and the depth-1 background both present.
#
#   scripts/html-screenshot-check.sh [OUT_DIR]
#
# Uses the TaH fixture (shared/fixtures/tah-tiny, converted here; its decider
# sends about half the tokens to depth 2) and the release binaries (built when
# missing). Installs nothing: needs `chromium` (Debian package) and python3.
# Env: TAH_SHARED (default ../shared beside the checkout), CHROMIUM (binary).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
shared=${TAH_SHARED:-$root/../shared}
out=${1:-$(mktemp -d)}
mkdir -p "$out"
out=$(cd "$out" && pwd)

tah=$root/target/release/tah
conv=$root/target/release/tah-convert
if [ ! -x "$tah" ] || [ ! -x "$conv" ]; then
  (cd "$root" && cargo build --release -p tah -p tah-convert)
fi
browser=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
if [ -z "$browser" ]; then
  echo "html-screenshot-check: chromium is not installed (apt-get install chromium)" >&2
  exit 1
fi

model=$out/tah-tiny.tah
"$conv" "$shared/fixtures/tah-tiny" -o "$model" >/dev/null
ids=$(python3 -c 'import json,sys; print(",".join(map(str, json.load(open(sys.argv[1]))["prefill_input_ids"])))' \
  "$shared/fixtures/tah-tiny/reference.json")
"$tah" run -m "$model" --prompt-ids "$ids" -n 120 --temp 0 --html "$out/page.html" >/dev/null 2>&1

profile=$(mktemp -d)
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --screenshot="$out/page.png" --window-size=1000,800 \
  "file://$out/page.html" >"$out/chromium.log" 2>&1 || {
  cat "$out/chromium.log" >&2
  exit 1
}
rm -rf "$profile"

python3 - "$out/page.png" <<'PY'
import struct, sys, zlib

path = sys.argv[1]
data = open(path, "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, idat, w = 8, b"", None
while pos < len(data):
    (n,) = struct.unpack(">I", data[pos:pos + 4])
    kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
    pos += 12 + n
    if kind == b"IHDR":
        w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
        assert depth == 8 and ctype in (2, 6) and interlace == 0, (depth, ctype, interlace)
        bpp = 3 if ctype == 2 else 4
    elif kind == b"IDAT":
        idat += body
raw = zlib.decompress(idat)
stride = w * bpp
rows, prev = [], bytearray(stride)
for y in range(h):
    f = raw[y * (stride + 1)]
    line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for i in range(stride):
        a = line[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        if f == 1: line[i] = (line[i] + a) & 255
        elif f == 2: line[i] = (line[i] + b) & 255
        elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    rows.append(bytes(line))
    prev = line
colours = {}
for r in rows:
    for i in range(0, stride, bpp):
        px = r[i:i + 3]
        colours[px] = colours.get(px, 0) + 1
amber = sum(n for px, n in colours.items() if abs(px[0] - 0xff) < 8 and abs(px[1] - 0xc9) < 8 and abs(px[2] - 0x4d) < 8)
white = colours.get(b"\xff\xff\xff", 0)
print(f"{path}: {w}x{h}, {len(colours)} colours, {amber} depth-2 pixels, {white} white pixels")
assert (w, h) == (1000, 800), "unexpected size"
assert len(colours) > 20, "the page is blank"
assert amber > 500, "no depth-2 shading visible"
assert white > w * h // 10, "no page background"
PY
echo "html-screenshot-check: ok ($out/page.png)"
