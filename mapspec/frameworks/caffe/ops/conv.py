"""Convolution, Deconvolution, InnerProduct and Embed with Caffe's semantics.

Geometry (:func:`mapspec.frameworks.caffe.geometry.conv_geometry`) follows ``base_conv_layer.cpp``:
``kernel_size``/``pad``/``stride``/``dilation`` are repeated fields given once (all spatial axes)
or once per axis; ``kernel_h``/``_w``, ``pad_h``/``_w``, ``stride_h``/``_w`` are the 2-D
alternatives and may not be mixed with them.  Weights are ``(num_output, C / group, *kernel)`` for Convolution and
``(C, num_output / group, *kernel)`` for Deconvolution (Caffe's ``reverse_dimensions``);
torch's conv/conv_transpose weights have exactly these layouts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..geometry import canonical_axis, conv_geometry, conv_groups, conv_out_size, count
from .common import LayerError, Unsupported, check_count, fit_blob, need_bottoms

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_DECONV = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _setup(layer, x: torch.Tensor):
    p = layer.convolution_param
    axis = canonical_axis(p.axis, x.dim(), "convolution_param.axis")
    if axis != 1:
        raise Unsupported(f"convolution_param.axis {p.axis} (only the channel axis 1 is supported)")
    n = x.dim() - 2
    if n not in _CONV:
        raise Unsupported(f"{n}-D convolution of a {x.dim()}-D input (1 to 3 spatial axes are supported)")
    g = conv_geometry(p, n)
    channels = int(x.shape[1])
    num_output, group = conv_groups(p, channels)
    return p, g, channels, num_output, group


def _weights(blobs, p, weight_shape, num_output):
    want = 1 + bool(p.bias_term)
    if len(blobs) != want:
        raise LayerError(f"has {len(blobs)} parameter blob(s) but needs {want} (weights"
                         f"{' and bias' if p.bias_term else ''}; bias_term: {str(p.bias_term).lower()})")
    w = fit_blob(blobs[0], weight_shape, "blob 0 (weights)")
    b = fit_blob(blobs[1], (num_output,), "blob 1 (bias)") if p.bias_term else None
    return w, b


def _same_shapes(bottoms) -> None:
    for i, t in enumerate(bottoms[1:], 1):
        if tuple(t.shape) != tuple(bottoms[0].shape):
            raise LayerError(f"bottom {i} has shape {tuple(t.shape)} but bottom 0 has {tuple(bottoms[0].shape)} "
                             f"(all bottoms of a convolution share one shape)")


def convolution(layer, bottoms, blobs):
    """Cross-correlation; one top per bottom, all with the same weights."""
    need_bottoms(bottoms, 1, -1)
    _same_shapes(bottoms)
    x = bottoms[0]
    p, g, channels, num_output, group = _setup(layer, x)
    out = [conv_out_size(int(size), k, s, q, d) for size, k, s, q, d in zip(x.shape[2:], *g)]
    check_count((x.shape[0], num_output, *out), "the output")
    w, b = _weights(blobs, p, (num_output, channels // group) + g.kernel, num_output)
    conv = _CONV[x.dim() - 2]
    return [conv(t, w, b, stride=g.stride, padding=g.pad, dilation=g.dilation, groups=group) for t in bottoms]


def deconvolution(layer, bottoms, blobs):
    """Transposed convolution: output = stride * (in - 1) + dilation * (kernel - 1) + 1 - 2 * pad."""
    need_bottoms(bottoms, 1, -1)
    _same_shapes(bottoms)
    x = bottoms[0]
    p, g, channels, num_output, group = _setup(layer, x)
    # the output before the padding is cut off
    outs = [conv_out_size(int(size), k, s, q, d, deconv=True) + 2 * q for size, k, s, q, d in zip(x.shape[2:], *g)]
    check_count((x.shape[0], num_output, *outs), "the uncropped output")
    w, b = _weights(blobs, p, (channels, num_output // group) + g.kernel, num_output)
    deconv = _DECONV[x.dim() - 2]
    return [deconv(t, w, b, stride=g.stride, padding=g.pad, dilation=g.dilation, groups=group) for t in bottoms]


def inner_product(layer, bottoms, blobs):
    """y = x W^T + b with x flattened from ``axis`` on; W is (K, N) instead with ``transpose``."""
    need_bottoms(bottoms, 1)
    x = bottoms[0]
    p = layer.inner_product_param
    axis = canonical_axis(p.axis, x.dim(), "inner_product_param.axis")
    n, k = int(p.num_output), count(x.shape, axis)
    if n <= 0:
        raise LayerError("inner_product_param.num_output must be positive")
    w, b = _weights(blobs, p, (k, n) if p.transpose else (n, k), n)
    flat = x.reshape(count(x.shape, 0, axis), k)
    y = flat @ w if p.transpose else flat @ w.t()
    if b is not None:
        y = y + b
    return [y.reshape(tuple(x.shape[:axis]) + (n,))]


def embed(layer, bottoms, blobs):
    """A lookup table: each input value is a row index into W (input_dim x num_output), plus bias."""
    need_bottoms(bottoms, 1)
    x = bottoms[0]
    p = layer.embed_param
    n, vocab = int(p.num_output), int(p.input_dim)
    w, b = _weights(blobs, p, (vocab, n), n)
    idx = x.to(torch.int64)
    if not torch.equal(idx.to(x.dtype), x):
        raise LayerError("non-integer input value (Embed inputs are row indices)")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= vocab):
        bad = int(idx.min()) if int(idx.min()) < 0 else int(idx.max())
        raise LayerError(f"index {bad} out of bounds for input_dim {vocab}")
    y = w[idx]
    return [y + b if b is not None else y]
