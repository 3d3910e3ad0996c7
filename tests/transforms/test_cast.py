"""cast (mapspec/transforms/cast.py)."""

from __future__ import annotations

import numpy as np
import pytest

from mapspec.transforms import Meta, TransformError

from transforms_util import K, arange, infer


def test_cast():
    import ml_dtypes

    out = K["cast"](arange(3), dtype="bfloat16")
    assert out.dtype == ml_dtypes.bfloat16
    with pytest.raises(TransformError, match="NaN"):
        K["cast"](np.array([np.nan]), dtype="int32")
    with pytest.raises(TransformError, match="do not fit int8"):
        K["cast"](np.array([300.0]), dtype="int8")
    assert infer("cast", (2,), dtype="int64") == Meta((2,), "int64")
