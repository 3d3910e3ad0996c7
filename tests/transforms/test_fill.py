"""fill (mapspec/transforms/fill.py)."""

from __future__ import annotations

import numpy as np

from transforms_util import K, arange


def test_fill_with_condition():
    x = arange(3)
    np.testing.assert_array_equal(K["fill"](x, value=1.0, when=True), [1, 1, 1])
    np.testing.assert_array_equal(K["fill"](x, value=1.0, when=False), x)
