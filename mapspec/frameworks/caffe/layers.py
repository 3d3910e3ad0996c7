"""What mapspec knows about each Caffe layer type: attributes, blob shapes, output shapes, phases.

One table, :data:`LAYER_TYPES`, maps a Caffe type string to a :class:`LayerType`:
the name of its parameter message in ``LayerParameter`` and a *shape rule*
``rule(layer, bottom_shapes) -> (top_shapes, param_shapes)``, which reproduces the
``LayerSetUp``/``Reshape`` arithmetic of the layer in BVLC/caffe ``src/caffe/layers``
(and Tongcheng/caffe's ``DenseBlock_layer.cpp``).  Violations of a layer's own checks
(channels not divisible by group, a Concat of mismatched shapes, ...) raise
:class:`~mapspec.frameworks.caffe.geometry.ShapeError`; callers turn it into a
:class:`~mapspec.errors.FormatError` naming the file and layer.  The arithmetic itself
(geometry, pooling rounding, reshape codes, ...) lives in :mod:`mapspec.frameworks.caffe.geometry`,
shared with the executor.

:func:`layer_attrs` gives a layer's parameters as a plain dict with Caffe's defaults
filled in (what a spec's ``attr(...)`` reads); :func:`blob_count` how many parameter blobs a
layer takes; :func:`in_phase` Caffe's phase/level/stage filter.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np

from .geometry import (ShapeError, axes_span, canonical_axis, concat_shape, conv_geometry, conv_groups,
                       conv_out_size, count, eltwise_check, input_layer_shapes, lrn_check, operand_axis, pool_geometry,
                       pool_rounding, pooled_shape, reshape_shape, slice_sizes)

Shape = tuple
MAX_DENSEBLOCK_TRANSITIONS = 10_000  # one blob list entry per transition and group: bound it (hostile prototxts)


class LayerType(NamedTuple):
    param: Optional[str]  # the LayerParameter field holding this type's parameters
    rule: Callable  # (layer, bottom shapes) -> (top shapes, parameter blob shapes)


# -- helpers ---------------------------------------------------------------------------------

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


def _conv_attrs(p) -> dict:
    return {k: list(v) for k, v in conv_geometry(p)._asdict().items()}


def _pool_attrs(p) -> dict:
    g = pool_geometry(p)
    return {"kernel": list(g.kernel) if g.kernel is not None else None, "stride": list(g.stride), "pad": list(g.pad)}


def _rounding_attrs(p) -> dict:
    ceil = pool_rounding(p)
    method = p.DESCRIPTOR.fields_by_name["pool"].enum_type.values_by_number.get(p.pool)
    return {"ceil": ceil, "round_mode": "CEIL" if ceil else "FLOOR",
            "pool": method.name if method is not None else int(p.pool)}


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
    if layer.type == "BatchNorm":
        attrs["use_global_stats"] = batch_norm_global_stats(layer.batch_norm_param)
    for extra in _ATTR_EXTRAS.get(layer.type, ()):
        try:
            attrs.update(extra(layer))
        except ShapeError:
            pass  # an inconsistent geometry is reported by shape inference, with the file
    if unknown:
        attrs["unknown_fields"] = list(unknown)
    return attrs


# type -> functions adding derived attributes (each may fail alone on an inconsistent layer)
_ATTR_EXTRAS["Convolution"] = [lambda l: _conv_attrs(l.convolution_param)]
_ATTR_EXTRAS["Deconvolution"] = [lambda l: _conv_attrs(l.convolution_param)]
_ATTR_EXTRAS["Pooling"] = [lambda l: _rounding_attrs(l.pooling_param), lambda l: _pool_attrs(l.pooling_param)]
# Caffe reads an empty coeff list as 1 for every input
_ATTR_EXTRAS["Eltwise"] = [lambda l: {"coeff": [_float(c) for c in l.eltwise_param.coeff] or [1.0] * len(l.bottom)}]


# -- shape rules ---------------------------------------------------------------------------------

def _conv(layer, bottoms, deconv: bool = False):
    x = _one_bottom(layer, bottoms)
    p = layer.convolution_param
    axis = canonical_axis(p.axis, len(x), "convolution_param.axis")
    spatial = len(x) - axis - 1
    if spatial < 1:
        raise ShapeError(f"input {x} has no spatial axes after the channel axis {axis}")
    g = conv_geometry(p, spatial)
    channels = int(x[axis])
    num_output, group = conv_groups(p, channels)
    out = [conv_out_size(size, k, s, pd, d, deconv) for size, k, s, pd, d in zip(x[axis + 1:], *g)]
    weight = ((channels, num_output // group) if deconv else (num_output, channels // group)) + tuple(g.kernel)
    params = [weight] + ([(num_output,)] if p.bias_term else [])
    return [tuple(x[:axis]) + (num_output,) + tuple(out)], params


def _inner_product(layer, bottoms):
    x = _one_bottom(layer, bottoms)
    p = layer.inner_product_param
    axis = canonical_axis(p.axis, len(x), "inner_product_param.axis")
    n, k = int(p.num_output), count(x, axis)
    if n <= 0:
        raise ShapeError("inner_product_param.num_output must be positive")
    weight = (k, n) if p.transpose else (n, k)
    return [tuple(x[:axis]) + (n,)], [weight] + ([(n,)] if p.bias_term else [])


def _batch_norm(layer, bottoms):
    x = _one_bottom(layer, bottoms)
    c = 1 if len(x) == 1 else int(x[1])
    return _same_for_tops(layer, x), [(c,), (c,), (1,)]


def _scale(layer, bottoms):
    p = layer.scale_param
    if len(bottoms) == 2:
        x, s = bottoms
        operand_axis(x, s, p.axis, "Scale")
        return [x], ([tuple(s)] if p.bias_term else [])
    x = _one_bottom(layer, bottoms)
    shape = axes_span(x, p.axis, p.num_axes, "scale_param")
    return _same_for_tops(layer, x), [shape] + ([shape] if p.bias_term else [])


def _bias(layer, bottoms):
    p = layer.bias_param
    if len(bottoms) == 2:
        operand_axis(bottoms[0], bottoms[1], p.axis, "Bias")
        return [bottoms[0]], []
    x = _one_bottom(layer, bottoms)
    return _same_for_tops(layer, x), [axes_span(x, p.axis, p.num_axes, "bias_param")]


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
    out = pooled_shape(x[2:], pool_geometry(layer.pooling_param, x[2:]))
    return [(x[0], x[1]) + out] * max(1, len(layer.top)), []


def _concat(layer, bottoms):
    return [concat_shape(layer.concat_param, bottoms)[1]], []


def _eltwise(layer, bottoms):
    eltwise_check(layer.eltwise_param, bottoms)
    return [bottoms[0]], []


def _flatten(layer, bottoms):
    x = _one_bottom(layer, bottoms)
    p = layer.flatten_param
    a = canonical_axis(p.axis, len(x), "flatten_param.axis")
    e = canonical_axis(p.end_axis, len(x), "flatten_param.end_axis")
    return [tuple(x[:a]) + (count(x, a, e + 1),) + tuple(x[e + 1:])], []


def _reshape(layer, bottoms):
    return [reshape_shape(_one_bottom(layer, bottoms), layer.reshape_param)], []


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
    lrn_check(layer.lrn_param, x)
    return [x], []


def _softmax(layer, bottoms):
    x = _one_bottom(layer, bottoms)
    canonical_axis(layer.softmax_param.axis, len(x), "softmax_param.axis")
    return [x], []


def _input(layer, bottoms):
    return input_layer_shapes(layer), []


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
    layer: see :mod:`mapspec.frameworks.caffe.ops.dense_block` for what the values mean.
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


def denseblock_check(p, x: Shape) -> None:
    """A DenseBlock's input must be 4-D with ``initChannel`` channels (its blobs are shaped for that many)."""
    if len(x) != 4:
        raise ShapeError(f"DenseBlock needs a 4-D input (N, C, H, W), got {tuple(x)}")
    if int(x[1]) != int(p.initChannel):
        raise ShapeError(f"denseblock_param.initChannel is {p.initChannel} but the input has {x[1]} channels")


