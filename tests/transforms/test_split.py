"""split (mapspec/transforms/split.py): parts joined again give the tensor; errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mapspec.transforms import TransformError

from transforms_util import K, arange, infer, shapes


@given(shapes, st.data())
def test_split_then_concat_is_identity(shape, data):
    axis = data.draw(st.integers(0, len(shape) - 1))
    parts = data.draw(st.sampled_from([p for p in range(1, shape[axis] + 1) if shape[axis] % p == 0]))
    x = arange(*shape)
    pieces = [K["split"](x, parts=parts, take=k, axis=axis) for k in range(parts)]
    for p in pieces:
        assert infer("split", shape, parts=parts, take=0, axis=axis).shape == p.shape
    first, rest = pieces[0], pieces[1:]
    np.testing.assert_array_equal(K["concat"](first, after=rest, axis=axis), x)
    if parts > 1:
        np.testing.assert_array_equal(K["concat"](pieces[-1], before=pieces[:-1], axis=axis), x)


def test_split_errors():
    with pytest.raises(TransformError, match="cannot split dimension #0 of size 5 into 2 equal parts"):
        infer("split", (5, 3), parts=2, take=0)
    with pytest.raises(TransformError, match="take 2 out of range for 2 parts"):
        infer("split", (4, 3), parts=2, take=2)
