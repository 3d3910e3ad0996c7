"""cast: change the dtype (refusing NaN/inf or out-of-range values when casting to an integer type)."""

from __future__ import annotations

import numpy as np

from .. import dtypes
from .inverse import Inverse, InverseContext, Lossy, same_axis
from .registry import Arg, Meta, TransformError, transform


def cast(x: np.ndarray, dtype: str) -> np.ndarray:
    target = dtypes.DTYPES[dtype]
    if x.dtype == target.numpy:
        return x
    if target.kind in ("int", "uint") and dtypes.DTYPES[dtypes.name_of(x.dtype)].kind == "float":
        xf = np.asarray(x, dtype=np.float64)
        if not np.isfinite(xf).all():
            raise TransformError(f"cannot cast NaN or infinity to {dtype}")
        info = np.iinfo(target.numpy)
        if xf.size and (xf.min() < info.min or xf.max() > info.max):
            raise TransformError(f"values {xf.min()}..{xf.max()} do not fit {dtype} ({info.min}..{info.max})")
    return x.astype(target.numpy)


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
