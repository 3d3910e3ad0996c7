"""cast: change the dtype (refusing NaN/inf or out-of-range values when casting to an integer type)."""

from __future__ import annotations

import numpy as np

from .. import dtypes
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


@transform("cast", kernel=cast, args={"dtype": Arg("dtype", required=True)}, short="dtype")
def infer(meta: Meta, dtype: str) -> Meta:
    """Convert to ``dtype`` (float32, float16, bfloat16, int64, ...)."""
    if dtype not in dtypes.DTYPES:
        raise TransformError(f"unknown dtype {dtype!r}")
    return Meta(meta.shape, dtype)
