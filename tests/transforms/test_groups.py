"""ungroup/group (mapspec/transforms/groups.py): a dense equivalent of a grouped convolution and back."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mapspec.transforms import TransformError

from transforms_util import K, arange, conv2d, infer


@given(st.integers(1, 4), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3))
def test_ungroup_then_group_is_identity(groups, out_g, in_g, k):
    w = arange(groups * out_g, in_g, k, k) + 1
    dense = K["ungroup"](w, groups=groups)
    assert dense.shape == infer("ungroup", w.shape, groups=groups).shape == (groups * out_g, groups * in_g, k, k)
    np.testing.assert_array_equal(K["group"](dense, groups=groups), w)
    # everything off the diagonal blocks is zero; the blocks hold the grouped weights
    for g in range(groups):
        for h in range(groups):
            block = dense[g * out_g:(g + 1) * out_g, h * in_g:(h + 1) * in_g]
            if g == h:
                np.testing.assert_array_equal(block, w[g * out_g:(g + 1) * out_g])
            else:
                assert not block.any()


def test_ungroup_gives_an_equivalent_dense_convolution():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 5, 5))
    w = rng.standard_normal((6, 2, 3, 3))
    np.testing.assert_allclose(conv2d(x, K["ungroup"](w, groups=2)), conv2d(x, w, groups=2), atol=1e-12)


def test_group_refuses_non_block_diagonal():
    dense = np.ones((4, 4, 1, 1), dtype=np.float32)
    with pytest.raises(TransformError, match="not block-diagonal"):
        K["group"](dense, groups=2)
