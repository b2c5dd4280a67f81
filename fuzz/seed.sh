#!/usr/bin/env bash
# Builds the fuzz seed corpora from real files into fuzz/seeds/<target>/ (the
# small ones are committed) and, with --big, large seeds into fuzz/seeds-big/
# (not committed: the full header regions of the real GGUF models, 1.8 and
# 5.9 MB). Sources: the fixture checkpoint (shared/fixtures/tah-tiny), its .tah
# conversions, the decider archives, the Qwen3 tokenizer config, the prompts of
# tests/data, and the real models from models/fetch.sh (skipped when absent).
#   fuzz/seed.sh [--big]
set -euo pipefail
fuzz="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$fuzz")"
shared="${TAH_SHARED:-$repo/../shared}"
fixture="$shared/fixtures/tah-tiny"
models="${TAH_MODELS:-$HOME/.cache/tah/models}"
seeds="$fuzz/seeds"
big=0
[ "${1:-}" = "--big" ] && big=1
mkdir -p "$seeds"/{gguf_model,safetensors_dir,unpickle,text}

# gguf_model: the fixture converted (f32 and q4_0), and the real models'
# headers with the tokenizer arrays cut to 32 entries (no tensor data).
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$repo" && cargo build --quiet -p tah-convert)
conv="${CARGO_TARGET_DIR:-$repo/target}/debug/tah-convert"
"$conv" --quiet "$fixture" -o "$tmp/f32.tah"
"$conv" --quiet "$fixture" -o "$tmp/q4_0.tah" --quant q4_0
cp "$tmp/f32.tah" "$seeds/gguf_model/tah-tiny-f32.tah"
cp "$tmp/q4_0.tah" "$seeds/gguf_model/tah-tiny-q4_0.tah"
for m in SmolLM2-135M-Instruct.Q4_1 Qwen2.5-Coder-0.5B-Instruct.Q4_K_M; do
  [ -f "$models/$m.gguf" ] || { echo "seed.sh: $models/$m.gguf absent (models/fetch.sh): skipped" >&2; continue; }
  python3 - "$models/$m.gguf" "$seeds/gguf_model/$m.header-compact.gguf" "$big" "$fuzz/seeds-big/gguf_model/$m.header.gguf" <<'PY'
import struct, sys, os
src, dst, big, big_dst = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4]
b = open(src, "rb").read(16 << 20)
pos = 0
def take(n):
    global pos
    s = b[pos:pos + n]; pos += n; return s
def u32(): return struct.unpack("<I", take(4))[0]
def u64(): return struct.unpack("<Q", take(8))[0]
SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
def value(t, cut):
    """Raw bytes of one value; arrays cut to `cut` elements."""
    if t in SIZES: return take(SIZES[t])
    if t == 8:
        n = u64(); return struct.pack("<Q", n) + take(n)
    et, n = u32(), u64()
    items = [value(et, cut) for _ in range(n)]
    keep = items[:cut]
    return struct.pack("<IQ", et, len(keep)) + b"".join(keep)
magic, ver = take(4), u32()
nt, nkv = u64(), u64()
out = [magic, struct.pack("<IQQ", ver, nt, nkv)]
for _ in range(nkv):
    n = u64(); key = take(n); t = u32()
    out.append(struct.pack("<Q", n) + key + struct.pack("<I", t) + value(t, 32))
start = pos
for _ in range(nt):
    n = u64(); take(n); nd = u32(); take(8 * nd + 12)
out.append(b[start:pos])
open(dst, "wb").write(b"".join(out))
if big:
    os.makedirs(os.path.dirname(big_dst), exist_ok=True)
    open(big_dst, "wb").write(b[:pos])
PY
done

# safetensors_dir: the fixture's weights and LoRA adapter, and a shard index
# naming its tensors (as a sharded checkpoint's model.safetensors.index.json).
cp "$fixture/model.safetensors" "$seeds/safetensors_dir/model.safetensors"
cp "$fixture/lora/adapter_model.safetensors" "$seeds/safetensors_dir/adapter_model.safetensors"
python3 - "$fixture/model.safetensors" "$seeds/safetensors_dir/model.safetensors.index.json" <<'PY'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
names = sorted(k for k in h if k != "__metadata__")
total = sum(v["data_offsets"][1] - v["data_offsets"][0] for k, v in h.items() if k != "__metadata__")
wm = {k: "model-%05d-of-00002.safetensors" % (1 + (i >= len(names) // 2)) for i, k in enumerate(names)}
json.dump({"metadata": {"total_size": total}, "weight_map": wm}, open(sys.argv[2], "w"), indent=2)
PY

# unpickle: the decider archives and their data.pkl.
cp "$fixture/iter_decider.bin" "$seeds/unpickle/tah-tiny-iter_decider.bin"
cp "$repo/convert/tests/data/bf16_decider.bin" "$seeds/unpickle/bf16_decider.bin"
python3 - "$seeds/unpickle" <<'PY'
import sys, zipfile
d = sys.argv[1]
for name in ["tah-tiny-iter_decider.bin", "bf16_decider.bin"]:
    with zipfile.ZipFile(f"{d}/{name}") as z:
        pkl = [n for n in z.namelist() if n.endswith("/data.pkl")][0]
        open(f"{d}/{name[:-4]}.data.pkl", "wb").write(z.read(pkl))
PY

# text: prompts (NUL separates chat messages), and chat templates as input.
python3 - "$repo/tests/data/llama-tokenize" "$shared/fixtures/tokenizers/qwen3-tokenizer_config.json" "$seeds/text" <<'PY'
import glob, json, sys, hashlib
src, cfg, out = sys.argv[1:4]
texts = set()
for f in glob.glob(f"{src}/*.json"):
    for c in json.load(open(f))["cases"]:
        texts.add(c["text"])
texts.add(json.load(open(cfg))["chat_template"])
texts.add("You are a helpful assistant.\0What is 2+2?\0<think>\nAdd them.\n</think>\n\n2+2 = 4.\0And 3+3?")
texts.add("{% for m in messages %}{{ m.role }}: {{ m.content | trim }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}")
for t in texts:
    b = t.encode()
    open(f"{out}/{hashlib.sha1(b).hexdigest()[:16]}.txt", "wb").write(b)
PY
du -sh "$seeds"/* >&2
chmod -R u+w "$seeds"
