#!/usr/bin/env python3
"""Writes a TaH checkpoint with random weights in the reference layout
(config.json, model.safetensors, lora/, iter_decider.bin, tah_config.json), for
testing the converter and the engine on shapes the fixture does not cover.

iter_decider.bin is written the way torch.save writes it (a stored zip holding a
protocol-2 pickle with persistent storage ids and one raw f32/bf16 entry per
tensor) using only the standard library, so no torch is needed. Needs numpy and
safetensors.
"""
import argparse
import io
import json
import os
import pickle
import struct
import sys
import types
import zipfile

import numpy as np
from safetensors.numpy import save_file

LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# --- a torch.save-compatible writer --------------------------------------------
# pickle writes GLOBAL 'module name' for objects it can find by that name, so stand-in
# modules named like torch's let the standard pickler emit exactly torch's globals.
def _fake_module(name, **attrs):
    m = types.ModuleType(name)
    for k, v in attrs.items():
        v.__module__ = name
        v.__qualname__ = k
        setattr(m, k, v)
    sys.modules[name] = m
    return m


class FloatStorage:
    pass


class BFloat16Storage:
    pass


def _rebuild_tensor_v2(*args):  # never called: only its name is pickled
    raise RuntimeError


class _DType:
    def __init__(self, name):
        self.name = name

    def __reduce__(self):
        return self.name  # pickled as GLOBAL torch <name>


_DType.__module__ = "torch"  # pickle looks the instance up as torch.<name>
float32 = _DType("float32")
bfloat16 = _DType("bfloat16")
_fake_module("torch", FloatStorage=FloatStorage, BFloat16Storage=BFloat16Storage)
sys.modules["torch"].float32 = float32
sys.modules["torch"].bfloat16 = bfloat16
_fake_module("torch._utils", _rebuild_tensor_v2=_rebuild_tensor_v2)


class _Tensor:
    def __init__(self, key, arr, bf16):
        self.key, self.arr, self.bf16 = key, arr, bf16

    def __reduce__(self):
        from collections import OrderedDict

        shape = tuple(self.arr.shape)
        stride = tuple(int(np.prod(shape[i + 1:])) for i in range(len(shape)))
        storage = ("storage", BFloat16Storage if self.bf16 else FloatStorage, self.key, "cpu", int(self.arr.size))
        return (_rebuild_tensor_v2, (_Persistent(storage), 0, shape, stride, False, OrderedDict()))


class _Persistent:
    def __init__(self, pid):
        self.pid = pid


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, _Persistent) else None


def _bf16_bytes(a):
    u = np.asarray(a, dtype=np.float32).view(np.uint32)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16  # round to nearest even
    return rounded.astype(np.uint16).tobytes()


def torch_save(path, payload, tensors, bf16):
    """payload references tensors as _Tensor objects; tensors: list of (key, array)."""
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(payload)
    stem = os.path.splitext(os.path.basename(path))[0]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr(f"{stem}/data.pkl", buf.getvalue())
        z.writestr(f"{stem}/byteorder", "little")
        for key, arr in tensors:
            data = _bf16_bytes(arr) if bf16 else np.asarray(arr, dtype=np.float32).tobytes()
            z.writestr(f"{stem}/data/{key}", data)
        z.writestr(f"{stem}/version", "3\n")
        z.writestr(f"{stem}/.data/serialization_id", "0")


