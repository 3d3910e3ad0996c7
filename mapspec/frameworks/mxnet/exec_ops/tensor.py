"""Tensor kernels with MXNet semantics: element-wise and scalar arithmetic, reshape, concat, softmax, clip.

Same contract as :mod:`.nn`: ``kernel(attrs, *inputs) -> tensor``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ops import reshape_target
from .nn import Unsupported

BINARY = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div,
    "maximum": torch.maximum, "minimum": torch.minimum,
}

# scalar op -> f(x, s)
SCALAR = {
    "plus": lambda x, s: x + s, "minus": lambda x, s: x - s, "rminus": lambda x, s: s - x,
    "mul": lambda x, s: x * s, "div": lambda x, s: x / s, "rdiv": lambda x, s: s / x,
    "maximum": lambda x, s: torch.clamp(x, min=s), "minimum": lambda x, s: torch.clamp(x, max=s),
}


def binary(kind: str):
    fn = BINARY[kind]

    def kernel(a: dict, x, y):
        return fn(x, y)
    kernel.__name__ = f"binary_{kind}"
    return kernel


def scalar(kind: str):
    fn = SCALAR[kind]

    def kernel(a: dict, x):
        return fn(x, a["scalar"])
    kernel.__name__ = f"scalar_{kind}"
    return kernel


def identity(a: dict, x):
    """identity, _copy, BlockGrad, and Dropout at inference."""
    return x


def add_n(a: dict, *xs):
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out


def flatten(a: dict, x):
    return x.reshape(x.shape[0], -1)


def reshape(a: dict, x):
    return x.reshape(reshape_target(a, tuple(x.shape)))


def concat(a: dict, *xs):
    return torch.cat(xs, dim=a["dim"])


def clip(a: dict, x):
    return torch.clamp(x, a["a_min"], a["a_max"])


def softmax(a: dict, x, length=None):
    if length is not None:
        raise Unsupported("softmax with use_length=True")
    t = a["temperature"]
    return F.softmax(x / t if t not in (None, 1.0) else x, dim=a["axis"])


def softmax_output(a: dict, x, label=None):
    """Inference of SoftmaxOutput: a softmax (over axis 1 for multi_output, the last axis for
    preserve_shape, else over everything but the batch axis); the label is not used."""
    if a["multi_output"]:
        return F.softmax(x, dim=1)
    if a["preserve_shape"]:
        return F.softmax(x, dim=-1)
    return F.softmax(x.reshape(x.shape[0], -1), dim=1).reshape(x.shape)


def softmax_activation(a: dict, x):
    if a["mode"] == "channel":
        return F.softmax(x, dim=1)
    return F.softmax(x.reshape(x.shape[0], -1), dim=1).reshape(x.shape)


def unary(fn):
    def kernel(a: dict, x):
        return fn(x)
    kernel.__name__ = f"unary_{getattr(fn, '__name__', 'fn')}"
    return kernel
