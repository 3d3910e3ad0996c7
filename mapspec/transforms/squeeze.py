"""squeeze / unsqueeze: drop or insert size-1 axes (a Caffe 1x1-conv classifier <-> a Linear weight)."""

from __future__ import annotations

import numpy as np

from .inverse import Inverse, InverseContext, NotInvertible
from .registry import Arg, Meta, TransformError, static_check, transform


def _squeezed(shape, axes) -> tuple:
    n = len(shape)
    norm = set()
    for a in axes:
        if not -n <= a < n:
            raise TransformError(f"axis {a} out of range for a tensor of {n} dimensions")
        if shape[a] != 1:
            raise TransformError(f"cannot squeeze axis {a}: it has size {shape[a]}, not 1 (shape {tuple(shape)})")
        norm.add(a % n)
    return tuple(d for i, d in enumerate(shape) if i not in norm)


def _unsqueezed(shape, axes) -> tuple:
    n = len(shape) + len(axes)
    norm = []
    for a in axes:
        if not -n <= a < n:
            raise TransformError(f"axis {a} out of range for the {n}-dimensional result")
        norm.append(a % n)
    if len(set(norm)) != len(norm):
        raise TransformError(f"unsqueeze axes {list(axes)} repeat an axis")
    out, it = [], iter(shape)
    for i in range(n):
        out.append(1 if i in norm else next(it))
    return tuple(out)


def squeeze(x: np.ndarray, axes) -> np.ndarray:
    return x.reshape(_squeezed(x.shape, axes))


def unsqueeze(x: np.ndarray, axes) -> np.ndarray:
    return x.reshape(_unsqueezed(x.shape, axes))


def _norm_axes(ctx: InverseContext, ndim_of) -> list:
    axes = ctx.static_ints("axes")
    if all(a >= 0 for a in axes):
        return sorted(axes)
    n = ndim_of()
    return sorted(a % n for a in axes)


def _moved(removed: list, inserted: list):
    """Axis tracking through squeeze (``removed`` input axes) or unsqueeze (``inserted`` output axes)."""
    def axis(a: int):
        if removed:
            return None if a in removed else a - sum(1 for r in removed if r < a)
        for i in inserted:
            if i <= a:
                a += 1
        return a
    return axis


def inverse_squeeze(ctx: InverseContext) -> Inverse:
    """unsqueeze at the same (input) positions."""
    axes = _norm_axes(ctx, ctx.in_ndim)
    return Inverse([("unsqueeze", axes)], axis=_moved(axes, []))


def inverse_unsqueeze(ctx: InverseContext) -> Inverse:
    """squeeze the inserted axes."""
    axes = _norm_axes(ctx, lambda: ctx.in_ndim() + len(ctx.static_ints("axes")))
    if len(set(axes)) != len(axes):
        raise NotInvertible(f"unsqueeze axes {axes} repeat an axis")
    return Inverse([("squeeze", axes)], axis=_moved([], axes))


@transform("squeeze", kernel=squeeze, args={"axes": Arg("ints", required=True)}, short="axes",
           inverse=inverse_squeeze)
def infer_squeeze(meta: Meta, axes) -> Meta:
    """Remove the listed size-1 axes (a non-1 axis is an error, never silently kept)."""
    return Meta(_squeezed(meta.shape, axes), meta.dtype)


@transform("unsqueeze", kernel=unsqueeze, args={"axes": Arg("ints", required=True)}, short="axes",
           inverse=inverse_unsqueeze)
def infer_unsqueeze(meta: Meta, axes) -> Meta:
    """Insert size-1 axes at the listed positions of the result."""
    return Meta(_unsqueezed(meta.shape, axes), meta.dtype)


@static_check("squeeze")
@static_check("unsqueeze")
def static(axes) -> None:
    if len(set(axes)) != len(axes):
        raise TransformError(f"axes {list(axes)} repeat an axis")
