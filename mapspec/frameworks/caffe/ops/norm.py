"""BatchNorm, Scale, Bias and LRN with Caffe's inference semantics.

* BatchNorm (``batch_norm_layer.cpp``): blobs are the running mean and variance sums and a
  one-element moving-average factor; the statistics used are ``blob / factor`` (a factor of
  0 gives statistics 0).  ``y = (x - mean) / sqrt(var + eps)`` per channel (axis 1), no
  affine part (Caffe puts that in a following Scale layer).  ``use_global_stats`` defaults
  to true at TEST; an explicit ``use_global_stats: false`` normalises with the batch's own
  statistics (biased variance), as Caffe does even at TEST.
* Scale / Bias (``scale_layer.cpp``, ``bias_layer.cpp``): a parameter covering input axes
  ``axis .. axis + num_axes`` (``num_axes: -1`` = to the end), broadcast over the others; a
  second bottom replaces the learned blob; a scalar (0-axis) parameter applies everywhere.
* LRN (``lrn_layer.cpp``): ACROSS_CHANNELS ``scale = k + alpha / n * sum(x^2 over n channels
  centred on c)``; WITHIN_CHANNEL is built in Caffe from an AVE pooling of ``x^2`` (kernel n,
  pad (n-1)/2, divisor n*n) and a Power layer with shift 1: ``scale = 1 + alpha / n^2 *
  sum(x^2 over the n x n window)`` (``k`` is not used); ``y = x * scale^-beta``.
"""

from __future__ import annotations

import torch

from ..geometry import axes_span, lrn_check, operand_axis
from ..layers import batch_norm_global_stats
from .common import LayerError, broadcast_view, fit_blob, need_blobs, need_bottoms

ACROSS_CHANNELS, WITHIN_CHANNEL = 0, 1  # LRNParameter.NormRegion


def batch_norm(layer, bottoms, blobs):
    """Caffe BatchNorm: normalise with the stored statistics divided by the factor blob."""
    need_bottoms(bottoms, 1)
    x = bottoms[0]
    if x.dim() < 2:
        raise LayerError(f"input of shape {tuple(x.shape)} has no channel axis")
    p = layer.batch_norm_param
    c = int(x.shape[1])
    view = (1, c) + (1,) * (x.dim() - 2)
    eps = torch.tensor(p.eps, dtype=torch.float32)
    if batch_norm_global_stats(p):  # unset: True at TEST
        need_blobs(blobs, 3, "mean, variance, moving-average factor")
        mean = fit_blob(blobs[0], (c,), "blob 0 (mean)")
        var = fit_blob(blobs[1], (c,), "blob 1 (variance)")
        factor = fit_blob(blobs[2], (1,), "blob 2 (moving-average factor)")
        scale = torch.where(factor == 0, torch.zeros_like(factor), 1 / factor)
        mean, var = mean * scale, var * scale
    else:
        dims = [0] + list(range(2, x.dim()))
        mean = x.mean(dim=dims)
        var = ((x - mean.reshape(view)) ** 2).mean(dim=dims)
    return [(x - mean.reshape(view)) / torch.sqrt(var + eps).reshape(view)]


def _apply(x, param, axis, what, op):
    a = operand_axis(tuple(x.shape), tuple(param.shape), axis, what)
    return op(x, broadcast_view(param, x.dim(), a))


def scale(layer, bottoms, blobs):
    """y = x * scale (+ bias); scale is blob 0, or bottom 1 in the two-bottom form."""
    need_bottoms(bottoms, 1, 2)
    x = bottoms[0]
    p = layer.scale_param
    n = (1 if len(bottoms) == 1 else 0) + bool(p.bias_term)
    names = [w for w, on in (("scale", len(bottoms) == 1), ("bias", p.bias_term)) if on]
    need_blobs(blobs, n, " and ".join(names) or "none: the scale is bottom 1")
    if len(bottoms) == 2:
        s, bias_axes = bottoms[1], bottoms[1].dim()
    else:
        s = fit_blob(blobs[0], axes_span(tuple(x.shape), p.axis, p.num_axes, "scale_param"), "blob 0 (scale)")
        bias_axes = p.num_axes
    y = _apply(x, s, p.axis, "scale", torch.mul)
    if p.bias_term:
        b = fit_blob(blobs[-1], axes_span(tuple(x.shape), p.axis, bias_axes, "scale_param"),
                     f"blob {len(blobs) - 1} (bias)")
        y = _apply(y, b, p.axis, "bias", torch.add)
    return [y]


def bias(layer, bottoms, blobs):
    """y = x + bias; bias is blob 0, or bottom 1 in the two-bottom form."""
    need_bottoms(bottoms, 1, 2)
    x = bottoms[0]
    p = layer.bias_param
    if len(bottoms) == 2:
        need_blobs(blobs, 0, "none: the bias is bottom 1")
        b = bottoms[1]
    else:
        need_blobs(blobs, 1, "bias")
        b = fit_blob(blobs[0], axes_span(tuple(x.shape), p.axis, p.num_axes, "bias_param"), "blob 0 (bias)")
    return [_apply(x, b, p.axis, "bias", torch.add)]


def lrn_across_channels(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """x * (k + alpha/size * sum of x^2 over channels c - (size-1)/2 .. c + (size-1)/2)^-beta.

    Channels outside the input count as zeros (Caffe pads with zeros); a window wider than
    the input is cut to the channels that exist, so an absurd ``local_size`` costs nothing.
    """
    c = x.shape[1]
    pre = min((size - 1) // 2, c - 1)
    sq = torch.nn.functional.pad(x * x, (0, 0, 0, 0, pre, pre))
    total = sq[:, 0:c]
    for i in range(1, 2 * pre + 1):
        total = total + sq[:, i:i + c]
    scale_ = torch.tensor(k, dtype=torch.float32) + torch.tensor(alpha / size, dtype=torch.float32) * total
    return x * torch.pow(scale_, -beta)


def lrn_within_channel(x: torch.Tensor, size: int, alpha: float, beta: float) -> torch.Tensor:
    """Caffe's composite: x * (1 + alpha * AVE-pool(x^2, size, pad (size-1)/2, stride 1))^-beta.

    With stride 1 and that padding every window ends inside the padded bounds, so Caffe's
    AVE divisor is size * size everywhere; the sums only need the pixels that exist.
    """
    pre = (size - 1) // 2
    ph, pw = min(pre, x.shape[2] - 1), min(pre, x.shape[3] - 1)
    sums = torch.nn.functional.avg_pool2d(x * x, (2 * ph + 1, 2 * pw + 1), stride=1, padding=(ph, pw),
                                          divisor_override=1)
    mean = sums / torch.tensor(float(size * size), dtype=torch.float32)
    return x * torch.pow(1 + torch.tensor(alpha, dtype=torch.float32) * mean, -beta)


def lrn(layer, bottoms, blobs):
    """Local response normalisation across or within channels."""
    need_bottoms(bottoms, 1)
    need_blobs(blobs, 0, "LRN has no parameters")
    x = bottoms[0]
    p = layer.lrn_param
    lrn_check(p, tuple(x.shape))
    size = int(p.local_size)
    if p.norm_region == ACROSS_CHANNELS:
        return [lrn_across_channels(x, size, p.alpha, p.beta, p.k)]
    if p.norm_region == WITHIN_CHANNEL:
        return [lrn_within_channel(x, size, p.alpha, p.beta)]
    raise LayerError(f"unknown normalization region {p.norm_region}")
