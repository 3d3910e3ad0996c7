"""Caffe net -> MXNet symbol: one converter function per Caffe layer type (:data:`CONVERTERS`).

The net's TEST-phase layers are read in order with their inferred shapes; each Caffe blob name
maps to the MXNet node output that holds its current value (in-place layers rebind it, as in
Caffe).  Nodes are named after the layers, parameters ``LAYER_weight``/``_bias``/``_gamma``/``_beta``
and the aux states ``LAYER_moving_mean``/``_moving_var``.  A BatchNorm followed by the Scale that
alone reads its output becomes one MXNet ``BatchNorm`` (fix_gamma False; mean and variance are
the Caffe blobs divided by the factor blob, 0 where the factor is 0, as Caffe does); a BatchNorm
without a Scale gets gamma 1 and beta 0 (constants in the spec).  Pooling picks MXNet's
``pooling_convention`` whose rounding gives Caffe's output size, or is refused.  Anything without
an MXNet op giving the same numbers (a lone Scale, channel-shared PReLU, Power with power != 1,
Eltwise coefficients, LRN, ...) is an error naming the layer.
"""

from __future__ import annotations

import json
from typing import Optional

from ..caffe import layers as cl
from ..caffe.geometry import ShapeError, conv_geometry, pool_geometry, pool_rounding
from ..caffe.net import declared_inputs, infer
from ..mxnet.ops import pooled_size as mxnet_pooled
from .common import Converted, WeightRule, node_error

MXNET_VERSION = 10901


def _t(v) -> str:
    """An attribute value as MXNet writes it."""
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, (tuple, list)):
        return "(" + ", ".join(str(int(x)) for x in v) + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, float):
        return repr(cl._float(v))
    return str(v)


class _Ctx:
    def __init__(self, path: str, layers: list, shapes):
        self.path, self.layers, self.shapes = path, layers, shapes
        self.nodes: list = []
        self.blob: dict = {}  # Caffe blob name -> (node index, output index)
        self.rules: list[WeightRule] = []
        self.names: set = set()
        self.merged: set = set()  # indexes of Scale layers folded into the BatchNorm before them

    def fail(self, i: int, msg: str):
        layer = self.layers[i]
        return node_error(self.path, f"layer {layer.name!r} ({layer.type})", msg)

    def var(self, name: str) -> tuple:
        self.nodes.append({"op": "null", "name": name, "inputs": []})
        return (len(self.nodes) - 1, 0)

    def op(self, i: int, op: str, name: str, attrs: dict, inputs: list, params: tuple = ()) -> tuple:
        """An op node reading ``inputs`` (node outputs), then a variable per parameter suffix."""
        refs = list(inputs) + [self.var(f"{name}_{p}") for p in params]
        if name in self.names:
            raise self.fail(i, f"a second MXNet node named {name!r}: rename one of the layers")
        self.names.add(name)
        self.nodes.append({"op": op, "name": name, "attrs": {k: _t(v) for k, v in attrs.items()},
                           "inputs": [[s, o, 0] for s, o in refs]})
        return (len(self.nodes) - 1, 0)

    def rule(self, src: str, dst: str, **kw) -> None:
        self.rules.append(WeightRule(src, dst, **kw))

    def readers(self, i: int, blob: str) -> list:
        """Layers after ``i`` that read the value of ``blob`` written by layer ``i``."""
        out = []
        for j in range(i + 1, len(self.layers)):
            if blob in self.layers[j].bottom:
                out.append(j)
            if blob in self.layers[j].top:
                break
        return out


def _conv(ctx, i, layer, ins):
    p = layer.convolution_param
    try:
        g = conv_geometry(p, 2)
    except ShapeError as e:
        raise ctx.fail(i, str(e)) from None
    if p.axis != 1:
        raise ctx.fail(i, f"axis={p.axis}: MXNet convolves channels-first (axis 1) only")
    attrs = {"kernel": g.kernel, "stride": g.stride, "pad": g.pad, "dilate": g.dilation, "num_filter": p.num_output,
             "num_group": p.group, "no_bias": not p.bias_term}
    params = ("weight",) + (("bias",) if p.bias_term else ())
    for k, suffix in enumerate(params):
        ctx.rule(f"{layer.name}[{k}]", f"{layer.name}_{suffix}")
    return ctx.op(i, "Convolution", layer.name, attrs, ins, params)


