"""transpose: permute axes (e.g. OIHW -> HWIO is [2, 3, 1, 0])."""

from __future__ import annotations

import numpy as np

from .inverse import Inverse, InverseContext, NotInvertible
from .registry import Arg, Meta, TransformError, static_check, transform


def transpose(x: np.ndarray, axes) -> np.ndarray:
    return np.transpose(x, check_axes(x.ndim, axes))


def check_axes(ndim: int, axes) -> tuple:
    axes = tuple(int(a) for a in axes)
    if len(axes) != ndim:
        raise TransformError(f"transpose axes {list(axes)} name {len(axes)} axes but the tensor has {ndim}")
    norm = tuple(a % ndim if -ndim <= a < ndim else None for a in axes)
    if None in norm or sorted(norm) != list(range(ndim)):
        raise TransformError(f"transpose axes {list(axes)} are not a permutation of 0..{ndim - 1}")
    return norm


def inverse(ctx: InverseContext) -> Inverse:
    """The inverse permutation; input axis a lands at the output position that names it."""
    axes = ctx.static_ints("axes")
    try:
        axes = check_axes(len(axes), axes)
    except TransformError as e:
        raise NotInvertible(str(e)) from None
    inv = [axes.index(i) for i in range(len(axes))]
    return Inverse([("transpose", inv)], axis=lambda a: axes.index(a) if 0 <= a < len(axes) else None)


@transform("transpose", kernel=transpose, args={"axes": Arg("ints", required=True)}, short="axes",
           inverse=inverse)
def infer(meta: Meta, axes) -> Meta:
    """Permute axes: output axis i is input axis axes[i]."""
    axes = check_axes(len(meta.shape), axes)
    return Meta(tuple(meta.shape[a] for a in axes), meta.dtype)


@static_check("transpose")
def static(axes) -> None:
    check_axes(len(axes), axes)
