"""take (mapspec/transforms/take.py): reordering an axis."""

from __future__ import annotations

import numpy as np

from transforms_util import K, arange


def test_take_reorders_bgr_to_rgb():
    w = arange(2, 3, 1, 1)
    out = K["take"](w, indices=[2, 1, 0], axis=1)
    np.testing.assert_array_equal(out[:, 0], w[:, 2])
    np.testing.assert_array_equal(out[:, 2], w[:, 0])
