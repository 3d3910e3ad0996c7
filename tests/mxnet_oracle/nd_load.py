"""nd_load.py IN.params OUT.npz [--np]: what MXNet's own loader sees in a .params file.

OUT.npz holds, per array i: "name<i>" (the full stored name, '' for an unnamed list),
"dtype<i>" (numpy dtype name as MXNet reports it), "shape<i>", "bytes<i>" (the raw values
as uint8, C order, little-endian).  --np loads under numpy shape semantics (npx.set_np),
which V3 files need.
"""
import sys

import numpy as np
import mxnet as mx

src, dst = sys.argv[1], sys.argv[2]
if "--np" in sys.argv:
    mx.npx.set_np()
    loaded = mx.npx.load(src)
else:
    loaded = mx.nd.load(src)
items = list(loaded.items()) if isinstance(loaded, dict) else [("", a) for a in loaded]
out = {"count": np.array(len(items))}
for i, (name, arr) in enumerate(items):
    host = arr.asnumpy()
    if host.dtype.names:  # MXNet's bfloat16 is a structured ('bfloat16', '<u2') dtype
        dtype = "bfloat16"
        host = host.view(np.uint16)
    else:
        dtype = str(host.dtype)
    out["name%d" % i] = np.array(name)
    out["dtype%d" % i] = np.array(dtype)
    out["shape%d" % i] = np.array(arr.shape, dtype=np.int64)
    out["bytes%d" % i] = np.frombuffer(np.ascontiguousarray(host).astype(host.dtype.newbyteorder("<")).tobytes(),
                                       dtype=np.uint8)
np.savez(dst, **out)
