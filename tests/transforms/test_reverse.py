"""reverse (mapspec/transforms/reverse.py)."""

from __future__ import annotations

import numpy as np

from transforms_util import K, arange


def test_reverse():
    np.testing.assert_array_equal(K["reverse"](arange(2, 3), axis=1), [[2, 1, 0], [5, 4, 3]])
