"""ungroup / group: grouped-convolution weights <-> dense block-diagonal weights.

Caffe, PyTorch and Keras store a grouped convolution's weight as
``(out, in / groups, *kernel)``: output channels ``[g*out/groups, (g+1)*out/groups)``
see only input channels ``[g*in/groups, (g+1)*in/groups)``.  ``ungroup`` builds the
equivalent dense ``(out, in, *kernel)`` weight (zeros off the diagonal blocks), for
targets without grouped convolutions; ``group`` takes the diagonal blocks back and
refuses a weight whose off-diagonal blocks are not zero.
"""

from __future__ import annotations

import numpy as np

from .inverse import Inverse, InverseContext
from .registry import Arg, Meta, TransformError, static_check, transform


def _check(shape, groups: int, what: str) -> tuple[int, int]:
    if len(shape) < 2:
        raise TransformError(f"{what} needs a weight with at least 2 dimensions (out, in, ...), got {tuple(shape)}")
    static(groups)
    out = shape[0]
    if out % groups:
        raise TransformError(f"{out} output channels cannot be divided into {groups} groups")
    return out // groups, shape[1]


def ungroup(x: np.ndarray, groups: int) -> np.ndarray:
    out_g, in_g = _check(x.shape, groups, "ungroup")
    dense = np.zeros((x.shape[0], in_g * groups) + tuple(x.shape[2:]), dtype=x.dtype)
    if not x.size:  # nothing to place (and `groups` may be huge: no loop over empty blocks)
        return dense
    for g in range(groups):
        dense[g * out_g:(g + 1) * out_g, g * in_g:(g + 1) * in_g] = x[g * out_g:(g + 1) * out_g]
    return dense


def group(x: np.ndarray, groups: int) -> np.ndarray:
    out_g, in_total = _check(x.shape, groups, "group")
    if in_total % groups:
        raise TransformError(f"{in_total} input channels cannot be divided into {groups} groups")
    in_g = in_total // groups
    if not x.size:
        return np.zeros((out_g * groups, in_g) + tuple(x.shape[2:]), dtype=x.dtype)
    parts = []
    for g in range(groups):
        rows = x[g * out_g:(g + 1) * out_g]
        mask = np.ones(in_total, dtype=bool)
        mask[g * in_g:(g + 1) * in_g] = False
        if np.any(rows[:, mask] != 0):
            raise TransformError(f"the weight is not block-diagonal: output group {g} has nonzero weights outside "
                                 f"input channels {g * in_g}..{(g + 1) * in_g - 1}, so it is not a grouped "
                                 f"convolution with {groups} groups")
        parts.append(rows[:, g * in_g:(g + 1) * in_g])
    return np.concatenate(parts, axis=0)


def inverse_ungroup(ctx: InverseContext) -> Inverse:
    """group takes the diagonal blocks back (the rest is zeros)."""
    return Inverse([("group", ctx.args["groups"])])


def inverse_group(ctx: InverseContext) -> Inverse:
    """group refuses a weight that is not block-diagonal, so ungroup restores it exactly."""
    return Inverse([("ungroup", ctx.args["groups"])])


@transform("ungroup", kernel=ungroup, args={"groups": Arg("int", required=True)}, short="groups",
           inverse=inverse_ungroup)
def infer_ungroup(meta: Meta, groups: int) -> Meta:
    """Grouped weight (out, in/groups, ...) -> dense block-diagonal weight (out, in, ...)."""
    _, in_g = _check(meta.shape, groups, "ungroup")
    return Meta((meta.shape[0], in_g * groups) + tuple(meta.shape[2:]), meta.dtype)


@transform("group", kernel=group, args={"groups": Arg("int", required=True)}, short="groups",
           inverse=inverse_group)
def infer_group(meta: Meta, groups: int) -> Meta:
    """Dense block-diagonal weight (out, in, ...) -> grouped weight (out, in/groups, ...)."""
    _check(meta.shape, groups, "group")
    if meta.shape[1] % groups:
        raise TransformError(f"{meta.shape[1]} input channels cannot be divided into {groups} groups")
    return Meta((meta.shape[0], meta.shape[1] // groups) + tuple(meta.shape[2:]), meta.dtype)


@static_check("group")
@static_check("ungroup")
def static(groups: int) -> None:
    if groups < 1:
        raise TransformError(f"groups must be at least 1, got {groups}")
