"""Pooling with Caffe's output size, pad correction and AVE divisor (``pooling_layer.cpp``).

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
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from .common import LayerError, Unsupported, check_count, need_bottoms

FLT_MAX = float(np.finfo(np.float32).max)
MAX, AVE, STOCHASTIC = 0, 1, 2  # PoolingParameter.PoolMethod
CEIL, FLOOR = 0, 1  # PoolingParameter.RoundMode


class PoolGeometry(NamedTuple):
    """(h, w) kernel, stride and pad, the rounding, and whether the kernel is the whole input."""

    kernel: tuple
    stride: tuple
    pad: tuple
    ceil: bool
    global_pooling: bool


def pool_geometry(p) -> PoolGeometry:
    """Caffe's ``PoolingLayer::LayerSetUp`` checks and choices, from a ``PoolingParameter``."""
    has = p.HasField
    if p.global_pooling:
        if has("kernel_size") or has("kernel_h") or has("kernel_w"):
            raise LayerError("with global_pooling: true, the filter size cannot be specified")
        kernel = (0, 0)
    else:
        if has("kernel_size") == (has("kernel_h") and has("kernel_w")):
            raise LayerError("filter size is kernel_size OR kernel_h and kernel_w; not both, not neither")
        kernel = (p.kernel_size,) * 2 if has("kernel_size") else (p.kernel_h, p.kernel_w)
        if min(kernel) <= 0:
            raise LayerError(f"filter dimensions cannot be zero (kernel {kernel})")
    if not ((not has("pad") and has("pad_h") and has("pad_w")) or (not has("pad_h") and not has("pad_w"))):
        raise LayerError("pad is pad OR pad_h and pad_w are required")
    if not ((not has("stride") and has("stride_h") and has("stride_w"))
            or (not has("stride_h") and not has("stride_w"))):
        raise LayerError("stride is stride OR stride_h and stride_w are required")
    pad = (p.pad_h, p.pad_w) if has("pad_h") else (p.pad,) * 2
    stride = (p.stride_h, p.stride_w) if has("stride_h") else (p.stride,) * 2
    if min(stride) <= 0:
        raise LayerError(f"stride must be positive (stride {stride})")
    if p.global_pooling and (pad != (0, 0) or stride != (1, 1)):
        raise LayerError("with global_pooling: true, only pad = 0 and stride = 1")
    if (pad[0] or pad[1]) and not p.global_pooling:
        if p.pool not in (MAX, AVE):
            raise LayerError("padding is implemented only for average and max pooling")
        if pad[0] >= kernel[0] or pad[1] >= kernel[1]:
            raise LayerError(f"pad {pad} must be smaller than the kernel {kernel}")
    ceil = _ceil_rounding(p)
    return PoolGeometry(tuple(int(k) for k in kernel), tuple(int(s) for s in stride), tuple(int(q) for q in pad),
                        ceil, bool(p.global_pooling))


def _ceil_rounding(p) -> bool:
    """BVLC's ``round_mode`` (CEIL default) or the forks' ``ceil_mode`` (true default); conflicts are errors."""
    fork = getattr(p, "ceil_mode", True) if _has(p, "ceil_mode") else None
    bvlc = (p.round_mode == CEIL) if _has(p, "round_mode") else None
    if fork is not None and bvlc is not None and fork != bvlc:
        raise LayerError("round_mode and ceil_mode disagree; give one of them")
    return fork if fork is not None else (bvlc if bvlc is not None else True)


def _has(p, name: str) -> bool:
    return name in p.DESCRIPTOR.fields_by_name and p.HasField(name)


def pooled_size(size: int, kernel: int, stride: int, pad: int, ceil: bool, padded: bool | None = None) -> int:
    """One axis of Caffe's output size, with the correction that the last window starts inside.

    Caffe applies the correction to both axes when either has padding (``if (pad_h_ ||
    pad_w_)``): ``padded`` says whether the layer has any; by default, this axis's pad.
    """
    rnd = math.ceil if ceil else math.floor
    out = int(rnd(float(np.float32(size + 2 * pad - kernel) / np.float32(stride)))) + 1
    if (bool(pad) if padded is None else padded) and (out - 1) * stride >= size + pad:
        out -= 1
    return out


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


def pool2d(x: torch.Tensor, method: int, geo: PoolGeometry) -> torch.Tensor:
    """MAX or AVE pooling of an (N, C, H, W) tensor exactly as Caffe's CPU forward computes it."""
    if x.dim() != 4:
        raise LayerError(f"input must have 4 axes (num, channels, height, width), not shape {tuple(x.shape)}")
    if geo.global_pooling:
        geo = geo._replace(kernel=(int(x.shape[2]), int(x.shape[3])))
    padded = any(geo.pad)
    out = tuple(pooled_size(int(x.shape[2 + a]), geo.kernel[a], geo.stride[a], geo.pad[a], geo.ceil, padded)
                for a in (0, 1))
    if min(out) <= 0:
        raise LayerError(f"input {tuple(x.shape[2:])} is smaller than the pooling window {geo.kernel}")
    check_count(tuple(x.shape[:2]) + tuple((out[a] - 1) * geo.stride[a] + geo.kernel[a] for a in (0, 1)),
                "the padded input")
    check_count(tuple(x.shape[:2]) + out, "the output")
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
    return [pool2d(bottoms[0], layer.pooling_param.pool, pool_geometry(layer.pooling_param))]
