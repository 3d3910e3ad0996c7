"""Weight-level diagnosis: relations between a source kernel and its converted counterpart, in OIHW."""

from __future__ import annotations

import numpy as np

from mapspec.verify import diagnose_weights

W = np.arange(4 * 3 * 3 * 3, dtype=np.float32).reshape(4, 3, 3, 3)  # distinct values: any permutation shows


def causes(t, target_layout="oihw"):
    return diagnose_weights([("conv1_weight", W, "conv1.weight", t)], "oihw", target_layout)


def test_swapped_kernel_axes():
    [c] = causes(W.swapaxes(2, 3))
    assert c.startswith("swapped kernel axes: conv1.weight holds conv1_weight with its H and W axes swapped")


def test_swapped_kernel_axes_in_a_keras_kernel():
    # HWIO, but written with H and W exchanged (transpose [3, 2, 1, 0] instead of [2, 3, 1, 0])
    [c] = causes(W.transpose(3, 2, 1, 0), target_layout="hwio")
    assert c.startswith("swapped kernel axes")
    [c] = causes(W.transpose(2, 3, 1, 0), target_layout="hwio")  # the right transpose: OIHW-equal
    assert c.startswith("kernels copied unchanged")


def test_flipped_kernel_and_reversed_input_channels():
    assert causes(W[:, :, ::-1, ::-1])[0].startswith("flipped kernel: conv1.weight holds conv1_weight rotated")
    assert "RGB vs BGR" in causes(W[:, ::-1])[0]


def test_unchanged_kernels_point_at_the_target_semantics():
    assert causes(W.copy())[0].startswith("kernels copied unchanged (conv1.weight)")


def test_no_relation_no_weight_cause():
    assert causes(W[::-1]) == [] and causes(W * 2) == []
