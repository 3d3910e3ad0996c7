"""What mapspec knows about each Caffe layer type: attributes, blob shapes, output shapes.

One table, :data:`LAYER_TYPES`, maps a Caffe type string to a :class:`LayerType`:
the name of its parameter message in ``LayerParameter`` and a *shape rule*
``rule(layer, bottom_shapes) -> (top_shapes, param_shapes)``, which reproduces the
``LayerSetUp``/``Reshape`` arithmetic of the layer in BVLC/caffe ``src/caffe/layers``
(and Tongcheng/caffe's ``DenseBlock_layer.cpp``).  Violations of a layer's own checks
(channels not divisible by group, a Concat of mismatched shapes, ...) raise
:class:`ShapeError`; callers turn it into a :class:`~mapspec.errors.FormatError`
naming the file and layer.

:func:`layer_attrs` gives a layer's parameters as a plain dict with Caffe's defaults
filled in (what a spec's ``attr(...)`` and the executors read).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np

Shape = tuple
MAX_DENSEBLOCK_TRANSITIONS = 10_000  # one blob list entry per transition and group: bound it (hostile prototxts)


class ShapeError(Exception):
    """A layer's parameters do not fit its inputs (message without file/layer; callers add them)."""


class LayerType(NamedTuple):
    param: Optional[str]  # the LayerParameter field holding this type's parameters
    rule: Callable  # (layer, bottom shapes) -> (top shapes, parameter blob shapes)


# -- helpers ---------------------------------------------------------------------------------

def canonical_axis(axis: int, ndim: int, what: str = "axis") -> int:
    """Caffe's CanonicalAxisIndex: negative axes count from the end; out of range is an error."""
    if not -ndim <= axis < ndim:
        raise ShapeError(f"{what} {axis} out of range for a {ndim}-D input")
    return axis + ndim if axis < 0 else axis


