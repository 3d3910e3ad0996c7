"""Element-wise layers: ReLU, PReLU, Sigmoid, TanH, Power and the other neuron layers.

Formulas are those of Caffe's CPU forward code: ReLU ``max(x, 0) + slope * min(x, 0)``,
PReLU the same with a per-channel (axis 1) or shared slope blob, Power ``(shift + scale *
x) ^ power`` (a constant when ``power * scale == 0``), ELU, Exp, Log, BNLL, AbsVal,
Threshold (``x > t``), Clip.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .common import LayerError, fit_blob, need_blobs, need_bottoms


def _one(bottoms, blobs) -> torch.Tensor:
    need_bottoms(bottoms, 1)
    need_blobs(blobs, 0, "this layer has no parameters")
    return bottoms[0]


def relu(layer, bottoms, blobs):
    """max(x, 0) + negative_slope * min(x, 0)."""
    x = _one(bottoms, blobs)
    slope = layer.relu_param.negative_slope
    if slope == 0:
        return [F.relu(x)]
    return [torch.clamp(x, min=0) + torch.tensor(slope, dtype=torch.float32) * torch.clamp(x, max=0)]


def prelu(layer, bottoms, blobs):
    """max(x, 0) + a_c * min(x, 0), a_c per channel (axis 1) or one shared a."""
    need_bottoms(bottoms, 1)
    x = bottoms[0]
    if x.dim() < 2:
        raise LayerError(f"input must have at least 2 axes, not shape {tuple(x.shape)}")
    shared = layer.prelu_param.channel_shared
    need_blobs(blobs, 1, "the negative slopes")
    a = fit_blob(blobs[0], () if shared else (int(x.shape[1]),), "blob 0 (slopes)")
    a = a if shared else a.reshape((1, -1) + (1,) * (x.dim() - 2))
    return [torch.clamp(x, min=0) + a * torch.clamp(x, max=0)]


def sigmoid(layer, bottoms, blobs):
    return [torch.sigmoid(_one(bottoms, blobs))]


def tanh(layer, bottoms, blobs):
    return [torch.tanh(_one(bottoms, blobs))]


def absval(layer, bottoms, blobs):
    return [torch.abs(_one(bottoms, blobs))]


def bnll(layer, bottoms, blobs):
    """log(1 + exp(x)), computed as x + log(1 + exp(-x)) for x > 0."""
    x = _one(bottoms, blobs)
    return [torch.where(x > 0, x + torch.log1p(torch.exp(-x)), torch.log1p(torch.exp(x)))]


def elu(layer, bottoms, blobs):
    """max(x, 0) + alpha * (exp(min(x, 0)) - 1)."""
    x = _one(bottoms, blobs)
    alpha = torch.tensor(layer.elu_param.alpha, dtype=torch.float32)
    return [torch.clamp(x, min=0) + alpha * (torch.exp(torch.clamp(x, max=0)) - 1)]


def power(layer, bottoms, blobs):
    """(shift + scale * x) ^ power; when power * scale == 0 the input is ignored."""
    x = _one(bottoms, blobs)
    p = layer.power_param
    power_, scale_ = torch.tensor(p.power, dtype=torch.float32), torch.tensor(p.scale, dtype=torch.float32)
    if float(power_ * scale_) == 0:  # Caffe's diff_scale, in float
        value = 1.0 if p.power == 0 else float(torch.pow(torch.tensor(p.shift, dtype=torch.float32), power_))
        return [torch.full_like(x, value)]
    y = x
    if p.scale != 1:
        y = y * torch.tensor(p.scale, dtype=torch.float32)
    if p.shift != 0:
        y = y + torch.tensor(p.shift, dtype=torch.float32)
    if p.power != 1:
        y = torch.pow(y, torch.tensor(p.power, dtype=torch.float32))
    return [y]


def _base_log(base: float, what: str) -> float:
    if base == -1:
        return 1.0
    if not base > 0:
        raise LayerError(f"{what}.base must be strictly positive or -1 (e), not {base}")
    value = math.log(base)
    if value == 0:
        raise LayerError(f"{what}.base 1 gives log(base) = 0")
    return value


def exp(layer, bottoms, blobs):
    """base ^ (shift + scale * x), base -1 meaning e."""
    x = _one(bottoms, blobs)
    p = layer.exp_param
    inner = _base_log(p.base, "exp_param") * p.scale
    outer = 1.0 if p.shift == 0 else (math.exp(p.shift) if p.base == -1 else math.pow(p.base, p.shift))
    y = torch.exp(x if inner == 1 else x * torch.tensor(inner, dtype=torch.float32))
    return [y if outer == 1 else y * torch.tensor(outer, dtype=torch.float32)]


def log(layer, bottoms, blobs):
    """log_base(shift + scale * x), base -1 meaning e."""
    x = _one(bottoms, blobs)
    p = layer.log_param
    base_scale = 1.0 / _base_log(p.base, "log_param")
    y = x
    if p.scale != 1:
        y = y * torch.tensor(p.scale, dtype=torch.float32)
    if p.shift != 0:
        y = y + torch.tensor(p.shift, dtype=torch.float32)
    y = torch.log(y)
    return [y if base_scale == 1 else y * torch.tensor(base_scale, dtype=torch.float32)]


def threshold(layer, bottoms, blobs):
    """1 where x > threshold, else 0."""
    x = _one(bottoms, blobs)
    return [(x > layer.threshold_param.threshold).to(x.dtype)]


def clip(layer, bottoms, blobs):
    """min(max(x, min), max)."""
    x = _one(bottoms, blobs)
    p = layer.clip_param
    if not (p.HasField("min") and p.HasField("max")):
        raise LayerError("clip_param needs both min and max")
    return [torch.clamp(torch.clamp(x, min=p.min), max=p.max)]
