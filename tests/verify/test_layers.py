"""Lining up activations: features permuted by the spec (rotary halves), last positions, channel slices."""

from __future__ import annotations

import numpy as np

from mapspec.verify.layers import candidates, last_position


def test_features_permuted_are_found_and_undone():
    a = np.arange(2 * 5 * 8, dtype=np.float64).reshape(2, 5, 8) ** 1.5
    perm = np.array([0, 2, 4, 6, 1, 3, 5, 7])  # interleaved pairs -> halves
    b = a[..., perm]
    notes = {note: (x, y) for note, x, y in candidates(a, b)}
    x, y = notes["features permuted"]
    np.testing.assert_array_equal(x, y)
    assert [n for n, _, _ in candidates(a, a.copy())] == [""]  # nothing to undo: one way only


def test_last_position_and_channel_slices():
    a = np.arange(3 * 4, dtype=np.float32).reshape(1, 3, 4)
    x, y = last_position(a, a[:, -1:])
    np.testing.assert_array_equal(x, y)
    assert last_position(a, a[:, :2]) is None
    s = np.arange(1 * 2 * 2 * 2, dtype=np.float32).reshape(1, 2, 2, 2)
    t = np.concatenate([s * 0, s], axis=1)  # a concatenation whose last channels are the source layer's
    [(note, x, y)] = candidates(s, t)
    assert note == "last 2 of 4 channels"
    np.testing.assert_array_equal(x, y)
