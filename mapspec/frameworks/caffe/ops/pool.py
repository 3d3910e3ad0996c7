"""Pooling with Caffe's output size, pad correction and AVE divisor (``pooling_layer.cpp``).

Geometry, rounding and output size come from :mod:`mapspec.frameworks.caffe.geometry`
(``pool_geometry``, ``pooled_size``), the same rules the prototxt reader infers shapes with.
Output size per spatial axis: ``ceil((in + 2 * pad - kernel) / stride) + 1`` (``floor`` when
``round_mode: FLOOR`` or the fork field ``ceil_mode: false``); then, if the layer has any
padding (on either axis) and the last window would start at or beyond ``in + pad``, one
fewer.  With ceil rounding
the last window may run past the padded input: MAX looks only at real pixels (its
result starts at -FLT_MAX), AVE sums the real pixels of the window and divides by the
window size clipped to ``[-pad, in + pad)`` (not to the image, not the full kernel).
STOCHASTIC pooling is not implemented (Caffe's CPU code has none either).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..geometry import AVE, MAX, STOCHASTIC, PoolGeometry, pool_geometry, pooled_shape
from .common import LayerError, Unsupported, check_count, need_bottoms

FLT_MAX = float(np.finfo(np.float32).max)


def _padded(x: torch.Tensor, geo: PoolGeometry, out: tuple, value: float) -> torch.Tensor:
    """``x`` padded by ``pad`` before and as much as the last window needs after (or cropped)."""
    spec = []
    for axis in (1, 0):  # F.pad lists the last axis first
        size = x.shape[2 + axis]
        need = (out[axis] - 1) * geo.stride[axis] + geo.kernel[axis]  # length covered from -pad on
        spec += [geo.pad[axis], need - geo.pad[axis] - size]
    return F.pad(x, spec, value=value)


def _ave_divisor(size: int, kernel: int, stride: int, pad: int, out: int) -> torch.Tensor:
    """Caffe's per-output AVE divisor along one axis: the window clipped to [-pad, size + pad)."""
    start = torch.arange(out, dtype=torch.int64) * stride - pad
    end = torch.clamp(start + kernel, max=size + pad)
    return (end - start).to(torch.float32)


def pool2d(x: torch.Tensor, geo: PoolGeometry) -> torch.Tensor:
    """MAX or AVE pooling of an (N, C, H, W) tensor exactly as Caffe's CPU forward computes it."""
    if x.dim() != 4:
        raise LayerError(f"input must have 4 axes (num, channels, height, width), not shape {tuple(x.shape)}")
    if geo.global_pooling:
        geo = geo._replace(kernel=(int(x.shape[2]), int(x.shape[3])))
    out = pooled_shape(tuple(int(d) for d in x.shape[2:]), geo)
    check_count(tuple(x.shape[:2]) + tuple((out[a] - 1) * geo.stride[a] + geo.kernel[a] for a in (0, 1)),
                "the padded input")
    check_count(tuple(x.shape[:2]) + out, "the output")
    method = geo.method
    if method == MAX:
        y = F.max_pool2d(_padded(x, geo, out, -math.inf), geo.kernel, geo.stride)
        return torch.clamp(y[:, :, :out[0], :out[1]], min=-FLT_MAX)  # windows start at -FLT_MAX
    if method == AVE:
        sums = F.avg_pool2d(_padded(x, geo, out, 0.0), geo.kernel, geo.stride, divisor_override=1)
        div = torch.outer(*(_ave_divisor(int(x.shape[2 + a]), geo.kernel[a], geo.stride[a], geo.pad[a], out[a])
                            for a in (0, 1)))
        return sums[:, :, :out[0], :out[1]] / div
    if method == STOCHASTIC:
        raise Unsupported("STOCHASTIC pooling (Caffe's CPU code does not implement it either)")
    raise LayerError(f"unknown pooling method {method}")


def pooling(layer, bottoms, blobs):
    """The Pooling layer (one top; a second top for MAX's argmax mask is not supported)."""
    need_bottoms(bottoms, 1)
    if len(layer.top) > 1:
        raise Unsupported("a second Pooling top (the MAX argmax mask)")
    if blobs:
        raise LayerError(f"Pooling has no parameters but {len(blobs)} blob(s) were given")
    g = pool_geometry(layer.pooling_param)  # a global kernel is set from the input by pool2d
    return [pool2d(bottoms[0], g)]
