#!/usr/bin/env python3
"""Reads a .tah file with the `gguf` Python package (llama.cpp's own reader) and
prints what it sees as JSON: every tensor's name, GGUF dims and type id, and the
value of every scalar/string metadata key. The Rust test compares it with ours."""
import json
import sys

import gguf

r = gguf.GGUFReader(sys.argv[1])
out = {"tensors": [], "keys": {}}
for t in r.tensors:
    out["tensors"].append({"name": t.name, "dims": [int(d) for d in t.shape], "type": int(t.tensor_type)})
    # Touch the data: the reader maps it; a bad offset would raise here.
    _ = t.data.shape
for k, f in r.fields.items():
    if k.startswith("GGUF."):
        continue
    try:
        v = f.contents()
    except Exception as e:  # noqa: BLE001 - report, do not hide
        v = f"<unreadable: {e}>"
    if isinstance(v, list) and len(v) > 64:
        v = f"<{len(v)} items>"
    out["keys"][k] = v
print(json.dumps(out))
