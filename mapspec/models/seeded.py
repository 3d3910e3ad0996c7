"""Seeded weights for a Caffe net definition: example and benchmark inputs that nobody else made.

He-scaled filters, Scale layers near 1, and BatchNorm statistics stored the way Caffe
stores them (times a moving-average factor, blob 2), so that a conversion that forgets
to divide by the factor fails loudly.
"""

from __future__ import annotations

import numpy as np


def caffe_weights(prototxt: str, seed: int = 0) -> dict:
    """{"layer[k]": float32 array} for every blob the prototxt's layers hold, in template order."""
    from ..formats import open_checkpoint

    rng = np.random.default_rng(seed)
    weights, factors = {}, {}
    with open_checkpoint(prototxt, format="prototxt") as t:
        for name, info in t.infos().items():
            layer, kind, blob, shape = info.meta["layer"], info.meta["type"], info.meta["blob"], info.shape
            if kind == "BatchNorm":
                f = factors.setdefault(layer, float(rng.uniform(900, 1000)))
                v = [rng.standard_normal(shape) * 0.1 * f, rng.uniform(0.5, 1.5, shape) * f, np.full(shape, f)][blob]
            elif kind == "Scale":
                v = rng.uniform(0.8, 1.2, shape) if blob == 0 else rng.standard_normal(shape) * 0.1
            elif len(shape) > 1:
                v = rng.standard_normal(shape) * np.sqrt(2.0 / int(np.prod(shape[1:])))
            else:
                v = rng.standard_normal(shape) * 0.1
            weights[name] = np.asarray(v, dtype=np.float32)
    return weights


def write_caffemodel(prototxt: str, path: str, seed: int = 0) -> None:
    from ..formats import module

    module("caffe").save(path, caffe_weights(prototxt, seed), template=prototxt)
