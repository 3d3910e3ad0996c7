"""slice: keep start:stop:step along one axis (bounds are checked, never clamped)."""

from __future__ import annotations

import numpy as np

from .inverse import Inverse, InverseContext, Lossy, same_axis
from .registry import Arg, Meta, TransformError, norm_axis, selects, static_check, transform


def _resolve(shape, axis: int, start, stop, step) -> tuple:
    static(step=step)
    axis = norm_axis(axis, len(shape))
    n = shape[axis]
    for what, v in (("start", start), ("stop", stop)):
        if v is not None and not -n <= v <= n:
            raise TransformError(f"slice {what} {v} out of bounds for dimension #{axis} of size {n}")
    return axis, slice(start, stop, step)


def slice_(x: np.ndarray, start=None, stop=None, step: int = 1, axis: int = 0) -> np.ndarray:
    axis, sl = _resolve(x.shape, axis, start, stop, step)
    index = [slice(None)] * x.ndim
    index[axis] = sl
    return x[tuple(index)]


def inverse(ctx: InverseContext) -> Inverse:
    """Only a slice that keeps the whole axis in order (the identity) is undone; others lose values."""
    if ctx.steps and all(tuple(st[0].shape) == tuple(st[1].shape) for st in ctx.steps) and \
            ctx.static_ints("step", 1) == 1:
        return Inverse([], axis=same_axis)
    raise Lossy("slice keeps part of an axis; the rest is not in the target")


@transform("slice", inverse=inverse, kernel=slice_, args={
    "start": Arg("int", default=None), "stop": Arg("int", default=None), "step": Arg("int", default=1),
    "axis": Arg("int", default=0),
})
def infer(meta: Meta, start=None, stop=None, step: int = 1, axis: int = 0) -> Meta:
    """Keep ``start:stop:step`` of ``axis`` (Python slice semantics, bounds checked)."""
    axis, sl = _resolve(meta.shape, axis, start, stop, step)
    shape = list(meta.shape)
    shape[axis] = len(range(*sl.indices(shape[axis])))
    if shape[axis] == 0:
        raise TransformError(f"slice {sl.start}:{sl.stop}:{sl.step} of dimension #{axis} (size "
                             f"{meta.shape[axis]}) is empty")
    return Meta(tuple(shape), meta.dtype)


@selects("slice")
def selection(shape, start=None, stop=None, step: int = 1, axis: int = 0) -> tuple:
    axis, sl = _resolve(shape, axis, start, stop, step)
    return axis, range(*sl.indices(shape[axis]))


@static_check("slice")
def static(start=None, stop=None, step: int = 1, axis: int = 0) -> None:
    if step == 0:
        raise TransformError("slice step cannot be 0")