def _denseblock(layer, bottoms):
    x = _one_bottom(layer, bottoms)
    p = layer.denseblock_param
    denseblock_check(p, x)
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


def blob_count(layer) -> Optional[int]:
    """How many parameter blobs the layer takes, from its type and parameters (None: not fixed, e.g. a
    BatchNorm computing batch statistics; 0 for types without parameters)."""
    t = layer.type
    if t in ("Convolution", "Deconvolution"):
        return 1 + bool(layer.convolution_param.bias_term)
    if t == "InnerProduct":
        return 1 + bool(layer.inner_product_param.bias_term)
    if t == "Embed":
        return 1 + bool(layer.embed_param.bias_term)
    if t == "BatchNorm":
        return 3 if batch_norm_global_stats(layer.batch_norm_param) else None
    if t == "Scale":
        return (1 if len(layer.bottom) == 1 else 0) + bool(layer.scale_param.bias_term)
    if t == "Bias":
        return 1 if len(layer.bottom) == 1 else 0
    if t == "PReLU":
        return 1
    if t == "DenseBlock":
        p = layer.denseblock_param
        return (10 if p.use_BC else 5) * int(p.numTransition) + 1
    return 0


def batch_norm_global_stats(p) -> bool:
    """BatchNorm's ``use_global_stats``: unset means "phase == TEST" in batch_norm_layer.cpp, so True here."""
    return bool(p.use_global_stats) if p.HasField("use_global_stats") else True


def total(shapes: Sequence[Shape]) -> int:
    """Number of values in a list of shapes (handy for tests and reports)."""
    return sum(count(s) for s in shapes)


__all__ = ["LAYER_TYPES", "LayerType", "layer_attrs", "message_dict", "in_phase", "blob_count",
           "batch_norm_global_stats", "denseblock_param_shapes", "denseblock_check", "total"]
