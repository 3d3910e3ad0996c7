"""take: pick indices along an axis (BGR -> RGB is take [2, 1, 0] on the input-channel axis)."""

from __future__ import annotations

import numpy as np

from .inverse import Inverse, InverseContext, Lossy, NotInvertible, same_axis
from .registry import Arg, Meta, TransformError, norm_axis, selects, static_check, transform


def _check(shape, indices, axis: int) -> int:
    axis = norm_axis(axis, len(shape))
    n = shape[axis]
    if not indices:
        raise TransformError("take needs at least one index")
    for i in indices:
        if not -n <= i < n:
            raise TransformError(f"index {i} out of bounds for dimension #{axis} of size {n}")
    return axis


def take(x: np.ndarray, indices, axis: int = 0) -> np.ndarray:
    axis = _check(x.shape, indices, axis)
    return np.take(x, [int(i) for i in indices], axis=axis)


def inverse(ctx: InverseContext) -> Inverse:
    """A permutation of the whole axis is undone by its inverse permutation; one index per value of the rule's
    ``each`` (``take: ["{j}"]``) by joining what every value took; anything else loses values."""
    axis = ctx.static_ints("axis", 0)
    raw = ctx.args.get("indices")
    if isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], str):
        shape = ctx.in_shape()
        axis = axis % len(shape)
        if shape[axis] < 0:
            raise NotInvertible(f"take: the size of axis {axis} differs between tensors")
        return Inverse([], axis=lambda a: a if a != axis else None,
                       gather={"axis": axis, "parts": shape[axis], "take": raw[0]})
    indices = ctx.static_ints("indices")
    n = len(indices)
    if sorted(i % n if -n <= i < n else None for i in indices) != list(range(n)):
        raise Lossy(f"take {indices} is not a permutation: values are dropped or repeated")
    size = ctx.in_shape()[axis]
    if size != n:
        raise Lossy(f"take keeps {n} of the {size} entries of axis {axis}")
    norm = [i % n for i in indices]
    return Inverse([("take", {"indices": [norm.index(i) for i in range(n)], "axis": axis})], axis=same_axis)


@transform("take", kernel=take, args={"indices": Arg("ints", required=True), "axis": Arg("int", default=0)},
           short="indices", inverse=inverse)
def infer(meta: Meta, indices, axis: int = 0) -> Meta:
    """Select ``indices`` (in that order, repeats allowed) along ``axis``."""
    axis = _check(meta.shape, indices, axis)
    shape = list(meta.shape)
    shape[axis] = len(indices)
    return Meta(tuple(shape), meta.dtype)


@selects("take")
def selection(shape, indices, axis: int = 0) -> tuple:
    axis = _check(shape, indices, axis)
    n = shape[axis]
    return axis, sorted({int(i) % n for i in indices})


@static_check("take")
def static(indices, axis: int = 0) -> None:
    if not indices:
        raise TransformError("take needs at least one index")
