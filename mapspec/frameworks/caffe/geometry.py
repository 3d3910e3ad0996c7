"""Caffe's per-layer arithmetic, written once: axes, convolution and pooling geometry, output sizes.

Every rule here is what a layer's ``LayerSetUp``/``Reshape`` in BVLC/caffe
``src/caffe/layers`` computes or checks, given its parameter message (from
:mod:`mapspec.frameworks.caffe.schema`) and plain shapes.  The template reader's shape
inference (:mod:`mapspec.frameworks.caffe.layers`) and the executor's kernels
(:mod:`mapspec.frameworks.caffe.ops`) both call these functions, so a net is read one way.
A parameter combination Caffe refuses raises :class:`ShapeError` (message without the file
or layer; callers add them).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence

import numpy as np
from ...errors import ShapeError  # noqa: F401 - raised here (no file or layer named: callers add them)

MAX, AVE, STOCHASTIC = 0, 1, 2  # PoolingParameter.PoolMethod
CEIL, FLOOR = 0, 1  # PoolingParameter.RoundMode


def count(shape: Sequence[int], start: int = 0, end: Optional[int] = None) -> int:
    """Caffe's ``Blob::count(start, end)``: the product of ``shape[start:end]``."""
    n = 1
    for d in shape[start:end]:
        n *= int(d)
    return n


def canonical_axis(axis: int, ndim: int, what: str = "axis") -> int:
    """Caffe's ``Blob::CanonicalAxisIndex``: -ndim <= axis < ndim, negatives count from the end."""
    if not -ndim <= axis < ndim:
        raise ShapeError(f"{what} {axis} out of range for a {ndim}-D input (allowed {-ndim}..{ndim - 1})")
    return axis + ndim if axis < 0 else axis


def legacy_axis(p, legacy: str, ndim: int, what: str) -> int:
    """``axis`` or the legacy unsigned ``concat_dim``/``slice_dim`` of a Concat/Slice parameter, not both."""
    if p.HasField("axis") and p.HasField(legacy):
        raise ShapeError(f"either axis or {legacy} should be specified; not both")
    if p.HasField(legacy):
        a = int(getattr(p, legacy))
        if a >= ndim:
            raise ShapeError(f"{legacy} {a} out of range for a {ndim}-D input")
        return a
    return canonical_axis(p.axis, ndim, f"{what}.axis")


def axes_span(shape: Sequence[int], axis: int, num_axes: int, what: str) -> tuple:
    """The dims ``axis .. axis + num_axes`` (-1: to the end) of ``shape``: a Scale/Bias parameter's shape."""
    a = canonical_axis(axis, len(shape), f"{what}.axis")
    if num_axes < -1:
        raise ShapeError(f"{what}.num_axes must be >= -1 (-1: to the last axis), got {num_axes}")
    end = len(shape) if num_axes == -1 else a + num_axes
    if end > len(shape):
        raise ShapeError(f"{what} spans axes {a}..{end - 1} but the input {tuple(shape)} has {len(shape)}")
    return tuple(int(d) for d in shape[a:end])


def operand_axis(x: Sequence[int], operand: Sequence[int], axis: int, what: str) -> int:
    """Where a Scale/Bias parameter (or second bottom) of shape ``operand`` sits on an input of shape ``x``
    (scale_layer.cpp, bias_layer.cpp): axis 0 for a scalar, else ``axis``, the input's dims from there on
    equal to the operand's."""
    if len(operand) == 0:
        return 0
    a = canonical_axis(axis, len(x), f"{what} axis")
    if tuple(int(d) for d in x[a:a + len(operand)]) != tuple(int(d) for d in operand):
        raise ShapeError(f"{what} of shape {tuple(operand)} does not match input axes {a}.. of shape {tuple(x)}")
    return a


# -- convolution ---------------------------------------------------------------------------------

