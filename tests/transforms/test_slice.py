"""slice (mapspec/transforms/slice_.py) and take: bounds checked when planning."""

from __future__ import annotations

import numpy as np
import pytest

from mapspec.transforms import TransformError

from transforms_util import K, arange, infer


def test_take_and_slice_bounds_are_checked():
    with pytest.raises(TransformError, match="index 20 out of bounds for dimension #1 of size 5"):
        infer("take", (2, 5), indices=[0, 20], axis=1)
    with pytest.raises(TransformError, match="slice stop 9 out of bounds for dimension #0 of size 4"):
        infer("slice", (4,), start=0, stop=9)
    assert infer("slice", (10, 2), start=2, stop=8, step=3).shape == (2, 2)
    np.testing.assert_array_equal(K["slice"](arange(10), start=2, stop=8, step=3), [2, 5])
