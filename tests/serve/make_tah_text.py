"""Writes the TaH fixture (shared/fixtures/tah-tiny: random weights, a real
decider and depth-2 LoRA) as a checkpoint that takes text: a byte-level BPE
tokenizer (ids 0..256 the bytes, 256 <|im_start|>, 257 <|im_end|>) and a ChatML
template, as tests/common's `tah_text_model` builds it for the Rust tests.

    python3 make_tah_text.py FIXTURE_DIR OUT_DIR
"""
import json
import os
import sys

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
          "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|im_start|>assistant\\n' }}{% endif %}")


def byte_vocab():
    # GPT-2's bytes_to_unicode
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    vocab, extra = {}, 0
    for b in range(256):
        if b in printable:
            c = chr(b)
        else:
            extra += 1
            c = chr(255 + extra)
        vocab[c] = b
    return vocab


def special(i, s):
    return {"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": True}


def main(fixture, out):
    os.makedirs(out, exist_ok=True)
    for f in ["config.json", "generation_config.json", "model.safetensors", "iter_decider.bin",
              "tah_config.json", "lora"]:
        dst = os.path.join(out, f)
        if not os.path.lexists(dst):
            os.symlink(os.path.join(os.path.abspath(fixture), f), dst)
    level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    tok = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [special(256, "<|im_start|>"), special(257, "<|im_end|>")],
        "normalizer": None, "pre_tokenizer": level, "post_processor": None,
        "decoder": dict(level, add_prefix_space=True),
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": False, "vocab": byte_vocab(), "merges": []},
    }
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump(tok, f)
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"chat_template": CHATML, "eos_token": "<|im_end|>", "add_bos_token": False}, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
