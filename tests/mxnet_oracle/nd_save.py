"""nd_save.py IN.npz OUT.params [--np] [--list]: MXNet's own writer.

Each member of IN.npz becomes one array named by its key; a key "NAME@bfloat16" is cast
to bfloat16 by MXNet and saved as NAME.  --list saves a plain list (no names); --np saves
under numpy shape semantics (V3 headers, 0-d arrays allowed).
"""
import sys

import numpy as np
import mxnet as mx

src, dst = sys.argv[1], sys.argv[2]
use_np = "--np" in sys.argv
if use_np:
    mx.npx.set_np()
data = np.load(src)
arrays = {}
for key in data.files:
    name, _, cast = key.partition("@")
    host = data[key]
    arr = mx.np.array(host, dtype=host.dtype) if use_np else mx.nd.array(host, dtype=host.dtype)
    if cast:  # MXNet 1.9 names bfloat16 by a structured numpy dtype, not a string
        arr = arr.astype(np.dtype([("bfloat16", np.uint16)]) if cast == "bfloat16" else cast)
    arrays[name] = arr
if use_np:
    mx.npx.save(dst, list(arrays.values()) if "--list" in sys.argv else arrays)
else:
    mx.nd.save(dst, list(arrays.values()) if "--list" in sys.argv else arrays)
