"""reshape: a new shape with the same element count; one dimension may be -1."""

from __future__ import annotations

import numpy as np

from .inverse import Inverse, InverseContext
from .registry import Arg, Meta, TransformError, static_check, transform


def reshape(x: np.ndarray, shape) -> np.ndarray:
    # A view when the layout allows (C-contiguous inputs always do): no copy of the data.
    return x.reshape(resolve_shape(x.shape, shape))


def resolve_shape(in_shape, shape) -> tuple:
    shape = [int(d) for d in shape]
    numel = 1
    for d in in_shape:
        numel *= int(d)
    static(shape)
    unknown = [i for i, d in enumerate(shape) if d == -1]
    known = 1
    for d in shape:
        if d != -1:
            known *= d
    if unknown:
        if known == 0 or numel % known:
            raise TransformError(f"cannot reshape {numel} elements (shape {tuple(in_shape)}) into {tuple(shape)}: "
                                 f"{numel} is not a multiple of {known}")
        shape[unknown[0]] = numel // known
    elif known != numel:
        raise TransformError(f"cannot reshape {numel} elements (shape {tuple(in_shape)}) into {tuple(shape)} "
                             f"({known} elements)")
    return tuple(shape)


def inverse(ctx: InverseContext) -> Inverse:
    """Reshape back to the input shape (known from a source file)."""
    return Inverse([("reshape", ctx.in_shape())])


@transform("reshape", kernel=reshape, args={"shape": Arg("ints", required=True)}, short="shape", inverse=inverse)
def infer(meta: Meta, shape) -> Meta:
    """New shape, same element count and order (C order); one dimension may be -1."""
    return Meta(resolve_shape(meta.shape, shape), meta.dtype)


@static_check("reshape")
def static(shape) -> None:
    if sum(1 for d in shape if d == -1) > 1:
        raise TransformError(f"reshape to {tuple(shape)}: only one dimension may be -1")
    bad = [d for d in shape if d < -1]
    if bad:
        raise TransformError(f"reshape to {tuple(shape)}: dimension {bad[0]} is negative")