class ConvGeometry(NamedTuple):
    """A convolution's per-spatial-axis kernel, stride, pad and dilation (Caffe's rules applied)."""

    kernel: tuple
    stride: tuple
    pad: tuple
    dilation: tuple


def _per_axis(values, n: int, default, what: str) -> tuple:
    """A repeated field given 0 (default), 1 (all axes) or n times."""
    values = [int(v) for v in values]
    if not values:
        if default is None:
            raise ShapeError("convolution_param has no kernel_size (nor kernel_h/kernel_w)")
        return (default,) * n
    if len(values) == 1:
        return (values[0],) * n
    if len(values) != n:
        raise ShapeError(f"{what} must be given once or {n} times (once per spatial axis), not {len(values)} "
                         f"times")
    return tuple(values)


def conv_geometry(p, spatial: Optional[int] = None) -> ConvGeometry:
    """Kernel, stride, pad and dilation of a ``ConvolutionParameter`` as ``base_conv_layer.cpp`` reads them.

    ``spatial`` is the number of spatial axes (from the input shape); without it, 2 unless
    the repeated fields say more.  ``kernel_h``/``_w`` and ``stride_h``/``_w`` come in pairs;
    ``pad_h``/``_w`` may come alone (the other is 0); none of them mixes with the repeated
    field, and they are for 2-D convolution only.
    """
    n = spatial if spatial is not None else max(2, len(p.kernel_size), len(p.stride), len(p.pad), len(p.dilation))

    def hw(name: str, repeated: str, default, paired: bool) -> tuple:
        has_h, has_w = p.HasField(f"{name}_h"), p.HasField(f"{name}_w")
        if not (has_h or has_w):
            return _per_axis(getattr(p, repeated), n, default, repeated)
        if n != 2:
            raise ShapeError(f"{name}_h/{name}_w are only for 2-D convolution (this one has {n} spatial axes)")
        if len(getattr(p, repeated)):
            raise ShapeError(f"either {repeated} or {name}_h/w should be specified; not both")
        if paired and not (has_h and has_w):
            raise ShapeError(f"{name}_h and {name}_w must be given together")
        return (int(getattr(p, f"{name}_h")), int(getattr(p, f"{name}_w")))

    kernel = hw("kernel", "kernel_size", None, True)
    stride = hw("stride", "stride", 1, True)
    pad = hw("pad", "pad", 0, False)
    dilation = _per_axis(p.dilation, n, 1, "dilation")
    for what, values in (("kernel", kernel), ("stride", stride), ("dilation", dilation)):
        if any(v <= 0 for v in values):
            raise ShapeError(f"{what} {list(values)} must be positive")
    return ConvGeometry(kernel, stride, pad, dilation)


def conv_groups(p, channels: int) -> tuple:
    """(num_output, group) of a ConvolutionParameter, checked against the input's channel count."""
    num_output, group = int(p.num_output), int(p.group)
    if num_output <= 0:
        raise ShapeError("convolution_param.num_output must be positive")
    if group <= 0 or channels % group or num_output % group:
        raise ShapeError(f"group {group} must divide both the input channels ({channels}) and num_output "
                         f"({num_output})")
    return num_output, group


def conv_out_size(size: int, kernel: int, stride: int, pad: int, dilation: int, deconv: bool = False) -> int:
    """One spatial axis of a (de)convolution's output; an empty output is a :class:`ShapeError`."""
    extent = dilation * (kernel - 1) + 1
    out = stride * (size - 1) + extent - 2 * pad if deconv else (size + 2 * pad - extent) // stride + 1
    if out <= 0 or (not deconv and size + 2 * pad < extent):
        raise ShapeError(f"a size-{size} input with kernel {kernel}, stride {stride}, pad {pad}, dilation "
                         f"{dilation} leaves no output" + ("" if deconv else f" (the padded input {size + 2 * pad} "
                                                            f"is smaller than the kernel extent {extent})"))
    return out


