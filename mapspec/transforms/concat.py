"""concat: join the input with referenced tensors along an axis."""

from __future__ import annotations

import numpy as np

from .registry import Arg, Meta, TransformError, norm_axis, transform


def concat(x: np.ndarray, after=(), before=(), axis: int = 0) -> np.ndarray:
    parts = list(before) + [x] + list(after)
    _check([(p.shape, str(p.dtype)) for p in parts], axis)
    return np.concatenate(parts, axis=norm_axis(axis, x.ndim))


def _check(shapes_dtypes, axis: int) -> tuple:
    first, _ = shapes_dtypes[0]
    ax = norm_axis(axis, len(first))
    total = 0
    for i, (shape, _) in enumerate(shapes_dtypes):
        if len(shape) != len(first) or any(a != b for k, (a, b) in enumerate(zip(shape, first)) if k != ax):
            raise TransformError(f"concat along axis {axis}: part {i} has shape {tuple(shape)}, which does not "
                                 f"match {tuple(first)} outside axis {axis}")
        total += shape[ax]
    out = list(first)
    out[ax] = total
    return tuple(out)


@transform("concat", kernel=concat, args={
    "after": Arg("refs", default=(), doc="tensors appended after the input"),
    "before": Arg("refs", default=(), doc="tensors placed before the input"),
    "axis": Arg("int", default=0),
}, short="after")
def infer(meta: Meta, after=(), before=(), axis: int = 0) -> Meta:
    """Concatenate ``before + [input] + after`` along ``axis``."""
    parts = list(before) + [meta] + list(after)
    dts = {p.dtype for p in parts}
    if len(dts) > 1:
        raise TransformError(f"concat of different dtypes {sorted(dts)}; cast them first")
    return Meta(_check([(p.shape, p.dtype) for p in parts], axis), meta.dtype)
