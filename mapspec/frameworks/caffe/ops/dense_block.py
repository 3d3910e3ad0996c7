"""Tongcheng/caffe's efficient-DenseNet ``DenseBlock`` layer (TEST phase).

Source: github.com/Tongcheng/caffe @ 1625bb3b, ``src/caffe/layers/DenseBlock_layer.cpp``
(``LayerSetUp``, ``Forward_cpu``) and ``DenseBlock_layer.cu`` (``Forward_gpu``).

For transition t = 0 .. N-1 (N = ``numTransition``, g = ``growthRate``, C_t = ``initChannel`` +
t * g channels in): BN(C_t) -> ReLU -> [with ``use_BC``: 1x1 conv to 4g -> BN(4g) -> ReLU] ->
3x3 conv (pad 1) to g channels, appended to the block's channels; the output has
``initChannel`` + N * g channels.  Dropout is training-only.  Each BN is ``scaler * (x -
mean) / sqrt(var + 1e-5) + bias`` (eps fixed: cuDNN's CUDNN_BN_MIN_EPSILON on GPU, 1e-5 on CPU).

Blobs, index = group * N + t (shapes as ``LayerSetUp`` creates them):

====  ==============================  ==========================================
group  without use_BC (5N + 1 blobs)   with use_BC (10N + 1 blobs)
====  ==============================  ==========================================
0     3x3 filter (g, C_t, 3, 3)       3x3 filter (g, 4g, 3, 3)
1, 2  BN scaler, bias (1, C_t, 1, 1)  same, for the BN before the 1x1 conv
3, 4  BN mean, var (1, C_t, 1, 1)     same
5     --                              1x1 filter (4g, C_t, 1, 1)
6, 7  --                              BN scaler, bias (1, 4g, 1, 1) before the 3x3 conv
8, 9  --                              BN mean, var (1, 4g, 1, 1)
====  ==============================  ==========================================

plus one last blob (index 5N, resp. 10N) of shape (1,): the moving-average factor.

Two facts that matter when converting weights from a standard DenseNet:

* Both convolutions are true convolutions, not Caffe's usual cross-correlation: the GPU
  code sets ``CUDNN_CONVOLUTION`` mode and the CPU code reads ``x[h + 1 - i]`` for filter
  row i.  So a 3x3 filter copied from a standard Convolution layer must be flipped in both
  spatial axes.
* The factor blob: the CPU forward divides mean and variance by it (0 -> statistics 0, as
  in BatchNorm); the GPU forward (what the layer's users run) ignores it and uses the
  stored statistics directly.  ``factor_mode`` selects which ("gpu", the default, or
  "cpu"); both agree when the factor is 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..layers import denseblock_check, denseblock_param_shapes
from .common import LayerError, fit_blob, need_bottoms

EPS = 1e-5
FACTOR_MODES = ("gpu", "cpu")


def _bn(x, scaler, bias, mean, var, factor, use_factor: bool):
    c = x.shape[1]
    if use_factor:
        s = torch.where(factor == 0, torch.zeros_like(factor), 1 / factor)
        mean, var = mean * s, var * s
    view = (1, c, 1, 1)
    return scaler.reshape(view) * ((x - mean.reshape(view)) / torch.sqrt(var.reshape(view) + EPS)) \
        + bias.reshape(view)


def dense_block(layer, bottoms, blobs, factor_mode: str = "gpu"):
    """The whole block, transition by transition (see the module docstring for the layout)."""
    if factor_mode not in FACTOR_MODES:
        raise LayerError(f"unknown DenseBlock factor mode {factor_mode!r} (one of {', '.join(FACTOR_MODES)})")
    need_bottoms(bottoms, 1)
    x = bottoms[0]
    p = layer.denseblock_param
    denseblock_check(p, tuple(x.shape))
    shapes = denseblock_param_shapes(p)  # blob index -> shape, as DenseBlockLayer::LayerSetUp makes them
    n, bc = int(p.numTransition), bool(p.use_BC)
    groups = 10 if bc else 5
    if len(blobs) != len(shapes):
        raise LayerError(f"has {len(blobs)} parameter blob(s) but needs {len(shapes)} ({groups} per transition "
                         f"x numTransition {n} + the moving-average factor; use_BC: {str(bc).lower()})")
    factor = fit_blob(blobs[-1], shapes[-1], f"blob {len(shapes) - 1} (moving-average factor)")
    use_factor = factor_mode == "cpu"

    def blob(group: int, t: int, what: str):
        i = group * n + t
        return fit_blob(blobs[i], shapes[i], f"blob {i} ({what} of transition {t})")

    feats = x
    for t in range(n):
        bn = [blob(k, t, w) for k, w in ((1, "BN scaler"), (2, "BN bias"), (3, "BN mean"), (4, "BN variance"))]
        y = F.relu(_bn(feats, bn[0], bn[1], bn[2], bn[3], factor, use_factor))
        if bc:
            w1 = blob(5, t, "1x1 filter")
            y = F.conv2d(y, w1)
            bn = [blob(k, t, w) for k, w in ((6, "BN scaler"), (7, "BN bias"), (8, "BN mean"), (9, "BN variance"))]
            y = F.relu(_bn(y, bn[0], bn[1], bn[2], bn[3], factor, use_factor))
        w3 = blob(0, t, "3x3 filter")
        y = F.conv2d(y, torch.flip(w3, dims=(2, 3)), padding=1)  # a true convolution (CUDNN_CONVOLUTION)
        feats = torch.cat([feats, y], dim=1)
    return [feats]
