"""reverse: flip the order along an axis (e.g. flip a kernel for convolution <-> correlation)."""

from __future__ import annotations

import numpy as np

from .inverse import Inverse, InverseContext, same_axis
from .registry import Arg, Meta, norm_axis, transform


def reverse(x: np.ndarray, axis: int = 0) -> np.ndarray:
    return np.flip(x, axis=norm_axis(axis, x.ndim))


def inverse(ctx: InverseContext) -> Inverse:
    """Reversing twice is the identity."""
    return Inverse([("reverse", ctx.static_ints("axis", 0))], axis=same_axis)


@transform("reverse", kernel=reverse, args={"axis": Arg("int", default=0)}, short="axis", inverse=inverse)
def infer(meta: Meta, axis: int = 0) -> Meta:
    """Reverse the order of ``axis``."""
    norm_axis(axis, len(meta.shape))
    return meta