# -- pooling -------------------------------------------------------------------------------------

class PoolGeometry(NamedTuple):
    """(h, w) kernel, stride and pad, the rounding, global pooling and the method of a Pooling layer."""

    kernel: Optional[tuple]  # None for global pooling until the input size is known
    stride: tuple
    pad: tuple
    ceil: bool
    global_pooling: bool
    method: int  # MAX, AVE or STOCHASTIC (or an unknown number)


def pool_rounding(p) -> bool:
    """True for ceil rounding: BVLC's ``round_mode`` (CEIL by default) or a fork's ``ceil_mode`` (true by
    default).  A parameter that sets both to opposite meanings is refused: a net must read one way."""
    fork = bool(p.ceil_mode) if p.HasField("ceil_mode") else None
    bvlc = (p.round_mode == CEIL) if p.HasField("round_mode") else None
    if fork is not None and bvlc is not None and fork != bvlc:
        raise ShapeError(f"round_mode and ceil_mode disagree (round_mode: {'CEIL' if bvlc else 'FLOOR'}, ceil_mode: "
                         f"{str(fork).lower()}); give one of them")
    return fork if fork is not None else (bvlc if bvlc is not None else True)


def pool_geometry(p, hw: Optional[Sequence[int]] = None) -> PoolGeometry:
    """The choices and checks of ``PoolingLayer::LayerSetUp`` (pooling_layer.cpp) for a ``PoolingParameter``.

    kernel_size OR both kernel_h/kernel_w (none with global_pooling, whose kernel is the
    input's ``hw`` when given), pad OR both pad_h/pad_w, stride OR both stride_h/stride_w,
    padding only for MAX/AVE and smaller than the kernel; the rounding of :func:`pool_rounding`.
    """
    has = p.HasField
    if p.global_pooling:
        if has("kernel_size") or has("kernel_h") or has("kernel_w"):
            raise ShapeError("with global_pooling: true, the filter size cannot be specified")
        kernel = (int(hw[0]), int(hw[1])) if hw is not None else None
    elif has("kernel_size"):
        if has("kernel_h") or has("kernel_w"):
            raise ShapeError("give either kernel_size or kernel_h and kernel_w, not both")
        kernel = (int(p.kernel_size),) * 2
    elif has("kernel_h") and has("kernel_w"):
        kernel = (int(p.kernel_h), int(p.kernel_w))
    else:
        raise ShapeError("pooling_param needs kernel_size, kernel_h and kernel_w, or global_pooling")
    for name in ("pad", "stride"):
        pair = (has(f"{name}_h"), has(f"{name}_w"))
        if any(pair) and (has(name) or not all(pair)):
            raise ShapeError(f"give either {name} or both {name}_h and {name}_w")
    pad = (int(p.pad_h), int(p.pad_w)) if has("pad_h") else (int(p.pad),) * 2
    stride = (int(p.stride_h), int(p.stride_w)) if has("stride_h") else (int(p.stride),) * 2
    if p.global_pooling and (any(pad) or any(s != 1 for s in stride)):
        raise ShapeError("with global_pooling: true, only pad 0 and stride 1 are allowed")
    if any(s <= 0 for s in stride):
        raise ShapeError(f"stride {list(stride)} must be positive")
    if any(pad) and p.pool not in (MAX, AVE):
        raise ShapeError("padding is implemented only for MAX and AVE pooling")
    if kernel is not None:
        if any(k <= 0 for k in kernel):
            raise ShapeError(f"kernel {list(kernel)} must be positive")
        if any(q >= k for q, k in zip(pad, kernel)):
            raise ShapeError(f"pad {list(pad)} must be smaller than the kernel {list(kernel)}")
    return PoolGeometry(kernel, stride, pad, pool_rounding(p), bool(p.global_pooling), int(p.pool))


