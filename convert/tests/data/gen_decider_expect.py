#!/usr/bin/env python3
"""Writes the expected contents of an iter_decider.bin for convert/tests/decider.rs.

Usage: gen_decider_expect.py IN.bin OUT.json

The expectation is computed twice, independently of the Rust reader:
  1. Python stdlib only: zipfile + pickle (with stub classes, nothing from torch
     is imported or executed) + struct, reading each tensor's bytes straight
     from its data/<key> entry;
  2. torch.load, when torch is importable (preferred truth).
If both ran they must agree, and "verified_with" records which did.

Per tensor: name, shape, storage dtype, sha256 of the values as little-endian
f32 bytes (bf16/f16 widened to f32), and the first 4 values.
"""
import hashlib
import json
import pickle
import struct
import sys
import zipfile

ELEM = {"FloatStorage": ("f32", 4), "BFloat16Storage": ("bf16", 2), "HalfStorage": ("f16", 2)}


def to_f32(raw, dtype):
    if dtype == "f32":
        return list(struct.unpack("<%df" % (len(raw) // 4), raw))
    n = len(raw) // 2
    halves = struct.unpack("<%dH" % n, raw)
    if dtype == "bf16":
        return [struct.unpack("<f", struct.pack("<I", h << 16))[0] for h in halves]
    return [struct.unpack("<e", struct.pack("<H", h))[0] for h in halves]


def f32_digest(values):
    return hashlib.sha256(struct.pack("<%df" % len(values), *values)).hexdigest()


class Stub:
    def __init__(self, name):
        self.name = name


def stdlib_read(path):
    z = zipfile.ZipFile(path)
    prefix = z.namelist()[0].split("/")[0] + "/"

    class Rebuilt:
        pass

    def rebuild(storage, offset, size, stride, requires_grad, hooks, *rest):
        key, dtype, elem = storage
        raw = z.read(prefix + "data/" + key)
        n = 1
        for d in size:
            n *= d
        t = Rebuilt()
        t.shape = list(size)
        t.dtype = dtype
        t.values = to_f32(raw[offset * elem:(offset + n) * elem], dtype)
        return t

    class U(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return rebuild
            if (module, name) == ("collections", "OrderedDict"):
                return dict
            if module == "torch" and name in ELEM:
                return Stub(name)
            if module == "torch" and name in ("float32", "bfloat16", "float16"):
                return "torch." + name
            raise pickle.UnpicklingError("unexpected global %s.%s" % (module, name))

        def persistent_load(self, pid):
            tag, ty, key, location, numel = pid
            assert tag == "storage"
            dtype, elem = ELEM[ty.name]
            return (key, dtype, elem)

    obj = U(z.open(prefix + "data.pkl")).load()
    n_data = sum(1 for n in z.namelist() if n.startswith(prefix + "data/"))
    return obj, n_data


def main():
    src, out = sys.argv[1], sys.argv[2]
    obj, n_data = stdlib_read(src)
    tensors = []
    for name, t in obj["state_dict"].items():
        tensors.append({
            "name": name,
            "shape": t.shape,
            "dtype": t.dtype,
            "sha256_f32": f32_digest(t.values),
            "first": t.values[:4],
        })
    verified = ["python stdlib zipfile+pickle(stub classes)+struct"]
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        d = torch.load(src, map_location="cpu", weights_only=False)
        assert d["class"] == obj["class"]
        assert list(d["state_dict"]) == [t["name"] for t in tensors]
        for t, (name, v) in zip(tensors, d["state_dict"].items()):
            assert list(v.shape) == t["shape"], name
            vals = v.float().flatten().tolist()
            assert f32_digest(vals) == t["sha256_f32"], name
        verified.append("torch.load (torch %s)" % torch.__version__)
    # dtype globals come back as "torch.<name>" strings from the stub above.
    plain = (int, float, bool, str, list, type(None))
    init_args = {k: (v if isinstance(v, plain) else str(v)) for k, v in obj["init_args"].items()}
    with open(out, "w") as f:
        json.dump({
            "source": src.split("/")[-1],
            "verified_with": verified,
            "class": obj["class"],
            "init_args": init_args,
            "data_entries": n_data,
            "tensors": tensors,
        }, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
