"""squeeze / unsqueeze: drop or insert size-1 axes (a Caffe 1x1-conv classifier <-> a Linear weight)."""

from __future__ import annotations

import numpy as np

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


@transform("squeeze", kernel=squeeze, args={"axes": Arg("ints", required=True)}, short="axes")
def infer_squeeze(meta: Meta, axes) -> Meta:
    """Remove the listed size-1 axes (a non-1 axis is an error, never silently kept)."""
    return Meta(_squeezed(meta.shape, axes), meta.dtype)


@transform("unsqueeze", kernel=unsqueeze, args={"axes": Arg("ints", required=True)}, short="axes")
def infer_unsqueeze(meta: Meta, axes) -> Meta:
    """Insert size-1 axes at the listed positions of the result."""
    return Meta(_unsqueezed(meta.shape, axes), meta.dtype)


@static_check("squeeze")
@static_check("unsqueeze")
def static(axes) -> None:
    if len(set(axes)) != len(axes):
        raise TransformError(f"axes {list(axes)} repeat an axis")
