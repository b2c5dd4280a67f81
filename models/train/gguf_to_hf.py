#!/usr/bin/env python3
"""A llama-family GGUF (e.g. SmolLM2-135M-Instruct.Q4_1.gguf) → a Hugging Face
llama checkpoint directory: config.json, model.safetensors (f32),
tokenizer.json, tokenizer_config.json (with the chat template),
generation_config.json.

Tensors are read and dequantized with the `gguf` package. llama.cpp's converter
permuted the q/k rows of every head so that its RoPE can rotate adjacent pairs;
we undo that (row h·hd + 2i + j of the GGUF is row h·hd + j·hd/2 + i of the
Hugging Face rotate-half layout).

The tokenizer.json is built the way our converter (convert/src/gguf_tokenizer.rs)
builds one from GGUF metadata, so our engine tokenizes the HF directory exactly
as it tokenizes the GGUF.

    python gguf_to_hf.py MODEL.gguf OUT_DIR
"""
import argparse
import json
import os
import sys

import numpy as np
from gguf import GGUFReader, GGMLQuantizationType
from gguf.quants import dequantize

GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
PRE_REGEXES = {
    "smollm": [r"\p{N}", GPT2_REGEX],
    "starcoder": [r"\p{N}", GPT2_REGEX],
    "gpt-2": [GPT2_REGEX],
}

HF_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


def unpermute_rows(w, n_heads):
    """Inverse of llama.cpp's q/k permutation (rows of a (out, in) weight or a bias)."""
    rows = w.shape[0]
    hd = rows // n_heads
    # GGUF row h*hd + 2i + j  <-  HF row h*hd + j*hd/2 + i
    x = w.reshape(n_heads, hd // 2, 2, *w.shape[1:])
    return np.ascontiguousarray(np.swapaxes(x, 1, 2).reshape(w.shape))


def hf_name(gname):
    if gname == "token_embd.weight":
        return "model.embed_tokens.weight"
    if gname == "output_norm.weight":
        return "model.norm.weight"
    if gname == "output.weight":
        return "lm_head.weight"
    parts = gname.split(".")
    if parts[0] == "blk":
        l, stem, suffix = parts[1], parts[2], parts[3]
        if stem in HF_NAMES:
            return f"model.layers.{l}.{HF_NAMES[stem]}.{suffix}"
    return None


def tokenizer_json(reader):
    model = field(reader, "tokenizer.ggml.model")
    if model != "gpt2":
        sys.exit(f"tokenizer.ggml.model {model!r}: only gpt2 byte-level BPE is supported")
    pre = field(reader, "tokenizer.ggml.pre", "default")
    if pre not in PRE_REGEXES:
        sys.exit(f"tokenizer.ggml.pre {pre!r} not supported here")
    tokens = [t if t != "" else f"[EMPTY_{i}]" for i, t in
              enumerate(field(reader, "tokenizer.ggml.tokens"))]
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = []
    for m in field(reader, "tokenizer.ggml.merges"):
        p = m.index(" ", 1)
        left, right = m[:p], m[p + 1:]
        if left in vocab and right in vocab and left + right in vocab:
            merges.append([left, right])
    types = field(reader, "tokenizer.ggml.token_type", [])
    added = []
    for i, ty in enumerate(types):
        if ty in (2, 3, 4):  # unknown, control (special), user-defined (not special)
            added.append({"id": i, "content": tokens[i], "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": ty != 4})
    pretoks = [{"type": "Split", "pattern": {"Regex": r}, "behavior": "Isolated", "invert": False}
               for r in PRE_REGEXES[pre]]
    pretoks.append({"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                    "use_regex": False})
    bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None, "pre_tokenizer": {"type": "Sequence", "pretokenizers": pretoks},
        "post_processor": None, "decoder": bl,
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }, tokens


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("out")
    a = ap.parse_args()
    r = GGUFReader(a.gguf)
    arch = field(r, "general.architecture")
    if arch != "llama":
        sys.exit(f"architecture {arch!r}: only llama is supported")
    k = lambda s, d=None: field(r, f"llama.{s}", d)  # noqa: E731
    hidden = int(k("embedding_length"))
    nh = int(k("attention.head_count"))
    nkv = int(k("attention.head_count_kv", nh))
    sd = {}
    for t in r.tensors:
        name = hf_name(t.name)
        if name is None:
            print(f"skipping {t.name}", file=sys.stderr)
            continue
        shape = [int(x) for x in reversed(t.shape)]  # GGUF lists ne0 (the row length) first
        if t.tensor_type in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
            w = np.asarray(t.data, dtype=np.float32)
        else:
            w = dequantize(t.data, t.tensor_type).astype(np.float32)
        w = w.reshape(shape)
        if name.endswith("q_proj.weight") or name.endswith("q_proj.bias"):
            w = unpermute_rows(w, nh)
        elif name.endswith("k_proj.weight") or name.endswith("k_proj.bias"):
            w = unpermute_rows(w, nkv)
        sd[name] = np.ascontiguousarray(w)
    tied = "lm_head.weight" not in sd
    tok, tokens = tokenizer_json(r)
    vocab_size = sd["model.embed_tokens.weight"].shape[0]
    layers = int(k("block_count"))
    bos = field(r, "tokenizer.ggml.bos_token_id")
    eos = field(r, "tokenizer.ggml.eos_token_id")
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": hidden, "intermediate_size": int(k("feed_forward_length")),
        "num_hidden_layers": layers, "num_attention_heads": nh, "num_key_value_heads": nkv,
        "head_dim": hidden // nh, "hidden_act": "silu",
        "max_position_embeddings": int(k("context_length")),
        "rms_norm_eps": float(f"{float(k('attention.layer_norm_rms_epsilon')):.6g}"),
        "rope_theta": float(f"{float(k('rope.freq_base', 10000.0)):.7g}"), "rope_scaling": None,
        "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": tied,
        "vocab_size": vocab_size, "torch_dtype": "float32",
        "bos_token_id": None if bos is None else int(bos),
        "eos_token_id": None if eos is None else int(eos),
    }
    os.makedirs(a.out, exist_ok=True)
    from safetensors.numpy import save_file
    save_file(sd, os.path.join(a.out, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(a.out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"]}, f, indent=2)
    with open(os.path.join(a.out, "tokenizer.json"), "w") as f:
        json.dump(tok, f, ensure_ascii=False)
    tc = {
        "add_bos_token": bool(field(r, "tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": False,
        "bos_token": None if bos is None else tokens[int(bos)],
        "eos_token": None if eos is None else tokens[int(eos)],
        "pad_token": None if field(r, "tokenizer.ggml.padding_token_id") is None
        else tokens[int(field(r, "tokenizer.ggml.padding_token_id"))],
        "unk_token": None if field(r, "tokenizer.ggml.unknown_token_id") is None
        else tokens[int(field(r, "tokenizer.ggml.unknown_token_id"))],
        "chat_template": field(r, "tokenizer.chat_template"),
        "model_max_length": config["max_position_embeddings"],
        "clean_up_tokenization_spaces": False,
        "tokenizer_class": "GPT2Tokenizer",
    }
    with open(os.path.join(a.out, "tokenizer_config.json"), "w") as f:
        json.dump(tc, f, indent=2, ensure_ascii=False)
    print(f"wrote {a.out}: {len(sd)} tensors, tied={tied}, vocab {vocab_size}")


if __name__ == "__main__":
    main()
