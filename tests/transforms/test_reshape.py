"""reshape (mapspec/transforms/reshape.py): round trip, errors naming the counts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mapspec.transforms import TransformError

from transforms_util import K, arange, infer, shapes


@given(shapes, st.data())
def test_reshape_round_trip(shape, data):
    x = arange(*shape)
    flat = K["reshape"](x, [-1])
    assert flat.shape == (x.size,)
    assert np.shares_memory(flat, x), "reshape of a contiguous tensor must not copy"
    np.testing.assert_array_equal(K["reshape"](flat, list(shape)), x)
    assert infer("reshape", shape, shape=[-1]).shape == (x.size,)


def test_reshape_errors_name_counts():
    with pytest.raises(TransformError, match="cannot reshape 12 elements \\(shape \\(3, 4\\)\\) into \\(5, -1\\)"):
        infer("reshape", (3, 4), shape=[5, -1])
    with pytest.raises(TransformError, match="only one dimension may be -1"):
        infer("reshape", (3, 4), shape=[-1, -1])
    with pytest.raises(TransformError, match="into \\(5,\\) \\(5 elements\\)"):
        infer("reshape", (3, 4), shape=[5])
