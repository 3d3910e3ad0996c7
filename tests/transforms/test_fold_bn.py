"""fold_bn/fold_bn_bias (mapspec/transforms/fold_bn.py): a folded convolution equals convolution then BatchNorm."""

from __future__ import annotations

import numpy as np
import pytest

from mapspec.transforms import Meta, TransformError

from transforms_util import K, conv2d, infer


@pytest.mark.parametrize("factor", [None, 0.5, 0.0])
@pytest.mark.parametrize("with_bias", [False, True])
def test_fold_bn_equals_conv_then_batchnorm(factor, with_bias):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 6, 6))
    w = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4) if with_bias else None
    mean, var = rng.standard_normal(4), rng.uniform(0.5, 2, 4)
    gamma, beta = rng.standard_normal(4), rng.standard_normal(4)
    eps = 1e-3
    f = None if factor is None else np.array([factor])
    stored_mean = mean if factor is None else mean * factor
    stored_var = var if factor is None else var * factor
    # reference: conv, then Caffe BatchNorm (statistics divided by the factor; factor 0 => zero stats), then Scale
    y = conv2d(x, w, b)
    s = 1.0 if factor is None else (0.0 if factor == 0 else 1.0 / factor)
    m_true, v_true = stored_mean * s, stored_var * s
    ref = (y - m_true[None, :, None, None]) / np.sqrt(v_true + eps)[None, :, None, None]
    ref = ref * gamma[None, :, None, None] + beta[None, :, None, None]

    w2 = K["fold_bn"](w, var=stored_var, eps=eps, factor=f, gamma=gamma)
    b2 = K["fold_bn_bias"](stored_mean, var=stored_var, eps=eps, factor=f, gamma=gamma, beta=beta, bias=b)
    np.testing.assert_allclose(conv2d(x, w2, b2), ref, rtol=1e-10, atol=1e-10)
    assert infer("fold_bn", w.shape, var=Meta((4,), "float32"), eps=eps).shape == w.shape


def test_fold_bn_rejects_channel_mismatch():
    with pytest.raises(TransformError, match="var has shape \\(5,\\) \\(5 values\\) but the layer has 4 channels"):
        infer("fold_bn", (4, 3, 1, 1), var=Meta((5,), "float32"), eps=1e-5)
    with pytest.raises(TransformError, match="factor must hold one value"):
        infer("fold_bn", (4, 3, 1, 1), var=Meta((4,), "float32"), eps=1e-5, factor=Meta((2,), "float32"))
