"""Neural-network kernels with MXNet's inference semantics: convolution, dense, norms, activations, pooling.

Each kernel is a pure function ``kernel(attrs, *inputs) -> tensor or tuple of tensors``;
``attrs`` are the typed attributes from :mod:`mapspec.frameworks.mxnet.ops` (MXNet's
defaults filled in).  Inputs arrive in the op's slot order (data, weight, bias, ...).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..ops import deconv_pad_adj, pooled_size
from ....errors import Unsupported  # noqa: F401 - an attribute value the executor does not implement

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_DECONV = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def convolution(a: dict, x, w, b=None):
    """Cross-correlation with groups (depthwise when num_group = channels), stride, pad, dilate."""
    n = len(a["kernel"])
    return _CONV[n](x, w, b, stride=a["stride"], padding=a["pad"], dilation=a["dilate"], groups=a["num_group"])


def deconvolution(a: dict, x, w, b=None):
    """Transposed convolution; weight (C_in, num_filter / num_group, *kernel); pad/adj from target_shape if set."""
    n = len(a["kernel"])
    pad, adj = deconv_pad_adj(a, tuple(x.shape))
    return _DECONV[n](x, w, b, stride=a["stride"], padding=pad, output_padding=adj, groups=a["num_group"],
                      dilation=a["dilate"])


def fully_connected(a: dict, x, w, b=None):
    """y = x W^T + b; with flatten (default) x is first reshaped to (N, -1)."""
    if a["flatten"]:
        x = x.reshape(x.shape[0], -1)
    return F.linear(x, w, b)


def batch_norm(a: dict, x, gamma, beta, mean, var):
    """Inference batch norm with the moving statistics; fix_gamma means gamma = 1 whatever is stored."""
    axis = a["axis"] % x.dim()
    shape = [1] * x.dim()
    shape[axis] = x.shape[axis]
    scale = torch.rsqrt(var + a["eps"])
    if not a["fix_gamma"]:
        scale = scale * gamma
    return (x - mean.reshape(shape)) * scale.reshape(shape) + beta.reshape(shape)


_SELU_ALPHA, _SELU_LAMBDA = 1.6732632423543772, 1.0507009873554805


def leaky_relu(a: dict, x, gamma=None):
    """leaky / prelu (per-channel gamma on axis 1) / elu / selu / gelu / rrelu (inference: mean slope)."""
    kind = a["act_type"]
    if kind == "leaky":
        return torch.where(x > 0, x, x * a["slope"])
    if kind == "prelu":
        g = gamma.reshape([1, -1] + [1] * (x.dim() - 2)) if x.dim() >= 2 else gamma
        return torch.where(x > 0, x, x * g)
    if kind == "rrelu":
        return torch.where(x > 0, x, x * ((a["lower_bound"] + a["upper_bound"]) / 2))
    if kind == "elu":
        return torch.where(x > 0, x, a["slope"] * torch.expm1(x))
    if kind == "selu":
        return _SELU_LAMBDA * torch.where(x > 0, x, _SELU_ALPHA * torch.expm1(x))
    if kind == "gelu":
        return 0.5 * x * (1 + torch.erf(x / math.sqrt(2.0)))
    raise Unsupported(f"LeakyReLU act_type {kind!r}")


_ACTIVATIONS = {
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "softrelu": lambda x: F.softplus(x, beta=1, threshold=20),
    "softsign": lambda x: x / (1 + x.abs()),
}


def activation(a: dict, x):
    fn = _ACTIVATIONS.get(a["act_type"])
    if fn is None:
        raise Unsupported(f"Activation act_type {a['act_type']!r}")
    return fn(x)


def _window_sum(x, kernel, stride):
    """Sum over every (unpadded) window: avg pooling times the window size."""
    n = len(kernel)
    return _AVG[n](x, kernel, stride) * math.prod(kernel)


def pooling(a: dict, x):
    """max / avg / sum pooling, valid or full (ceil) convention, global, count_include_pad (default True).

    Windows are laid out as MXNet does: a 'full' window may hang past the padded input
    (MXNet does not drop it the way torch's ceil_mode does); max ignores padding, avg
    divides by the window's part inside the padded input (count_include_pad) or inside
    the input.
    """
    kind = a["pool_type"]
    n = x.dim() - 2
    spatial = tuple(range(2, x.dim()))
    if a["global_pool"]:
        if kind == "max":
            return x.amax(dim=spatial, keepdim=True)
        if kind == "avg":
            return x.mean(dim=spatial, keepdim=True)
        if kind == "sum":
            return x.sum(dim=spatial, keepdim=True)
        raise Unsupported(f"Pooling pool_type {kind!r}")
    kernel, stride, pad = tuple(a["kernel"]), tuple(a["stride"]), tuple(a["pad"])
    extra = []
    for i in range(n):
        out = pooled_size(int(x.shape[2 + i]), kernel[i], stride[i], pad[i], a["pooling_convention"])
        extra.append((out - 1) * stride[i] + kernel[i] - (x.shape[2 + i] + 2 * pad[i]))
    widths = []
    for i in reversed(range(n)):  # F.pad lists the last axis first
        widths += [pad[i], pad[i] + max(extra[i], 0)]
    if kind == "max":
        return _MAX[n](F.pad(x, widths, value=-math.inf), kernel, stride)
    if kind not in ("avg", "sum"):
        raise Unsupported(f"Pooling pool_type {kind!r}")
    total = _window_sum(F.pad(x, widths), kernel, stride)
    if kind == "sum":
        return total
    include = a["count_include_pad"] is not False
    ones = torch.ones((1, 1) + tuple(x.shape[2:]), dtype=x.dtype)
    if include:  # the padded input counts, the overhang past it does not
        mask = F.pad(F.pad(ones, [p for i in reversed(range(n)) for p in (pad[i], pad[i])], value=1.0),
                     [p for i in reversed(range(n)) for p in (0, max(extra[i], 0))])
    else:
        mask = F.pad(ones, widths)
    return total / _window_sum(mask, kernel, stride)


def l2_normalization(a: dict, x):
    """x / sqrt(sum(x^2) + eps) over all but the batch axis (instance), the channel axis, or the spatial axes."""
    dims = {"instance": tuple(range(1, x.dim())), "channel": (1,), "spatial": tuple(range(2, x.dim()))}.get(a["mode"])
    if dims is None:
        raise Unsupported(f"L2Normalization mode {a['mode']!r}")
    return x / torch.sqrt((x * x).sum(dim=dims, keepdim=True) + a["eps"])


def embedding(a: dict, x, w):
    """Row lookup; MXNet clips indices into [0, input_dim - 1]."""
    idx = x.to(torch.int64).clamp(0, w.shape[0] - 1)
    return w[idx]
