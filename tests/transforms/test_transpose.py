"""transpose (mapspec/transforms/transpose.py): kernel and shape inference, a property test of the round trip."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mapspec.transforms import TransformError

from transforms_util import K, arange, infer, shapes


@given(shapes, st.data())
def test_transpose_round_trip_and_inference(shape, data):
    x = arange(*shape)
    axes = data.draw(st.permutations(list(range(len(shape)))))
    y = K["transpose"](x, axes)
    assert infer("transpose", shape, axes=axes).shape == y.shape
    inverse = list(np.argsort(axes))
    np.testing.assert_array_equal(K["transpose"](y, inverse), x)
    # element-wise definition: y[i0, i1, ...] == x[i_{axes^-1}...]
    idx = tuple(data.draw(st.integers(0, d - 1)) for d in y.shape)
    src = [0] * len(shape)
    for out_axis, in_axis in enumerate(axes):
        src[in_axis] = idx[out_axis]
    assert y[idx] == x[tuple(src)]


def test_transpose_errors():
    with pytest.raises(TransformError, match="name 3 axes but the tensor has 2"):
        infer("transpose", (2, 3), axes=[0, 1, 2])
    with pytest.raises(TransformError, match="not a permutation"):
        infer("transpose", (2, 3), axes=[0, 0])