def _inner_product(ctx, i, layer, ins):
    p = layer.inner_product_param
    nd = len(ctx.shapes.blobs_in[i][0])
    if p.transpose:
        raise ctx.fail(i, "transpose: true stores the weight as (K, N); MXNet's FullyConnected wants (N, K)")
    axis = p.axis if p.axis >= 0 else nd + p.axis
    if axis == 1:
        flatten = True
    elif axis == nd - 1:
        flatten = False
    else:
        raise ctx.fail(i, f"axis={p.axis}: MXNet's FullyConnected flattens from axis 1 or uses the last axis only")
    params = ("weight",) + (("bias",) if p.bias_term else ())
    for k, suffix in enumerate(params):
        ctx.rule(f"{layer.name}[{k}]", f"{layer.name}_{suffix}")
    return ctx.op(i, "FullyConnected", layer.name, {"num_hidden": p.num_output, "no_bias": not p.bias_term,
                                                    "flatten": flatten}, ins, params)


def _batch_norm(ctx, i, layer, ins):
    p = layer.batch_norm_param
    if p.HasField("use_global_stats") and not p.use_global_stats:
        raise ctx.fail(i, "use_global_stats: false normalises with the batch's own statistics at test time; MXNet's "
                          "inference BatchNorm uses the stored ones")
    name, top = layer.name, layer.top[0]
    readers = ctx.readers(i, top)
    scale = None
    if readers:
        s = ctx.layers[readers[0]]
        sp = s.scale_param
        if (len(readers) == 1 and s.type == "Scale" and len(s.bottom) == 1 and sp.axis in (1, -3)
                and sp.num_axes == 1 and sp.bias_term and not s.blobs):
            scale = readers[0]
    c = ctx.shapes.blobs_in[i][0][1]
    factor = f"{name}[2]"
    by = {"div": {"by": factor, "zero": 0}}
    ctx.rule(f"{name}[0]", f"{name}_moving_mean", transforms=[by],
             why="Caffe stores the statistics times the factor blob (0 where it is 0, as Caffe)")
    ctx.rule(f"{name}[1]", f"{name}_moving_var", transforms=[by])
    if scale is not None:
        s = ctx.layers[scale]
        ctx.merged.add(scale)
        ctx.rule(f"{s.name}[0]", f"{name}_gamma", why=f"Scale {s.name!r} is the BatchNorm's gamma and beta")
        ctx.rule(f"{s.name}[1]", f"{name}_beta")
        attrs = {"eps": p.eps, "fix_gamma": False, "use_global_stats": True}
    else:
        ctx.rules[-2].also = {f"{name}_gamma": [1.0] * c, f"{name}_beta": [0.0] * c}
        ctx.rules[-2].why += "; no Scale follows: gamma 1, beta 0"
        attrs = {"eps": p.eps, "fix_gamma": True, "use_global_stats": True}
    out = ctx.op(i, "BatchNorm", name, attrs, ins, ("gamma", "beta", "moving_mean", "moving_var"))
    if scale is not None:
        ctx.blob[ctx.layers[scale].top[0]] = out
    return out


def _relu(ctx, i, layer, ins):
    slope = layer.relu_param.negative_slope
    if slope:
        return ctx.op(i, "LeakyReLU", layer.name, {"act_type": "leaky", "slope": slope}, ins)
    return ctx.op(i, "Activation", layer.name, {"act_type": "relu"}, ins)


def _prelu(ctx, i, layer, ins):
    if layer.prelu_param.channel_shared:
        raise ctx.fail(i, "channel_shared: true (one slope for all channels); MXNet's prelu has one per channel")
    ctx.rule(f"{layer.name}[0]", f"{layer.name}_gamma")
    return ctx.op(i, "LeakyReLU", layer.name, {"act_type": "prelu"}, ins, ("gamma",))


def _activation(kind: str):
    def convert(ctx, i, layer, ins):
        return ctx.op(i, "Activation", layer.name, {"act_type": kind}, ins)
    return convert


def _elu(ctx, i, layer, ins):
    return ctx.op(i, "LeakyReLU", layer.name, {"act_type": "elu", "slope": layer.elu_param.alpha}, ins)


