"""concat: join the input with referenced tensors along an axis."""

from __future__ import annotations

import numpy as np

from .inverse import Inverse, InverseContext, NotInvertible
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


def inverse(ctx: InverseContext) -> Inverse:
    """Slice the input's own part back out; each referenced part becomes an output of its own."""
    steps = ctx._need("the sizes of the joined parts")
    axis = ctx.static_ints("axis", 0)
    if axis < 0:
        axis %= ctx.in_ndim()
    sizes = {(s[0].shape[axis], tuple(m.shape[axis] for m in s[3].get("before") or ()),
              tuple(m.shape[axis] for m in s[3].get("after") or ())) for s in steps}
    if len(sizes) != 1:
        raise NotInvertible("concat joins parts of different sizes from one tensor to the next")
    own, before, after = sizes.pop()
    refs, at = [], 0
    for raw, n in zip(_raw_refs(ctx.args.get("before")), before):
        refs.append((raw, at, at + n))
        at += n
    start = at
    at += own
    for raw, n in zip(_raw_refs(ctx.args.get("after")), after):
        refs.append((raw, at, at + n))
        at += n
    return Inverse([("slice", {"start": start, "stop": start + own, "axis": axis})],
                   axis=lambda a: a if a != axis else None, parts={"axis": axis, "refs": refs})


def _raw_refs(v) -> list:
    out = []
    for r in v or ():
        if isinstance(r, dict):
            raise NotInvertible("concat of an optional reference: the reverse cannot tell whether it was there")
        out.append(r)
    return out


@transform("concat", inverse=inverse, kernel=concat, args={
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
