#!/usr/bin/env python3
"""Our engine vs our PyTorch TaH forward on a trained checkpoint: converts nothing,
runs `tah run --prompt-ids … --logits-out` on the .tah made from CKPT and
tah_model.tah_forward on CKPT (decider policy), over a validation problem
(prompt + answer), and compares the depth sets and the final logits per position.

    python check_engine.py CKPT_DIR MODEL.tah [--tah target/release/tah]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tah_model as tm  # noqa: E402
from train import ChatEncoder, load_rows  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpt")
    ap.add_argument("model")
    ap.add_argument("--tah", default="target/release/tah")
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "data", "val.jsonl"))
    ap.add_argument("--tol", type=float, default=0.05)
    a = ap.parse_args()
    torch.set_num_threads(1)
    base, dec, _ = tm.load_tah(a.ckpt)
    enc = ChatEncoder(a.ckpt)
    p, ans = enc.example(load_rows(a.data, 1)[0])
    ids = p + ans
    with tempfile.TemporaryDirectory() as d:
        lo = os.path.join(d, "logits.safetensors")
        r = subprocess.run([a.tah, "run", "-m", a.model, "--prompt-ids", ",".join(map(str, ids)),
                            "-n", "1", "--temp", "0", "--json", "--kv-type", "f32",
                            "--logits-out", lo, "-t", "1"], capture_output=True, text=True, check=True)
        g = json.loads(r.stdout)
        el = load_file(lo)["prefill_logits"]
    with torch.no_grad():
        o = tm.tah_forward(base, torch.tensor([ids]), decider=dec,
                           input_topk=json.load(open(os.path.join(a.ckpt, "tah_config.json")))
                           ["input_updater_kwargs"]["topk"])
    ours = (1 + o["hard"][0].long()).tolist()
    diff = (el - o["logits"][0]).abs().max(-1).values
    hard = o["hard"][0]
    print(f"{len(ids)} tokens, depth-2 positions ours {sum(d == 2 for d in ours)}, engine "
          f"{sum(d == 2 for d in g['prompt_depths'])}, equal {ours == g['prompt_depths']}")
    print(f"max |logit diff| at depth-1 positions {float(diff[~hard].max()):.4g}, at depth-2 "
          f"positions {float(diff[hard].max()) if hard.any() else 0:.4g}; argmax agree "
          f"{float((el.argmax(-1) == o['logits'][0].argmax(-1)).float().mean()):.3f}")
    ok = ours == g["prompt_depths"] and float(diff.max()) < a.tol
    print("OK" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