# --- the checkpoint ---------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out")
    ap.add_argument("--arch", default="qwen3", choices=["qwen3", "qwen2", "llama"])
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=16)
    ap.add_argument("--ffn", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--untied", action="store_true")
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--alpha", type=float, default=8.0)
    ap.add_argument("--decider-layers", default="1,2")
    ap.add_argument("--decider-dims", default="32,32")
    ap.add_argument("--expansion", type=int, default=2)
    ap.add_argument("--topk", type=int, default=16)
    ap.add_argument("--input-topk", type=int, default=16)
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--max-iter", type=int, default=2)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="the decider's dtype")
    ap.add_argument("--base-dtype", default="float32", choices=["float32", "float16"], help="base weights' dtype")
    ap.add_argument("--tokenizer", help="a tokenizer.json to copy in (its vocab must fit --vocab)")
    ap.add_argument("--tokenizer-config", help="a tokenizer_config.json to copy in")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    os.makedirs(os.path.join(a.out, "lora"), exist_ok=True)
    H, hd, L = a.hidden, a.head_dim, a.layers
    q, kv = a.heads * hd, a.kv_heads * hd
    def r(*s, scale=0.05):
        return (rng.standard_normal(s, dtype=np.float32) * scale).astype(np.float32)

    config = {
        "architectures": [{"qwen3": "Qwen3ForCausalLM", "qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}[a.arch]],
        "model_type": a.arch, "hidden_size": H, "intermediate_size": a.ffn, "num_hidden_layers": L,
        "num_attention_heads": a.heads, "num_key_value_heads": a.kv_heads, "head_dim": hd,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0 if a.arch != "llama" else 10000.0,
        "max_position_embeddings": 4096, "vocab_size": a.vocab, "tie_word_embeddings": not a.untied,
        "rope_scaling": None, "torch_dtype": a.dtype, "attention_bias": a.arch == "qwen2",
    }
    json.dump(config, open(os.path.join(a.out, "config.json"), "w"), indent=2)

    base = {"model.embed_tokens.weight": r(a.vocab, H, scale=0.5), "model.norm.weight": 1 + r(H)}
    if a.untied:
        base["lm_head.weight"] = r(a.vocab, H, scale=0.2)
    lin_shape = {"q_proj": (q, H), "k_proj": (kv, H), "v_proj": (kv, H), "o_proj": (H, q),
                 "gate_proj": (a.ffn, H), "up_proj": (a.ffn, H), "down_proj": (H, a.ffn)}
    lora = {}
    for l in range(L):
        p = f"model.layers.{l}."
        base[p + "input_layernorm.weight"] = 1 + r(H)
        base[p + "post_attention_layernorm.weight"] = 1 + r(H)
        for m, shape in lin_shape.items():
            mod = ("self_attn." if m in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp.") + m
            base[p + mod + ".weight"] = r(*shape, scale=1 / np.sqrt(shape[1]))
            key = f"base_model.model.model.layers.{l}.{mod}"
            lora[key + ".lora_A.weight"] = r(a.rank, shape[1], scale=1 / np.sqrt(shape[1]))
            lora[key + ".lora_B.weight"] = r(shape[0], a.rank, scale=0.1)
        if a.arch == "qwen3":
            base[p + "self_attn.q_norm.weight"] = 1 + r(hd)
            base[p + "self_attn.k_norm.weight"] = 1 + r(hd)
        if a.arch == "qwen2":
            for m, n in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)]:
                base[p + f"self_attn.{m}.bias"] = r(n)
    if a.base_dtype == "float16":
        base = {k: v.astype(np.float16) for k, v in base.items()}
    save_file(base, os.path.join(a.out, "model.safetensors"), metadata={"format": "pt"})
    save_file(lora, os.path.join(a.out, "lora", "adapter_model.safetensors"), metadata={"format": "pt"})
    json.dump({"peft_type": "LORA", "r": a.rank, "lora_alpha": a.alpha, "lora_dropout": 0.0, "bias": "none",
               "target_modules": LINEARS, "use_rslora": False, "use_dora": False, "task_type": None},
              open(os.path.join(a.out, "lora", "adapter_config.json"), "w"), indent=2)

    layers = [int(x) for x in a.decider_layers.split(",")]
    dims = [int(x) for x in a.decider_dims.split(",")]
    sd = [("threshold", np.array(a.threshold, dtype=np.float32)),
          ("logits_projection.weight", r(H, a.topk, scale=0.1)), ("logits_projection.bias", r(H)),
          ("combined_projection.weight", r(dims[0], len(layers) * H + H, scale=0.05)), ("combined_projection.bias", r(dims[0])),
          ("backbone.input_projection.weight", r(dims[0], dims[0], scale=0.2)), ("backbone.input_projection.bias", r(dims[0]))]
    for i, din in enumerate(dims):
        dout = dims[i + 1] if i + 1 < len(dims) else din
        e = din * a.expansion
        b = f"backbone.blocks.{i}."
        sd += [(b + "layer_norm.weight", 1 + r(din)), (b + "layer_norm.bias", r(din)),
               (b + "mlp.0.weight", r(e, din, scale=0.2)), (b + "mlp.0.bias", r(e)),
               (b + "mlp.3.weight", r(dout, e, scale=0.2)), (b + "mlp.3.bias", r(dout))]
        if din != dout:
            sd += [(b + "dim_change.weight", r(dout, din, scale=0.2)), (b + "dim_change.bias", r(dout))]
    last = dims[-1]
    sd += [("backbone.output_layer.0.weight", 1 + r(last)), ("backbone.output_layer.0.bias", r(last)),
           ("backbone.output_layer.1.weight", r(1, last, scale=0.5)), ("backbone.output_layer.1.bias", r(1))]
    bf16 = a.dtype == "bfloat16"
    kwargs = {"topk": a.topk, "hidden_states_size": H, "hidden_states_layer_nums": layers, "hidden_dims": dims,
              "expansion_factor": a.expansion, "dropout_rate": 0.0, "normalize_input": False,
              "threshold": a.threshold, "max_iter": a.max_iter}
    init_args = dict(kwargs, dtype=bfloat16 if bf16 else float32)
    state = {k: _Tensor(str(i), v, bf16) for i, (k, v) in enumerate(sd)}
    torch_save(os.path.join(a.out, "iter_decider.bin"),
               {"class": "MLPIterDecider", "state_dict": state, "init_args": init_args},
               [(str(i), v) for i, (_, v) in enumerate(sd)], bf16)
    tah_config = {"embedding_key": "model.embed_tokens", "max_iter": a.max_iter, "iter_decider": "MLPIterDecider",
                  "iter_decider_kwargs": dict(kwargs, dtype={"__dtype__": True, "__str__": "torch." + a.dtype}),
                  "input_updater_kwargs": {"topk": a.input_topk}, "adapter": "lora",
                  "adapter_kwargs": {"r": a.rank, "lora_alpha": a.alpha, "lora_dropout": 0.0,
                                     "target_modules": "all-linear", "bias": "none"}}
    json.dump(tah_config, open(os.path.join(a.out, "tah_config.json"), "w"), indent=2)
    if a.tokenizer:
        with open(a.tokenizer, "rb") as f, open(os.path.join(a.out, "tokenizer.json"), "wb") as g:
            g.write(f.read())
    if a.tokenizer_config:
        with open(a.tokenizer_config, "rb") as f, open(os.path.join(a.out, "tokenizer_config.json"), "wb") as g:
            g.write(f.read())


if __name__ == "__main__":
    main()