def _pooling(ctx, i, layer, ins):
    p = layer.pooling_param
    kind = {0: "max", 1: "avg"}.get(p.pool)
    if kind is None:
        raise ctx.fail(i, "STOCHASTIC pooling has no MXNet equivalent")
    hw = ctx.shapes.blobs_in[i][0][2:]
    try:
        g = pool_geometry(p, hw)
        ceil = pool_rounding(p)
    except ShapeError as e:
        raise ctx.fail(i, str(e)) from None
    if g.global_pooling:
        return ctx.op(i, "Pooling", layer.name, {"kernel": (1, 1), "pool_type": kind, "global_pool": True}, ins)
    want = ctx.shapes.tops[i][0][2:]
    for conv in ("full", "valid") if ceil else ("valid",):
        if all(mxnet_pooled(hw[a], g.kernel[a], g.stride[a], g.pad[a], conv) == want[a] for a in range(2)):
            break
    else:
        raise ctx.fail(i, f"Caffe pools {tuple(hw)} to {tuple(want)} (its last window dropped where it would start "
                          f"in the padding) but neither of MXNet's pooling conventions (valid, full) gives that size")
    attrs = {"kernel": g.kernel, "stride": g.stride, "pad": g.pad, "pool_type": kind, "pooling_convention": conv}
    if kind == "avg":
        attrs["count_include_pad"] = True  # Caffe divides by the window clipped to the padded input
    return ctx.op(i, "Pooling", layer.name, attrs, ins)


def _eltwise(ctx, i, layer, ins):
    p = layer.eltwise_param
    op = {0: "PROD", 1: "SUM", 2: "MAX"}.get(p.operation)
    coeff = [float(c) for c in p.coeff]
    if op == "SUM" and coeff and coeff not in ([1.0] * len(ins), [1.0, -1.0]):
        raise ctx.fail(i, f"coefficients {coeff}: MXNet adds (1, 1, ...) or subtracts (1, -1) only")
    if op != "SUM" and coeff:
        raise ctx.fail(i, "coefficients apply to SUM only")
    if op == "SUM" and coeff == [1.0, -1.0]:
        return ctx.op(i, "elemwise_sub", layer.name, {}, ins)
    if op == "SUM" and len(ins) > 2:
        return ctx.op(i, "add_n", layer.name, {"num_args": len(ins)}, ins)
    name = {"SUM": "elemwise_add", "PROD": "elemwise_mul", "MAX": "_maximum"}[op]
    x = ins[0]
    for k, y in enumerate(ins[1:]):
        last = k == len(ins) - 2
        x = ctx.op(i, name, layer.name if last else f"{layer.name}_{k}", {}, [x, y])
    return x


def _concat(ctx, i, layer, ins):
    p = layer.concat_param
    axis = p.axis if not p.HasField("concat_dim") else p.concat_dim
    return ctx.op(i, "Concat", layer.name, {"num_args": len(ins), "dim": axis}, ins)


def _dropout(ctx, i, layer, ins):
    return ctx.op(i, "Dropout", layer.name, {"p": layer.dropout_param.dropout_ratio}, ins)


def _flatten(ctx, i, layer, ins):
    p = layer.flatten_param
    nd = len(ctx.shapes.blobs_in[i][0])
    if p.axis not in (1, 1 - nd) or p.end_axis not in (-1, nd - 1):
        raise ctx.fail(i, f"axis={p.axis}, end_axis={p.end_axis}: MXNet's Flatten keeps axis 0 and flattens the rest")
    return ctx.op(i, "Flatten", layer.name, {}, ins)


def _softmax(ctx, i, layer, ins):
    return ctx.op(i, "softmax", layer.name, {"axis": layer.softmax_param.axis}, ins)


def _power(ctx, i, layer, ins):
    p = layer.power_param
    if p.power != 1:
        raise ctx.fail(i, f"power={p.power}: only power 1 (scale * x + shift) converts")
    x = ins[0]
    if p.scale != 1:
        x = ctx.op(i, "_mul_scalar", layer.name if p.shift == 0 else f"{layer.name}_mul", {"scalar": p.scale}, [x])
    if p.shift != 0 or x is ins[0]:
        x = ctx.op(i, "_plus_scalar", layer.name, {"scalar": p.shift}, [x])
    return x


def _reshape(ctx, i, layer, ins):
    p = layer.reshape_param
    if p.axis != 0 or p.num_axes != -1:
        raise ctx.fail(i, "axis/num_axes reshape part of the shape only; MXNet's Reshape takes the whole shape")
    return ctx.op(i, "Reshape", layer.name, {"shape": tuple(int(d) for d in p.shape.dim)}, ins)


def _clip(ctx, i, layer, ins):
    return ctx.op(i, "clip", layer.name, {"a_min": layer.clip_param.min, "a_max": layer.clip_param.max}, ins)


def _split(ctx, i, layer, ins):
    return ins[0]


