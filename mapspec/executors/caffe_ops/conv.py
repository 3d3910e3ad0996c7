"""Convolution, Deconvolution, InnerProduct and Embed with Caffe's semantics.

Geometry follows ``base_conv_layer.cpp``: ``kernel_size``/``pad``/``stride``/``dilation``
are repeated fields given once (all spatial axes) or once per axis; ``kernel_h``/``_w``,
``pad_h``/``_w``, ``stride_h``/``_w`` are the 2-D alternatives and may not be mixed with
them.  Weights are ``(num_output, C / group, *kernel)`` for Convolution and
``(C, num_output / group, *kernel)`` for Deconvolution (Caffe's ``reverse_dimensions``);
torch's conv/conv_transpose weights have exactly these layouts.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .common import LayerError, Unsupported, canonical_axis, check_count, count, fit_blob, need_bottoms

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_DECONV = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


class ConvGeometry(NamedTuple):
    """A convolution's per-spatial-axis kernel, stride, pad and dilation (Caffe's rules applied)."""

    kernel: tuple
    stride: tuple
    pad: tuple
    dilation: tuple


def _per_axis(values, n: int, default, what: str) -> tuple:
    """A repeated field given 0 (default), 1 (all axes) or n times."""
    values = list(values)
    if not values:
        if default is None:
            raise LayerError(f"{what} is required")
        return (default,) * n
    if len(values) == 1:
        return (int(values[0]),) * n
    if len(values) == n:
        return tuple(int(v) for v in values)
    raise LayerError(f"{what} must be specified once, or once per spatial dimension ({what} specified "
                     f"{len(values)} times; {n} spatial dims)")


def conv_geometry(p, n: int) -> ConvGeometry:
    """Kernel, stride, pad and dilation of a ``ConvolutionParameter`` for ``n`` spatial axes."""
    def hw(name: str, repeated: str, default):
        has_h, has_w = p.HasField(f"{name}_h"), p.HasField(f"{name}_w")
        if has_h or has_w:
            if n != 2:
                raise LayerError(f"{name}_h & {name}_w can only be used for 2D convolution")
            if len(getattr(p, repeated)):
                raise LayerError(f"either {repeated} or {name}_h/w should be specified; not both")
            return (int(getattr(p, f"{name}_h")), int(getattr(p, f"{name}_w")))
        return _per_axis(getattr(p, repeated), n, default, repeated)

    kernel = hw("kernel", "kernel_size", None)
    if any(k <= 0 for k in kernel):
        raise LayerError(f"filter dimensions must be nonzero (kernel {kernel})")
    stride = hw("stride", "stride", 1)
    if any(s <= 0 for s in stride):
        raise LayerError(f"stride dimensions must be nonzero (stride {stride})")
    pad = hw("pad", "pad", 0)
    dilation = _per_axis(p.dilation, n, 1, "dilation")
    if any(d <= 0 for d in dilation):
        raise LayerError(f"dilation must be positive (dilation {dilation})")
    return ConvGeometry(kernel, stride, pad, dilation)


def _setup(layer, x: torch.Tensor):
    p = layer.convolution_param
    axis = canonical_axis(p.axis, x.dim(), "convolution_param.axis")
    if axis != 1:
        raise Unsupported(f"convolution_param.axis {p.axis} (only the channel axis 1 is supported)")
    n = x.dim() - 2
    if n not in _CONV:
        raise Unsupported(f"{n}-D convolution of a {x.dim()}-D input (1 to 3 spatial axes are supported)")
    g = conv_geometry(p, n)
    channels, num_output, group = int(x.shape[1]), int(p.num_output), int(p.group)
    if num_output <= 0:
        raise LayerError("convolution_param.num_output must be positive")
    if group <= 0 or channels % group or num_output % group:
        raise LayerError(f"group {group} must divide both the input channels ({channels}) and num_output "
                         f"({num_output})")
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
    out = []
    for i, (size, k, s, q, d) in enumerate(zip(x.shape[2:], *g)):
        extent = d * (k - 1) + 1
        if size + 2 * q < extent:
            raise LayerError(f"spatial axis {i} of size {size} (+2x{q} padding) is smaller than the kernel extent "
                             f"{extent}")
        out.append((size + 2 * q - extent) // s + 1)
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
    outs = []
    for i, (size, k, s, q, d) in enumerate(zip(x.shape[2:], *g)):
        out = s * (size - 1) + d * (k - 1) + 1 - 2 * q
        if out <= 0:
            raise LayerError(f"spatial axis {i}: output size {out} is not positive (input {size}, pad {q})")
        outs.append(s * (size - 1) + d * (k - 1) + 1)  # before the padding is cut off
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
