#!/usr/bin/env python3
"""Writes bf16_decider.bin, a small MLPIterDecider-shaped checkpoint saved the
way the reference's save_iter_decider does: torch.save of
{"class", "state_dict", "init_args"}, with random weights.

It exercises what the public fixture does not:
  - BFloat16Storage / torch.bfloat16 (threshold 0.9 is stored as 0.8984375);
  - HalfStorage (the output layer is float16, to cover that conversion);
  - more than 256 memo entries (LONG_BINPUT / LONG_BINGET), from 8 blocks;
  - a storage numel > 65535 (BININT), from topk 4097;
  - blocks that change width (dim_change), from hidden_dims [8]*6 + [12, 8];
  - an archive root that is not "iter_decider/" (it follows the file stem).

Needs torch (CPU is enough). Usage: gen_bf16_decider.py [OUT_DIR]
Then: gen_decider_expect.py OUT_DIR/bf16_decider.bin OUT_DIR/bf16_decider_expect.json
"""
import os
import sys

import torch

out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
g = torch.Generator().manual_seed(7)

topk, hidden, layer_nums = 4097, 16, [1, 3]
hidden_dims, expansion = [8] * 6 + [12, 8], 2
n = len(layer_nums)


def rnd(*shape, dtype=torch.bfloat16):
    return (torch.randn(*shape, generator=g) * 0.1).to(dtype)


sd = {"threshold": torch.tensor(0.9, dtype=torch.bfloat16)}


def linear(name, out, inp, dtype=torch.bfloat16):
    sd[name + ".weight"] = rnd(out, inp, dtype=dtype)
    sd[name + ".bias"] = rnd(out, dtype=dtype)


linear("logits_projection", hidden, topk)
linear("combined_projection", hidden_dims[0], n * hidden + hidden)
linear("backbone.input_projection", hidden_dims[0], hidden_dims[0])
for i, din in enumerate(hidden_dims):
    dout = hidden_dims[i + 1] if i + 1 < len(hidden_dims) else din
    b = "backbone.blocks.%d" % i
    sd[b + ".layer_norm.weight"] = rnd(din)
    sd[b + ".layer_norm.bias"] = rnd(din)
    linear(b + ".mlp.0", din * expansion, din)
    linear(b + ".mlp.3", dout, din * expansion)
    if din != dout:
        linear(b + ".dim_change", dout, din)
sd["backbone.output_layer.0.weight"] = rnd(hidden_dims[-1], dtype=torch.float16)
sd["backbone.output_layer.0.bias"] = rnd(hidden_dims[-1], dtype=torch.float16)
linear("backbone.output_layer.1", 1, hidden_dims[-1], dtype=torch.float16)

init_args = {
    "topk": topk,
    "hidden_states_size": hidden,
    "hidden_states_layer_nums": layer_nums,
    "hidden_dims": hidden_dims,
    "expansion_factor": expansion,
    "dropout_rate": 0.0,
    "normalize_input": False,
    "threshold": 0.9,
    "dtype": torch.bfloat16,
    # max_iter deliberately absent, as in the recipes' training configs.
}
torch.save({"class": "MLPIterDecider", "state_dict": sd, "init_args": init_args},
           os.path.join(out_dir, "bf16_decider.bin"))
