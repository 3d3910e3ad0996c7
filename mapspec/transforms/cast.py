"""cast: change the dtype, refusing what would corrupt values (see :mod:`mapspec.numeric`).

NaN or infinity never becomes an integer; a value outside the target's range (an integer
that would wrap, a float that would become infinity in float16) and a fraction an integer
would drop are refused unless the rule says ``allow: [overflow]`` / ``allow: [truncate]``.
"""

from __future__ import annotations

import numpy as np

from .. import dtypes, numeric
from .inverse import Inverse, InverseContext, Lossy, same_axis
from .registry import Arg, Meta, TransformError, transform


def cast(x: np.ndarray, dtype: str, allow: frozenset = frozenset()) -> np.ndarray:
    target = dtypes.DTYPES[dtype]
    if x.dtype == target.numpy:
        return x
    return numeric.cast(x, target.numpy, allow)


def inverse(ctx: InverseContext) -> Inverse:
    """Cast back to the input dtype; exact when the forward cast is widening (numpy's 'safe' casting)."""
    src = ctx.in_dtype()
    dst = dtypes.canonical(ctx.args["dtype"])
    if src != dst and not np.can_cast(dtypes.DTYPES[src].numpy, dtypes.DTYPES[dst].numpy, casting="safe"):
        raise Lossy(f"cast {src} -> {dst} narrows: values are rounded or cut",
                    approx=Inverse([("cast", src)], axis=same_axis))
    return Inverse([("cast", src)] if src != dst else [], axis=same_axis)


@transform("cast", kernel=cast, args={"dtype": Arg("dtype", required=True)}, short="dtype", inverse=inverse)
def infer(meta: Meta, dtype: str) -> Meta:
    """Convert to ``dtype`` (float32, float16, bfloat16, int64, ...)."""
    if dtype not in dtypes.DTYPES:
        raise TransformError(f"unknown dtype {dtype!r}")
    return Meta(meta.shape, dtype)