def pooled_size(size: int, kernel: int, stride: int, pad: int, ceil: bool, padded: Optional[bool] = None) -> int:
    """Caffe's pooled output size along one axis (``PoolingLayer::Reshape``).

    ``ceil`` (or floor) of ``float(size + 2*pad - kernel) / stride``, in float32 as Caffe
    computes it, plus 1; then, if the layer has padding, one less when the last window
    would start at or beyond ``size + pad`` (in the right/bottom padding).  Caffe applies
    that clip to *both* axes when either has padding (``if (pad_h_ || pad_w_)``):
    ``padded`` says whether the layer has any (default: this axis's ``pad``).
    """
    q = float(np.float32(size + 2 * pad - kernel) / np.float32(stride))
    out = int(math.ceil(q) if ceil else math.floor(q)) + 1
    if (bool(pad) if padded is None else padded) and (out - 1) * stride >= size + pad:
        out -= 1
    if out <= 0:
        raise ShapeError(f"pooling a size-{size} input with kernel {kernel}, stride {stride}, pad {pad} leaves no "
                         f"output (the input is smaller than the pooling window)")
    return out


def pooled_shape(hw: Sequence[int], g: PoolGeometry) -> tuple:
    """(out_h, out_w) of a pooling with geometry ``g`` (from :func:`pool_geometry` with ``hw``)."""
    padded = any(g.pad)
    return tuple(pooled_size(int(hw[a]), g.kernel[a], g.stride[a], g.pad[a], g.ceil, padded) for a in (0, 1))


# -- structural layers ---------------------------------------------------------------------------

def reshape_shape(x: Sequence[int], p) -> tuple:
    """The top shape of a Reshape layer for ``ReshapeParameter`` ``p`` (reshape_layer.cpp): 0 copies a dim,
    one -1 is inferred."""
    ndim = len(x)
    dims = [int(d) for d in p.shape.dim]
    if dims.count(-1) > 1:
        raise ShapeError("reshape_param.shape may contain at most one -1")
    if any(d < -1 for d in dims):
        raise ShapeError(f"reshape_param.shape {dims} has a dim below -1")
    start = p.axis if p.axis >= 0 else ndim + p.axis + 1
    if not 0 <= start <= ndim:
        raise ShapeError(f"reshape_param.axis {p.axis} out of range for a {ndim}-D input")
    if p.num_axes < -1:
        raise ShapeError("reshape_param.num_axes must be >= -1")
    end = ndim if p.num_axes == -1 else start + p.num_axes
    if end > ndim:
        raise ShapeError(f"reshape_param axis + num_axes = {end} is out of range for a {ndim}-D input")
    new = []
    for i, d in enumerate(dims):
        if d == 0:
            if start + i >= ndim:
                raise ShapeError(f"reshape_param.shape copies dim {start + i} (0) which the input {tuple(x)} lacks")
            new.append(int(x[start + i]))
        else:
            new.append(d)
    top = [int(d) for d in x[:start]] + new + [int(d) for d in x[end:]]
    total = count(x)
    if -1 in top:
        known = count([d for d in top if d != -1])
        if known == 0 or total % known:
            raise ShapeError(f"cannot reshape {tuple(x)} ({total} values) into {dims}: the count must be "
                             f"divisible by the product of the given dims ({known})")
        top[top.index(-1)] = total // known
    if count(top) != total:
        raise ShapeError(f"cannot reshape {tuple(x)} ({total} values) into {tuple(top)}")
    return tuple(top)


def concat_shape(p, shapes: Sequence[Sequence[int]]) -> tuple:
    """(axis, output shape) of a Concat of inputs ``shapes`` (concat_layer.cpp): equal outside the axis."""
    if not shapes:
        raise ShapeError("Concat needs at least one input")
    x0 = tuple(int(d) for d in shapes[0])
    axis = legacy_axis(p, "concat_dim", len(x0), "concat_param")
    total = 0
    for i, b in enumerate(shapes):
        b = tuple(int(d) for d in b)
        if len(b) != len(x0) or b[:axis] + b[axis + 1:] != x0[:axis] + x0[axis + 1:]:
            raise ShapeError(f"input {i} has shape {b}, input 0 {x0}: all inputs must have the same shape except "
                             f"at the concat axis {axis}")
        total += b[axis]
    return axis, x0[:axis] + (total,) + x0[axis + 1:]


