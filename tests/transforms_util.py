"""Shared by the transform tests: kernels by name, shape inference, distinct values, a reference convolution."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from mapspec.transforms import TRANSFORMS, Meta


K = {name: t.kernel for name, t in TRANSFORMS.items()}


def infer(name, shape, meta_dtype="float32", /, **args):
    return TRANSFORMS[name].infer(Meta(tuple(shape), meta_dtype), **args)


def arange(*shape, dtype=np.float32):
    return np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)


shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)


def conv2d(x, w, b=None, groups=1, pad=0):
    """Direct (loop) convolution, NCHW / OIHW, stride 1: an independent reference."""
    n, c, h, wd = x.shape
    o, ig, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = h + 2 * pad - kh + 1, wd + 2 * pad - kw + 1
    out = np.zeros((n, o, oh, ow))
    og = o // groups
    for oc in range(o):
        g = oc // og
        for i in range(oh):
            for j in range(ow):
                patch = xp[:, g * ig:(g + 1) * ig, i:i + kh, j:j + kw]
                out[:, oc, i, j] = (patch * w[oc]).sum(axis=(1, 2, 3))
        if b is not None:
            out[:, oc] += b[oc]
    return out