def _count(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _one_bottom(layer, bottoms) -> Shape:
    if len(bottoms) != 1:
        raise ShapeError(f"takes 1 input, got {len(bottoms)}")
    return bottoms[0]


def _same_for_tops(layer, shape: Shape) -> list:
    return [shape] * max(1, len(layer.top))


def _float(v: float) -> float:
    """The shortest decimal of a float32 field (1e-05 rather than 9.99999974e-06)."""
    return float(str(np.float32(v)))


# -- attributes --------------------------------------------------------------------------------

def message_dict(msg) -> dict:
    """A parameter message as ``{field: value}``, every scalar field present (Caffe's defaults).

    Repeated fields are lists, enums their names (``"MAX"``), floats the shortest decimal
    of their float32 value, ``BlobShape`` a list of dims, other sub-messages dicts (only
    when set).
    """
    out = {}
    for f in msg.DESCRIPTOR.fields:
        value = getattr(msg, f.name)
        repeated = getattr(f, "is_repeated", None)
        if repeated is None:
            repeated = f.label == f.LABEL_REPEATED
        if repeated:
            out[f.name] = [_field_value(f, v) for v in value]
        elif f.message_type is not None:
            if msg.HasField(f.name):
                out[f.name] = _field_value(f, value)
        else:
            out[f.name] = _field_value(f, value)
    return out


def _field_value(f, v):
    if f.message_type is not None:
        if f.message_type.name == "BlobShape":
            return [int(d) for d in v.dim]
        return message_dict(v)
    if f.enum_type is not None:
        ev = f.enum_type.values_by_number.get(v)
        return ev.name if ev is not None else int(v)
    if f.type == f.TYPE_FLOAT:
        return _float(v)
    return v


def conv_geometry(p, spatial: Optional[int] = None) -> dict:
    """kernel/stride/pad/dilation lists of a ConvolutionParameter, as base_conv_layer.cpp reads them.

    ``spatial`` is the number of spatial axes (from the input shape); without it, 2 unless
    the repeated fields say more.
    """
    if spatial is None:
        spatial = max(2, len(p.kernel_size), len(p.stride), len(p.pad), len(p.dilation))

    def listed(values, default, name):
        values = [int(v) for v in values]
        if not values:
            return [default] * spatial
        if len(values) == 1:
            return values * spatial
        if len(values) != spatial:
            raise ShapeError(f"{name} must be given once or {spatial} times (once per spatial axis), "
                             f"not {len(values)} times")
        return values

    def pair(h, w, name):
        if spatial != 2:
            raise ShapeError(f"{name}_h/{name}_w are only for 2-D convolution (this one has {spatial} "
                             f"spatial axes)")
        return [int(h), int(w)]

    if p.HasField("kernel_h") or p.HasField("kernel_w"):
        if not (p.HasField("kernel_h") and p.HasField("kernel_w")):
            raise ShapeError("kernel_h and kernel_w must be given together")
        if len(p.kernel_size):
            raise ShapeError("give either kernel_size or kernel_h/kernel_w, not both")
        kernel = pair(p.kernel_h, p.kernel_w, "kernel")
    else:
        if not len(p.kernel_size):
            raise ShapeError("convolution_param has no kernel_size (nor kernel_h/kernel_w)")
        kernel = listed(p.kernel_size, 0, "kernel_size")
    if p.HasField("stride_h") or p.HasField("stride_w"):
        if not (p.HasField("stride_h") and p.HasField("stride_w")):
            raise ShapeError("stride_h and stride_w must be given together")
        if len(p.stride):
            raise ShapeError("give either stride or stride_h/stride_w, not both")
        stride = pair(p.stride_h, p.stride_w, "stride")
    else:
        stride = listed(p.stride, 1, "stride")
    if p.HasField("pad_h") or p.HasField("pad_w"):
        if len(p.pad):
            raise ShapeError("give either pad or pad_h/pad_w, not both")
        pad = pair(p.pad_h, p.pad_w, "pad")
    else:
        pad = listed(p.pad, 0, "pad")
    dilation = listed(p.dilation, 1, "dilation")
    if any(k <= 0 for k in kernel):
        raise ShapeError(f"kernel {kernel} must be positive")
    if any(s <= 0 for s in stride):
        raise ShapeError(f"stride {stride} must be positive")
    if any(d <= 0 for d in dilation):
        raise ShapeError(f"dilation {dilation} must be positive")
    return {"kernel": kernel, "stride": stride, "pad": pad, "dilation": dilation}


def pooling_geometry(p, hw: Optional[Sequence[int]] = None) -> dict:
    """kernel/stride/pad ``[h, w]``, rounding and method of a PoolingParameter.

    The checks of ``PoolingLayer::LayerSetUp`` (pooling_layer.cpp): kernel_size OR both
    kernel_h/kernel_w (none with global_pooling), pad OR both pad_h/pad_w, stride OR both
    stride_h/stride_w, padding only for MAX/AVE and smaller than the kernel.
    """
    has = p.HasField
    if p.global_pooling:
        if has("kernel_size") or has("kernel_h") or has("kernel_w"):
            raise ShapeError("global_pooling takes no kernel size")
        kernel = [int(hw[0]), int(hw[1])] if hw is not None else None
    elif has("kernel_size"):
        if has("kernel_h") or has("kernel_w"):
            raise ShapeError("give either kernel_size or kernel_h/kernel_w, not both")
        kernel = [int(p.kernel_size)] * 2
    elif has("kernel_h") and has("kernel_w"):
        kernel = [int(p.kernel_h), int(p.kernel_w)]
    else:
        raise ShapeError("pooling_param needs kernel_size, kernel_h and kernel_w, or global_pooling")
    for name in ("pad", "stride"):
        pair = (has(f"{name}_h"), has(f"{name}_w"))
        if any(pair) and (has(name) or not all(pair)):
            raise ShapeError(f"give either {name} or both {name}_h and {name}_w")
    pad = [int(p.pad_h), int(p.pad_w)] if has("pad_h") else [int(p.pad)] * 2
    stride = [int(p.stride_h), int(p.stride_w)] if has("stride_h") else [int(p.stride)] * 2
    if p.global_pooling and (any(pad) or any(s != 1 for s in stride)):
        raise ShapeError("with global_pooling only pad 0 and stride 1 are allowed")
    if any(s <= 0 for s in stride):
        raise ShapeError(f"stride {stride} must be positive")
    if any(pad) and p.pool not in (0, 1):
        raise ShapeError("padding is implemented only for MAX and AVE pooling")
    if kernel is not None:
        if any(k <= 0 for k in kernel):
            raise ShapeError(f"kernel {kernel} must be positive")
        if any(pd >= k for pd, k in zip(pad, kernel)):
            raise ShapeError(f"pad {pad} must be smaller than the kernel {kernel}")
    return {"kernel": kernel, "stride": stride, "pad": pad, **pooling_rounding(p)}


def pooling_rounding(p) -> dict:
    """``ceil`` (bool), ``round_mode`` and ``pool`` of a PoolingParameter.

    A fork's ``ceil_mode`` (when set) decides the rounding, else BVLC's ``round_mode``.
    """
    if p.HasField("ceil_mode"):
        ceil = bool(p.ceil_mode)
    else:
        ceil = p.round_mode == 0  # CEIL
    method = p.DESCRIPTOR.fields_by_name["pool"].enum_type.values_by_number.get(p.pool)
    return {"ceil": ceil, "round_mode": "CEIL" if ceil else "FLOOR",
            "pool": method.name if method is not None else int(p.pool)}


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
        raise ShapeError(f"pooling a size-{size} input with kernel {kernel}, stride {stride}, pad {pad} "
                         f"leaves no output")
    return out


_ATTR_EXTRAS: dict = {}


def layer_attrs(layer, unknown: Sequence[str] = ()) -> dict:
    """``type``, ``bottom``, ``top`` and the fields of the layer's parameter message, with defaults.

    Convolution/Deconvolution add ``kernel``, ``stride``, ``pad``, ``dilation`` (lists,
    per spatial axis); Pooling adds ``kernel``, ``stride``, ``pad`` (``[h, w]``), ``ceil``
    and a ``round_mode`` that accounts for a fork's ``ceil_mode``; Eltwise's empty ``coeff``
    is one 1.0 per input.  BatchNorm's unset
    ``use_global_stats`` is True (Caffe's TEST-phase value).  Fields the schema did not
    know are listed under ``unknown_fields``.
    """
    attrs = {"name": layer.name, "type": layer.type, "bottom": list(layer.bottom), "top": list(layer.top)}
    spec = LAYER_TYPES.get(layer.type)
    if spec is not None and spec.param:
        attrs.update(message_dict(getattr(layer, spec.param)))
    if layer.type == "BatchNorm" and not layer.batch_norm_param.HasField("use_global_stats"):
        attrs["use_global_stats"] = True  # unset means "phase == TEST" in batch_norm_layer.cpp
    for extra in _ATTR_EXTRAS.get(layer.type, ()):
        try:
            attrs.update(extra(layer))
        except ShapeError:
            pass  # an inconsistent geometry is reported by shape inference, with the file
    if unknown:
        attrs["unknown_fields"] = list(unknown)
    return attrs


# type -> functions adding derived attributes (each may fail alone on an inconsistent layer)
_ATTR_EXTRAS["Convolution"] = [lambda l: conv_geometry(l.convolution_param)]
_ATTR_EXTRAS["Deconvolution"] = [lambda l: conv_geometry(l.convolution_param)]
_ATTR_EXTRAS["Pooling"] = [lambda l: pooling_rounding(l.pooling_param), lambda l: pooling_geometry(l.pooling_param)]
# Caffe reads an empty coeff list as 1 for every input
_ATTR_EXTRAS["Eltwise"] = [lambda l: {"coeff": [_float(c) for c in l.eltwise_param.coeff] or [1.0] * len(l.bottom)}]


# -- shape rules ---------------------------------------------------------------------------------

def _conv(layer, bottoms, deconv: bool = False):
    x = _one_bottom(layer, bottoms)
    p = layer.convolution_param
    axis = canonical_axis(p.axis, len(x))
    spatial = len(x) - axis - 1
    if spatial < 1:
        raise ShapeError(f"input {x} has no spatial axes after the channel axis {axis}")
    g = conv_geometry(p, spatial)
    channels, num_output, group = int(x[axis]), int(p.num_output), int(p.group)
    if num_output <= 0:
        raise ShapeError("convolution_param.num_output must be positive")
    if group <= 0 or channels % group or num_output % group:
        raise ShapeError(f"input channels {channels} and num_output {num_output} must both be divisible by "
                         f"group {group}")
    out = []
    for size, k, s, pd, d in zip(x[axis + 1:], g["kernel"], g["stride"], g["pad"], g["dilation"]):
        extent = d * (k - 1) + 1
        o = s * (size - 1) + extent - 2 * pd if deconv else (size + 2 * pd - extent) // s + 1
        if o <= 0:
            raise ShapeError(f"a size-{size} input with kernel {k}, stride {s}, pad {pd}, dilation {d} "
                             f"leaves no output")
        out.append(o)
    weight = ((channels, num_output // group) if deconv else (num_output, channels // group)) + tuple(g["kernel"])
    params = [weight] + ([(num_output,)] if p.bias_term else [])
    return [tuple(x[:axis]) + (num_output,) + tuple(out)], params


def _inner_product(layer, bottoms):
    x = _one_bottom(layer, bottoms)
    p = layer.inner_product_param
    axis = canonical_axis(p.axis, len(x))
    n, k = int(p.num_output), _count(x[axis:])
    if n <= 0:
        raise ShapeError("inner_product_param.num_output must be positive")
    weight = (k, n) if p.transpose else (n, k)
    return [tuple(x[:axis]) + (n,)], [weight] + ([(n,)] if p.bias_term else [])


def _batch_norm(layer, bottoms):
    x = _one_bottom(layer, bottoms)
    c = 1 if len(x) == 1 else int(x[1])
    return _same_for_tops(layer, x), [(c,), (c,), (1,)]


def _axes_span(x, axis: int, num_axes: int, what: str) -> Shape:
    axis = canonical_axis(axis, len(x))
    if num_axes < -1:
        raise ShapeError(f"{what}.num_axes must be >= -1")
    end = len(x) if num_axes == -1 else axis + num_axes
    if end > len(x):
        raise ShapeError(f"{what} spans axes {axis}..{end - 1} but the input {x} has {len(x)}")
    return tuple(x[axis:end])


def _check_operand(x, operand, axis: int, what: str) -> None:
    """A second-bottom scale/bias must match the input's dims from ``axis`` on (bias_layer.cpp)."""
    start = 0 if len(operand) == 0 else canonical_axis(axis, len(x))
    if tuple(x[start:start + len(operand)]) != tuple(operand):
        raise ShapeError(f"{what} operand {operand} does not match input {x} from axis {start}")


def _scale(layer, bottoms):
    p = layer.scale_param
    if len(bottoms) == 2:
        x, s = bottoms
        _check_operand(x, s, p.axis, "Scale")
        return [x], ([tuple(s)] if p.bias_term else [])
    x = _one_bottom(layer, bottoms)
    shape = _axes_span(x, p.axis, p.num_axes, "scale_param")
    return _same_for_tops(layer, x), [shape] + ([shape] if p.bias_term else [])


def _bias(layer, bottoms):
    p = layer.bias_param
    if len(bottoms) == 2:
        _check_operand(bottoms[0], bottoms[1], p.axis, "Bias")
        return [bottoms[0]], []
    x = _one_bottom(layer, bottoms)
    return _same_for_tops(layer, x), [_axes_span(x, p.axis, p.num_axes, "bias_param")]


def _prelu(layer, bottoms):
    x = _one_bottom(layer, bottoms)
    if len(x) < 2:
        raise ShapeError(f"PReLU needs an input with at least 2 axes, got {x}")
    return _same_for_tops(layer, x), [() if layer.prelu_param.channel_shared else (int(x[1]),)]


def _embed(layer, bottoms):
    x = _one_bottom(layer, bottoms)
    p = layer.embed_param
    n, k = int(p.num_output), int(p.input_dim)
    if n <= 0 or k <= 0:
        raise ShapeError("embed_param needs positive num_output and input_dim")
    return [tuple(x) + (n,)], [(k, n)] + ([(n,)] if p.bias_term else [])


def _pooling(layer, bottoms):
    x = _one_bottom(layer, bottoms)
    if len(x) != 4:
        raise ShapeError(f"Pooling needs a 4-D input (N, C, H, W), got {x}")
    g = pooling_geometry(layer.pooling_param, x[2:])
    padded = any(g["pad"])
    out = [pooled_size(int(x[2 + i]), g["kernel"][i], g["stride"][i], g["pad"][i], g["ceil"], padded)
           for i in range(2)]
    shape = (x[0], x[1], out[0], out[1])
    return [shape] * max(1, len(layer.top)), []


def _concat(layer, bottoms):
    if not bottoms:
        raise ShapeError("Concat needs at least one input")
    p = layer.concat_param
    x0 = bottoms[0]
    axis = int(p.concat_dim) if p.HasField("concat_dim") else p.axis
    axis = canonical_axis(axis, len(x0))
    total = 0
    for b in bottoms:
        if len(b) != len(x0) or tuple(b[:axis]) + tuple(b[axis + 1:]) != tuple(x0[:axis]) + tuple(x0[axis + 1:]):
            raise ShapeError(f"inputs {list(bottoms)} differ outside the concat axis {axis}")
        total += int(b[axis])
    return [tuple(x0[:axis]) + (total,) + tuple(x0[axis + 1:])], []


def _eltwise(layer, bottoms):
    if len(bottoms) < 2:
        raise ShapeError(f"Eltwise needs at least 2 inputs, got {len(bottoms)}")
    if any(tuple(b) != tuple(bottoms[0]) for b in bottoms):
        raise ShapeError(f"Eltwise inputs differ in shape: {list(bottoms)}")
    p = layer.eltwise_param
    if len(p.coeff) and len(p.coeff) != len(bottoms):
        raise ShapeError(f"eltwise_param has {len(p.coeff)} coeff for {len(bottoms)} inputs")
    if len(p.coeff) and p.operation == 0:  # Caffe refuses coefficients for PROD only (MAX ignores them)
        raise ShapeError("eltwise_param.coeff is not allowed with operation PROD (only SUM uses it)")
    return [bottoms[0]], []


def _flatten(layer, bottoms):
    x = _one_bottom(layer, bottoms)
    p = layer.flatten_param
    a = canonical_axis(p.axis, len(x))
    e = canonical_axis(p.end_axis, len(x), "end_axis")
    return [tuple(x[:a]) + (_count(x[a:e + 1]),) + tuple(x[e + 1:])], []


def reshape_shape(x: Shape, p) -> Shape:
    """The top shape of a Reshape layer (reshape_layer.cpp): 0 copies a dim, -1 is inferred."""
    dims = [int(d) for d in p.shape.dim]
    if dims.count(-1) > 1:
        raise ShapeError("reshape_param.shape may contain at most one -1")
    if any(d < -1 for d in dims):
        raise ShapeError(f"reshape_param.shape {dims} has a dim below -1")
    start = p.axis if p.axis >= 0 else len(x) + p.axis + 1
    if not 0 <= start <= len(x):
        raise ShapeError(f"reshape_param.axis {p.axis} out of range for a {len(x)}-D input")
    if p.num_axes < -1:
        raise ShapeError("reshape_param.num_axes must be >= -1")
    end = len(x) if p.num_axes == -1 else start + p.num_axes
    if end > len(x):
        raise ShapeError(f"reshape_param axis + num_axes = {end} is out of range for a {len(x)}-D input")
    new = []
    for i, d in enumerate(dims):
        if d == 0:
            if start + i >= len(x):
                raise ShapeError(f"reshape_param.shape copies dim {start + i} (0) which the input {x} lacks")
            new.append(int(x[start + i]))
        else:
            new.append(d)
    top = list(x[:start]) + new + list(x[end:])
    total = _count(x)
    if -1 in top:
        known = _count([d for d in top if d != -1])
        if known == 0 or total % known:
            raise ShapeError(f"cannot reshape {x} ({total} values) into {dims}")
        top[top.index(-1)] = total // known
    if _count(top) != total:
        raise ShapeError(f"cannot reshape {x} ({total} values) into {tuple(top)}")
    return tuple(top)


def _reshape(layer, bottoms):
    return [reshape_shape(_one_bottom(layer, bottoms), layer.reshape_param)], []


def slice_sizes(layer, x: Shape) -> tuple:
    """(axis, sizes of the tops) of a Slice layer (slice_layer.cpp)."""
    p = layer.slice_param
    axis = int(p.slice_dim) if p.HasField("slice_dim") else p.axis
    axis = canonical_axis(axis, len(x))
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
            raise ShapeError(f"dimension {dim} of axis {axis} cannot be split equally into {n} outputs")
        sizes = [dim // n] * n
    return axis, sizes


def _slice(layer, bottoms):
    x = _one_bottom(layer, bottoms)
    axis, sizes = slice_sizes(layer, x)
    return [tuple(x[:axis]) + (s,) + tuple(x[axis + 1:]) for s in sizes], []


def _split(layer, bottoms):
    x = _one_bottom(layer, bottoms)
    return [x] * len(layer.top), []


def _same(layer, bottoms):
    return _same_for_tops(layer, _one_bottom(layer, bottoms)), []


def _lrn(layer, bottoms):
    x = _one_bottom(layer, bottoms)
    if len(x) != 4:
        raise ShapeError(f"LRN needs a 4-D input (N, C, H, W), got {x}")
    if layer.lrn_param.local_size % 2 == 0:
        raise ShapeError("LRN supports only odd local_size")
    return [x], []


def _softmax(layer, bottoms):
    x = _one_bottom(layer, bottoms)
    canonical_axis(layer.softmax_param.axis, len(x))
    return [x], []


def _input(layer, bottoms):
    """input_layer.cpp: one shape per top, one for every top, or none (None: set at run time)."""
    shapes = [tuple(int(d) for d in s.dim) for s in layer.input_param.shape]
    n = len(layer.top)
    if not shapes:
        return [None] * n, []
    if len(shapes) == 1:
        shapes = shapes * n
    if len(shapes) != n:
        raise ShapeError(f"input_param has {len(shapes)} shapes for {n} tops (give 1 or {n})")
    return shapes, []


def _silence(layer, bottoms):
    return [], []


def denseblock_param_shapes(p) -> list:
    """Blob shapes of Tongcheng's efficient-DenseNet ``DenseBlock`` layer.

    From ``DenseBlockLayer::LayerSetUp`` in Tongcheng/caffe ``src/caffe/layers/DenseBlock_layer.cpp``,
    with T = numTransition, G = growthRate and C_i = initChannel + i*G the input channels of
    transition i (0-based); blob index = group*T + i:

    ======  ===================================  ==================
    group   what                                 shape
    ======  ===================================  ==================
    0       3x3 filter                           (G, 4G, 3, 3) with use_BC, else (G, C_i, 3, 3)
    1, 2    scale, bias before the 1x1 conv      (1, C_i, 1, 1)
    3, 4    BN global mean, var (same place)     (1, C_i, 1, 1)
    5       1x1 filter (use_BC only)             (4G, C_i, 1, 1)
    6, 7    scale, bias before the 3x3 conv      (1, 4G, 1, 1)   (use_BC only)
    8, 9    BN global mean, var (same place)     (1, 4G, 1, 1)   (use_BC only)
    last    moving-average factor, index 10T     (1,)            (index 5T without use_BC)
    ======  ===================================  ==================

    The 3x3 filter size is fixed in that code (``filter_H``/``filter_W`` are not used for it).
    Its convolutions are true convolutions (flipped kernels), unlike Caffe's Convolution
    layer: see :mod:`mapspec.executors.caffe_ops.dense_block` for what the values mean.
    """
    t, c0, g = int(p.numTransition), int(p.initChannel), int(p.growthRate)
    if t <= 0 or c0 <= 0 or g <= 0:
        raise ShapeError("denseblock_param needs positive numTransition, initChannel and growthRate")
    if t > MAX_DENSEBLOCK_TRANSITIONS:
        raise ShapeError(f"denseblock_param.numTransition {t} is far beyond any real DenseNet "
                         f"(at most {MAX_DENSEBLOCK_TRANSITIONS} here)")
    groups = 10 if p.use_BC else 5
    shapes: list = [None] * (groups * t + 1)
    for i in range(t):
        c = c0 + i * g
        shapes[i] = (g, 4 * g, 3, 3) if p.use_BC else (g, c, 3, 3)
        for k in (1, 2, 3, 4):
            shapes[k * t + i] = (1, c, 1, 1)
        if p.use_BC:
            shapes[5 * t + i] = (4 * g, c, 1, 1)
            for k in (6, 7, 8, 9):
                shapes[k * t + i] = (1, 4 * g, 1, 1)
    shapes[groups * t] = (1,)
    return shapes


def _denseblock(layer, bottoms):
    x = _one_bottom(layer, bottoms)
    p = layer.denseblock_param
    if len(x) != 4:
        raise ShapeError(f"DenseBlock needs a 4-D input (N, C, H, W), got {x}")
    if int(x[1]) != int(p.initChannel):
        raise ShapeError(f"input has {x[1]} channels but denseblock_param.initChannel is {p.initChannel}")
    params = denseblock_param_shapes(p)
    return [(x[0], int(p.initChannel) + int(p.numTransition) * int(p.growthRate), x[2], x[3])], params


LAYER_TYPES: dict[str, LayerType] = {
    "Convolution": LayerType("convolution_param", _conv),
    "Deconvolution": LayerType("convolution_param", lambda l, b: _conv(l, b, deconv=True)),
    "InnerProduct": LayerType("inner_product_param", _inner_product),
    "BatchNorm": LayerType("batch_norm_param", _batch_norm),
    "Scale": LayerType("scale_param", _scale),
    "Bias": LayerType("bias_param", _bias),
    "PReLU": LayerType("prelu_param", _prelu),
    "Embed": LayerType("embed_param", _embed),
    "Pooling": LayerType("pooling_param", _pooling),
    "Concat": LayerType("concat_param", _concat),
    "Eltwise": LayerType("eltwise_param", _eltwise),
    "Flatten": LayerType("flatten_param", _flatten),
    "Reshape": LayerType("reshape_param", _reshape),
    "Slice": LayerType("slice_param", _slice),
    "Split": LayerType(None, _split),
    "ReLU": LayerType("relu_param", _same),
    "Dropout": LayerType("dropout_param", _same),
    "LRN": LayerType("lrn_param", _lrn),
    "Softmax": LayerType("softmax_param", _softmax),
    "Input": LayerType("input_param", _input),
    "Power": LayerType("power_param", _same),
    "Sigmoid": LayerType("sigmoid_param", _same),
    "TanH": LayerType("tanh_param", _same),
    "AbsVal": LayerType(None, _same),
    "BNLL": LayerType(None, _same),
    "ELU": LayerType("elu_param", _same),
    "Exp": LayerType("exp_param", _same),
    "Log": LayerType("log_param", _same),
    "Threshold": LayerType("threshold_param", _same),
    "Clip": LayerType("clip_param", _same),
    "Silence": LayerType(None, _silence),
    "DenseBlock": LayerType("denseblock_param", _denseblock),
}


# -- phases ----------------------------------------------------------------------------------

def _rule_matches(rule, phase: int, level: int = 0, stages: Sequence[str] = ()) -> bool:
    """Caffe's Net::StateMeetsRule for one NetStateRule."""
    if rule.HasField("phase") and rule.phase != phase:
        return False
    if rule.HasField("min_level") and level < rule.min_level:
        return False
    if rule.HasField("max_level") and level > rule.max_level:
        return False
    if any(s not in stages for s in rule.stage):
        return False
    if any(s in stages for s in rule.not_stage):
        return False
    return True


def in_phase(layer, phase: int = 1, level: int = 0, stages: Sequence[str] = ()) -> bool:
    """Does the layer exist in a net of this phase, level and stages (Caffe's FilterNet; TEST = 1 by
    default)?"""
    if len(layer.include):
        return any(_rule_matches(r, phase, level, stages) for r in layer.include)
    return not any(_rule_matches(r, phase, level, stages) for r in layer.exclude)


def total(shapes: Sequence[Shape]) -> int:
    """Number of values in a list of shapes (handy for tests and reports)."""
    return sum(_count(s) for s in shapes)


__all__ = ["LAYER_TYPES", "LayerType", "ShapeError", "layer_attrs", "message_dict", "in_phase",
           "canonical_axis", "pooled_size", "pooling_geometry", "reshape_shape", "slice_sizes",
           "denseblock_param_shapes", "conv_geometry", "total"]