def slice_sizes(layer, x: Sequence[int]) -> tuple:
    """(axis, sizes of the tops) of a Slice layer on an input of shape ``x`` (slice_layer.cpp)."""
    p = layer.slice_param
    axis = legacy_axis(p, "slice_dim", len(x), "slice_param")
    n, dim = len(layer.top), int(x[axis])
    points = [int(v) for v in p.slice_point]
    if points:
        if len(points) != n - 1:
            raise ShapeError(f"{len(points)} slice_point(s) for {n} outputs (need {n - 1})")
        bounds = [0] + points + [dim]
        sizes = [b - a for a, b in zip(bounds, bounds[1:])]
        if any(s <= 0 for s in sizes):
            raise ShapeError(f"slice_point {points} must increase strictly within (0, {dim})")
    else:
        if n == 0 or dim % n:
            raise ShapeError(f"the number of outputs ({n}) should evenly divide the size {dim} of axis {axis}")
        sizes = [dim // n] * n
    return axis, sizes


def eltwise_check(p, shapes: Sequence[Sequence[int]]) -> None:
    """Eltwise's checks: 2+ inputs of one shape (no broadcasting), one coefficient per input or none,
    coefficients only for SUM (Caffe refuses them for PROD; MAX ignores them)."""
    if len(shapes) < 2:
        raise ShapeError(f"Eltwise needs at least 2 inputs, got {len(shapes)}")
    if any(tuple(s) != tuple(shapes[0]) for s in shapes):
        raise ShapeError(f"Eltwise inputs differ in shape: {[tuple(s) for s in shapes]} (Eltwise does not "
                         f"broadcast)")
    if len(p.coeff) and len(p.coeff) != len(shapes):
        raise ShapeError(f"eltwise_param has {len(p.coeff)} coeff for {len(shapes)} inputs (one coefficient per "
                         f"bottom, or none)")
    if len(p.coeff) and p.operation == 0:  # PROD
        raise ShapeError("eltwise_param.coeff is not allowed with operation PROD (Eltwise only takes coefficients "
                         "for summation)")


def lrn_check(p, x: Sequence[int]) -> None:
    """LRN (lrn_layer.cpp) takes a 4-D input and an odd ``local_size``."""
    if len(x) != 4:
        raise ShapeError(f"LRN needs a 4-D input (N, C, H, W), got {tuple(x)}")
    if p.local_size % 2 != 1:
        raise ShapeError(f"LRN only supports odd values for local_size (got {p.local_size})")


def input_layer_shapes(layer) -> list:
    """The top shapes of an Input layer (input_layer.cpp): one shape per top, one for every top, or none
    (then None per top: set at run time)."""
    shapes = [tuple(int(d) for d in s.dim) for s in layer.input_param.shape]
    n = len(layer.top)
    if not shapes:
        return [None] * n
    if len(shapes) == 1:
        return shapes * n
    if len(shapes) != n:
        raise ShapeError(f"input_param has {len(shapes)} shapes for {n} tops (give 1 or {n})")
    return shapes


__all__ = ["ShapeError", "count", "canonical_axis", "legacy_axis", "axes_span", "operand_axis", "ConvGeometry",
           "conv_geometry", "conv_groups", "conv_out_size", "PoolGeometry", "pool_rounding", "pool_geometry",
           "pooled_size", "pooled_shape", "reshape_shape", "concat_shape", "slice_sizes", "eltwise_check", "lrn_check",
           "input_layer_shapes"]