CONVERTERS: dict = {
    "Convolution": _conv, "InnerProduct": _inner_product, "BatchNorm": _batch_norm, "ReLU": _relu,
    "PReLU": _prelu, "Sigmoid": _activation("sigmoid"), "TanH": _activation("tanh"), "BNLL": _activation("softrelu"),
    "ELU": _elu, "Pooling": _pooling, "Eltwise": _eltwise, "Concat": _concat, "Dropout": _dropout,
    "Flatten": _flatten, "Softmax": _softmax, "Power": _power, "Reshape": _reshape, "Clip": _clip, "Split": _split,
}


class _Shapes:
    def __init__(self, net_shapes, layers, index_of):
        self.tops = {index_of[k]: v for k, v in net_shapes.tops.items() if k in index_of}
        self.blobs_in: dict = {}


def convert(net, path: str, input_shape: Optional[tuple] = None) -> Converted:
    """The MXNet symbol (JSON text) computing ``net`` (a ``NetParameter``) in Caffe's TEST phase."""
    all_layers = list(net.layer)
    keep = [k for k, layer in enumerate(all_layers) if cl.in_phase(layer)]
    layers = [all_layers[k] for k in keep]
    inputs = declared_inputs(net, path, layers)
    overrides = {}
    if input_shape is not None:
        if len(inputs) != 1:
            raise node_error(path, "--input-shape", f"the net has {len(inputs)} inputs ({', '.join(inputs)}); "
                             f"give their shapes in the prototxt")
        overrides = {next(iter(inputs)): input_shape}
    for i, layer in enumerate(layers):
        if layer.type not in CONVERTERS and layer.type not in ("Input", "Silence", "Scale"):
            raise node_error(path, f"layer {layer.name!r} ({layer.type})",
                             f"mapspec cannot express layer type {layer.type!r} in MXNet (types it converts: "
                             f"{', '.join(sorted(CONVERTERS))})")
    ns = infer(net, overrides, path=path)
    shapes = _Shapes(ns, layers, {k: i for i, k in enumerate(keep)})
    ctx = _Ctx(path, layers, shapes)
    values: dict = dict(ns.inputs)
    for name in ns.inputs:
        ctx.nodes.append({"op": "null", "name": name, "inputs": [], "attrs": {"__shape__": _t(ns.inputs[name])}})
        ctx.names.add(name)
        ctx.blob[name] = (len(ctx.nodes) - 1, 0)
    produced: list = []
    for i, layer in enumerate(layers):
        shapes.blobs_in[i] = [values[b] for b in layer.bottom]
        for t, s in zip(layer.top, shapes.tops.get(i, [])):
            values[t] = s
        if i in ctx.merged:  # a Scale completing the BatchNorm before it: its top is set already
            produced += [(i, t) for t in layer.top]
            continue
        if layer.type in ("Input", "Silence"):
            continue
        if layer.type == "Scale":
            raise ctx.fail(i, "a Scale that does not follow a BatchNorm (or shares its output with other layers) "
                              "has no single MXNet op; convert nets whose Scale layers complete a BatchNorm")
        if len(layer.top) != 1 and layer.type != "Split":
            raise ctx.fail(i, f"{len(layer.top)} tops: only one-output layers convert")
        ins = [ctx.blob[b] for b in layer.bottom]
        out = CONVERTERS[layer.type](ctx, i, layer, ins)
        for t in layer.top:
            ctx.blob[t] = out
            produced.append((i, t))
    read_later = {}
    for i, layer in enumerate(layers):
        for b in layer.bottom:
            read_later[b] = i
    heads, names = [], []
    for i, t in produced:
        if read_later.get(t, -1) <= i and t not in names and not _rewritten_after(layers, i, t):
            heads.append(ctx.blob[t])
            names.append(t)
    symbol = {"nodes": ctx.nodes, "arg_nodes": [k for k, n in enumerate(ctx.nodes) if n["op"] == "null"],
              "heads": [[s, o, 0] for s, o in heads], "attrs": {"mxnet_version": ["int", MXNET_VERSION]}}
    text = json.dumps(symbol, indent=2) + "\n"
    return Converted(text, ctx.rules, {k: tuple(v) for k, v in ns.inputs.items()},
                     [ctx.nodes[s]["name"] for s, _ in heads], names, "caffe", "mxnet")


def _rewritten_after(layers, i: int, blob: str) -> bool:
    """Is ``blob`` written again by a later layer (an in-place one)? Then that layer reports it."""
    return any(blob in layers[j].top for j in range(i + 1, len(layers)))


__all__ = ["CONVERTERS", "convert"]
