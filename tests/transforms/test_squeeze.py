"""squeeze/unsqueeze (mapspec/transforms/squeeze.py)."""

from __future__ import annotations

import numpy as np
import pytest

from mapspec.transforms import TransformError

from transforms_util import K, arange, infer


def test_squeeze_and_unsqueeze():
    w = arange(5, 4, 1, 1)
    flat = K["squeeze"](w, axes=[2, 3])
    assert flat.shape == (5, 4) and np.shares_memory(flat, w)
    np.testing.assert_array_equal(K["unsqueeze"](flat, axes=[2, 3]), w)
    assert infer("unsqueeze", (5, 4), axes=[0, -1]).shape == (1, 5, 4, 1)
    with pytest.raises(TransformError, match="cannot squeeze axis 1: it has size 4, not 1"):
        infer("squeeze", (5, 4, 1, 1), axes=[1])
