"""split: cut an axis into equal parts and keep one (a group of a grouped convolution)."""

from __future__ import annotations

import numpy as np

from .inverse import Inverse, InverseContext, NotInvertible
from .registry import Arg, Meta, TransformError, norm_axis, selects, static_check, transform


def _bounds(shape, axis: int, parts: int, take: int) -> tuple[int, int, int]:
    static(parts, take)
    axis = norm_axis(axis, len(shape))
    n = shape[axis]
    if n % parts:
        raise TransformError(f"cannot split dimension #{axis} of size {n} into {parts} equal parts")
    size = n // parts
    return axis, take * size, (take + 1) * size


def split(x: np.ndarray, parts: int, take: int, axis: int = 0) -> np.ndarray:
    axis, start, stop = _bounds(x.shape, axis, parts, take)
    index = [slice(None)] * x.ndim
    index[axis] = slice(start, stop)
    return x[tuple(index)]


def inverse(ctx: InverseContext) -> Inverse:
    """Concatenate the parts again (the rule's ``each`` must take every part)."""
    axis = ctx.static_ints("axis", 0)
    if axis < 0:
        axis %= ctx.in_ndim()
    parts = ctx.args.get("parts")
    if not isinstance(parts, int) or isinstance(parts, bool):
        parts = ctx.bound("parts")
    if not isinstance(parts, int):
        raise NotInvertible("split: 'parts' must be a number for the reverse")
    return Inverse([], axis=lambda a: a if a != axis else None,
                   gather={"axis": axis, "parts": parts, "take": ctx.args.get("take")})


@transform("split", inverse=inverse, kernel=split, args={
    "parts": Arg("int", required=True, doc="number of equal parts"),
    "take": Arg("int", required=True, doc="which part to keep (0-based)"),
    "axis": Arg("int", default=0),
})
def infer(meta: Meta, parts: int, take: int, axis: int = 0) -> Meta:
    """Split ``axis`` into ``parts`` equal parts and keep part ``take``."""
    axis, start, stop = _bounds(meta.shape, axis, parts, take)
    shape = list(meta.shape)
    shape[axis] = stop - start
    return Meta(tuple(shape), meta.dtype)


@selects("split")
def selection(shape, parts: int, take: int, axis: int = 0) -> tuple:
    axis, start, stop = _bounds(shape, axis, parts, take)
    return axis, range(start, stop)


@static_check("split")
def static(parts: int, take: int, axis: int = 0) -> None:
    if parts < 1:
        raise TransformError(f"split into {parts} parts: parts must be at least 1")
    if not 0 <= take < parts:
        raise TransformError(f"take {take} out of range for {parts} parts (0..{parts - 1})")
