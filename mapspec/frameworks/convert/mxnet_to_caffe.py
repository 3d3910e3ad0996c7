"""MXNet symbol -> Caffe net: one converter function per MXNet op (:data:`CONVERTERS`).

Each converter gets the conversion state, the node and the Caffe blobs of its data inputs, adds
the Caffe layers that compute the same numbers and returns the blob holding the node's output.
Layers are named after the MXNet nodes (as MXNet2Caffe names them): a BatchNorm ``bn`` becomes
the Caffe ``BatchNorm`` ``bn`` (mean, var, factor 1) and the in-place ``Scale`` ``bn_scale``
(gamma, beta); the weights follow as :class:`~.common.WeightRule` (gamma filled with 1 where
``fix_gamma`` says MXNet ignores it).

Where the frameworks differ the converter checks that the numbers agree for the shapes this
net sees, or refuses: pooling (MXNet's ``valid``/``full`` rounding vs Caffe's ceil with its
padding clip), ``count_include_pad``, Dropout ``mode='always'``, softmax over several axes.
``L2Normalization`` is refused: stock Caffe (and mapspec's Caffe executor) has no such layer.
"""

from __future__ import annotations

from typing import Callable, Optional

from ..caffe import schema
from ..caffe.geometry import ShapeError as CaffeShapeError
from ..caffe.geometry import pooled_size as caffe_pooled
from ..caffe.net import dump
from ..mxnet.graph import Graph, dfs_order, infer_node_shapes
from ..mxnet.ops import OPS, pooled_size as mxnet_pooled, slots_of
from .common import Converted, WeightRule, node_error

DATA_ROLES = ("data", "lhs", "rhs", None)


class _Ctx:
    def __init__(self, graph: Graph, outs: list):
        self.graph, self.outs = graph, outs
        self.net = schema.NetParameter()
        self.rules: list[WeightRule] = []
        self.blob: dict = {}  # (node index, output index) -> Caffe blob name
        self.names: set = set()  # Caffe layer names used
        self.notes: list = []

    def fail(self, node, msg: str):
        return node_error(self.graph.path, f"node {node.name!r} ({node.op})", msg)

    def layer(self, node, name: str, type_: str, bottoms: list, top: Optional[str] = None):
        if name in self.names:
            raise self.fail(node, f"a second Caffe layer named {name!r}: rename one of the MXNet nodes")
        self.names.add(name)
        lay = self.net.layer.add()
        lay.name, lay.type = name, type_
        lay.bottom.extend(bottoms)
        lay.top.append(top or name)
        return lay

    def param(self, node, role: str) -> Optional[str]:
        """The variable feeding ``node`` at slot ``role`` (None when the slot is absent)."""
        for (src, _), r in zip(node.inputs, slots_of(OPS[node.op], node.attrs)):
            if r == role:
                return self.graph.nodes[src].name
        return None

    def in_shape(self, node, k: int = 0) -> tuple:
        src, out = node.inputs[k]
        return tuple(self.outs[src][out])

    def out_shape(self, node) -> tuple:
        return tuple(self.outs[node.index][0])

    def rule(self, src: Optional[str], dst: str, **kw) -> None:
        if src is not None:
            self.rules.append(WeightRule(src, dst, **kw))


def _spatial2(ctx, node, key: str) -> list:
    v = list(node.attrs.get(key) or ())
    if len(v) != 2:
        raise ctx.fail(node, f"{key}={tuple(v)}: only 2-D (NCHW) windows are converted")
    return v


def _enum(msg, field: str, name: str) -> None:
    setattr(msg, field, msg.DESCRIPTOR.fields_by_name[field].enum_type.values_by_name[name].number)


def _set_hw(p, key: str, v: list) -> None:
    """Caffe's kernel/stride/pad as one repeated value when both axes agree."""
    getattr(p, key).extend([v[0]] if v[0] == v[1] else v)


def _conv(ctx, node, ins):
    a = node.attrs
    k = _spatial2(ctx, node, "kernel")
    lay = ctx.layer(node, node.name, "Convolution", ins)
    p = lay.convolution_param
    p.num_output = a["num_filter"]
    p.bias_term = not a["no_bias"]
    _set_hw(p, "kernel_size", k)
    for key, caffe_key in (("stride", "stride"), ("pad", "pad"), ("dilate", "dilation")):
        v = _spatial2(ctx, node, key)
        if v != [0 if key == "pad" else 1] * 2:
            _set_hw(p, caffe_key, v)
    if a["num_group"] != 1:
        p.group = a["num_group"]
    ctx.rule(ctx.param(node, "weight"), f"{node.name}[0]")
    ctx.rule(ctx.param(node, "bias"), f"{node.name}[1]")
    return node.name


def _fc(ctx, node, ins):
    a = node.attrs
    lay = ctx.layer(node, node.name, "InnerProduct", ins)
    p = lay.inner_product_param
    p.num_output = a["num_hidden"]
    p.bias_term = not a["no_bias"]
    nd = len(ctx.in_shape(node))
    if not a["flatten"] and nd > 2:
        p.axis = nd - 1  # MXNet's flatten=False: the last axis only
    ctx.rule(ctx.param(node, "weight"), f"{node.name}[0]")
    ctx.rule(ctx.param(node, "bias"), f"{node.name}[1]")
    return node.name


def _bn(ctx, node, ins):
    a = node.attrs
    if a["axis"] not in (1, 1 - len(ctx.in_shape(node))):
        raise ctx.fail(node, f"axis={a['axis']}: Caffe's BatchNorm normalises axis 1 only")
    bn = ctx.layer(node, node.name, "BatchNorm", ins)
    bn.batch_norm_param.use_global_stats = True  # MXNet's inference uses the moving statistics
    bn.batch_norm_param.eps = a["eps"]
    scale_name = f"{node.name}_scale"
    sc = ctx.layer(node, scale_name, "Scale", [node.name], node.name)
    sc.scale_param.bias_term = True
    ctx.rule(ctx.param(node, "moving_mean"), f"{node.name}[0]", also={f"{node.name}[2]": [1.0]},
             why="Caffe's moving-average factor 1: the statistics as they are")
    ctx.rule(ctx.param(node, "moving_var"), f"{node.name}[1]")
    ctx.rule(ctx.param(node, "gamma"), f"{scale_name}[0]", fill=1.0 if a["fix_gamma"] else None,
             why="fix_gamma=True: MXNet uses gamma 1 whatever the file holds" if a["fix_gamma"] else "")
    ctx.rule(ctx.param(node, "beta"), f"{scale_name}[1]")
    return node.name


def _leaky(ctx, node, ins):
    a = node.attrs
    kind = a["act_type"]
    if kind == "prelu":
        ctx.layer(node, node.name, "PReLU", ins)
        ctx.rule(ctx.param(node, "gamma"), f"{node.name}[0]")
    elif kind == "leaky":
        ctx.layer(node, node.name, "ReLU", ins).relu_param.negative_slope = a["slope"]
    elif kind == "elu":
        ctx.layer(node, node.name, "ELU", ins).elu_param.alpha = a["slope"]
    else:
        raise ctx.fail(node, f"act_type={kind!r} has no Caffe layer (prelu, leaky and elu convert)")
    return node.name


_ACTIVATIONS = {"relu": "ReLU", "sigmoid": "Sigmoid", "tanh": "TanH", "softrelu": "BNLL"}


def _activation(ctx, node, ins):
    kind = node.attrs.get("act_type", node.op)
    if kind not in _ACTIVATIONS:
        raise ctx.fail(node, f"act_type={kind!r} has no Caffe layer ({', '.join(_ACTIVATIONS)} convert)")
    ctx.layer(node, node.name, _ACTIVATIONS[kind], ins)
    return node.name


def _pool(ctx, node, ins):
    a = node.attrs
    kind = {"max": "MAX", "avg": "AVE"}.get(a["pool_type"])
    if kind is None:
        raise ctx.fail(node, f"pool_type={a['pool_type']!r} has no Caffe equivalent (max and avg convert)")
    lay = ctx.layer(node, node.name, "Pooling", ins)
    p = lay.pooling_param
    _enum(p, "pool", kind)
    if a["global_pool"]:
        p.global_pooling = True
        return node.name
    k, s, pad = (_spatial2(ctx, node, key) for key in ("kernel", "stride", "pad"))
    if kind == "AVE" and any(pad) and a.get("count_include_pad") is False:
        raise ctx.fail(node, "count_include_pad=False: Caffe's average pooling counts the padding; no Caffe layer "
                             "gives these numbers")
    if any(pad[i] >= k[i] for i in range(2)):
        raise ctx.fail(node, f"pad {tuple(pad)} is not smaller than kernel {tuple(k)}, which Caffe refuses")
    hw = ctx.in_shape(node)[2:]
    conv = a["pooling_convention"]
    for i in range(2):
        want = mxnet_pooled(hw[i], k[i], s[i], pad[i], conv)
        try:
            got = caffe_pooled(hw[i], k[i], s[i], pad[i], True, any(pad))
        except CaffeShapeError as e:
            raise ctx.fail(node, str(e)) from None
        if got != want:
            raise ctx.fail(node, f"MXNet pools a {hw[i]}-wide axis to {want} (pooling_convention={conv!r}) but "
                                 f"Caffe's Pooling (ceil rounding) gives {got} for kernel {k[i]}, stride {s[i]}, "
                                 f"pad {pad[i]}: no Caffe Pooling reproduces these numbers; change the symbol's "
                                 f"pooling_convention or pad, or pick an input shape where they agree")
    for key, v, default in (("kernel", k, None), ("stride", s, 1), ("pad", pad, 0)):
        if v[0] == v[1]:
            if v[0] != default:
                setattr(p, "kernel_size" if key == "kernel" else key, v[0])
        else:
            setattr(p, f"{key}_h", v[0])
            setattr(p, f"{key}_w", v[1])
    return node.name


def _flatten(ctx, node, ins):
    ctx.layer(node, node.name, "Flatten", ins)
    return node.name


def _dropout(ctx, node, ins):
    if node.attrs["mode"] != "training":
        raise ctx.fail(node, f"mode={node.attrs['mode']!r} drops values at inference too; Caffe's Dropout is the "
                             f"identity at test time")
    ctx.layer(node, node.name, "Dropout", ins).dropout_param.dropout_ratio = node.attrs["p"]
    return node.name


def _concat(ctx, node, ins):
    ctx.layer(node, node.name, "Concat", ins).concat_param.axis = node.attrs["dim"]
    return node.name


def _reshape(ctx, node, ins):
    src, out = ctx.in_shape(node), ctx.out_shape(node)
    dims = [0] + list(out[1:]) if out and src and out[0] == src[0] else list(out)
    ctx.layer(node, node.name, "Reshape", ins).reshape_param.shape.dim.extend(dims)
    return node.name


def _eltwise(op: str, coeff: Optional[list] = None) -> Callable:
    def convert(ctx, node, ins):
        shapes = {tuple(ctx.outs[s][o]) for s, o in node.inputs}
        if len(shapes) != 1:
            raise ctx.fail(node, f"inputs of shapes {sorted(shapes)} broadcast; Caffe's Eltwise needs equal shapes")
        p = ctx.layer(node, node.name, "Eltwise", ins).eltwise_param
        _enum(p, "operation", op)
        if coeff:
            p.coeff.extend(coeff)
        return node.name
    return convert


def _scalar(scale_of: Callable, shift_of: Callable) -> Callable:
    """A ``_*_scalar`` op as Caffe's Power layer: ``shift + scale * x`` (power 1).  Plus, minus and multiply
    are the same float operation in both; ``_div_scalar`` becomes a multiplication by ``1/s``, which may
    differ from MXNet's division in the last bit."""
    def convert(ctx, node, ins):
        s = node.attrs["scalar"]
        p = ctx.layer(node, node.name, "Power", ins).power_param
        p.power, p.scale, p.shift = 1.0, scale_of(s), shift_of(s)
        return node.name
    return convert


def _softmax(ctx, node, ins):
    a, shape = node.attrs, ctx.in_shape(node)
    if node.op == "SoftmaxOutput":
        axis = -1 if a["preserve_shape"] else 1
        if not a["multi_output"] and not a["preserve_shape"] and len(shape) > 2:
            raise ctx.fail(node, f"SoftmaxOutput normalises over all of {shape[1:]} at once; Caffe's Softmax takes "
                                 f"one axis (flatten first, or use multi_output)")
    elif node.op == "SoftmaxActivation":
        if a["mode"] == "instance" and len(shape) > 2:
            raise ctx.fail(node, "mode='instance' on a >2-D input normalises several axes; Caffe's Softmax takes one")
        axis = 1
    else:
        if a.get("temperature") not in (None, 1.0) or a.get("use_length"):
            raise ctx.fail(node, "temperature and use_length have no Caffe equivalent")
        axis = a["axis"]
    ctx.layer(node, node.name, "Softmax", ins[:1]).softmax_param.axis = axis
    return node.name


def _clip(ctx, node, ins):
    p = ctx.layer(node, node.name, "Clip", ins).clip_param
    p.min, p.max = node.attrs["a_min"], node.attrs["a_max"]
    return node.name


def _identity(ctx, node, ins):
    return ins[0]


def _l2norm(ctx, node, ins):
    raise ctx.fail(node, "Caffe has no stock L2 normalisation layer (nor does mapspec's Caffe executor): convert "
                         "the embedding before it (cut the symbol at its input, e.g. sym.get_internals()"
                         f"[{ctx.graph.nodes[node.inputs[0][0]].name + '_output'!r}]) and normalise outside the net")


CONVERTERS: dict = {
    "Convolution": _conv, "FullyConnected": _fc, "BatchNorm": _bn, "LeakyReLU": _leaky,
    "Activation": _activation, "relu": _activation, "sigmoid": _activation, "tanh": _activation,
    "Pooling": _pool, "Flatten": _flatten, "Dropout": _dropout, "Concat": _concat, "Reshape": _reshape,
    "SoftmaxOutput": _softmax, "softmax": _softmax, "SoftmaxActivation": _softmax, "clip": _clip,
    "L2Normalization": _l2norm,
    "_copy": _identity, "identity": _identity, "BlockGrad": _identity, "stop_gradient": _identity,
}
for _names, _fn in ((("elemwise_add", "_Plus", "_plus", "_add", "add_n", "ElementWiseSum", "broadcast_add",
                      "broadcast_plus"), _eltwise("SUM")),
                    (("elemwise_sub", "_Minus", "_minus", "_sub", "broadcast_sub", "broadcast_minus"),
                     _eltwise("SUM", [1.0, -1.0])),
                    (("elemwise_mul", "_Mul", "_mul", "broadcast_mul"), _eltwise("PROD")),
                    (("_Maximum", "_maximum", "broadcast_maximum"), _eltwise("MAX")),
                    (("_plus_scalar", "_PlusScalar"), _scalar(lambda s: 1.0, lambda s: s)),
                    (("_minus_scalar", "_MinusScalar"), _scalar(lambda s: 1.0, lambda s: -s)),
                    (("_rminus_scalar", "_RMinusScalar"), _scalar(lambda s: -1.0, lambda s: s)),
                    (("_mul_scalar", "_MulScalar"), _scalar(lambda s: s, lambda s: 0.0)),
                    (("_div_scalar", "_DivScalar"), _scalar(lambda s: 1.0 / s, lambda s: 0.0))):
    for _n in _names:
        CONVERTERS[_n] = _fn


def convert(graph: Graph, input_shapes: dict) -> Converted:
    """The Caffe net computing ``graph`` for these input shapes (every input needs one)."""
    missing = [n for n in graph.input_names if n not in input_shapes]
    if missing:
        raise node_error(graph.path, f"input {missing[0]!r}", "has no shape: give --input-shape N,C,H,W "
                         "(e.g. 1,3,112,112); the Caffe net's Input layer needs it")
    needed = set(dfs_order(graph.nodes, graph.heads))
    for node in graph.nodes:  # before shape inference: an op Caffe cannot have is the first thing to say
        if node.index in needed and node.op != "null" and node.op not in CONVERTERS:
            raise node_error(graph.path, f"node {node.name!r} ({node.op})",
                             f"mapspec cannot express op {node.op!r} in Caffe (ops it converts: "
                             f"{', '.join(sorted(CONVERTERS))})")
    _, outs = infer_node_shapes(graph, input_shapes)
    ctx = _Ctx(graph, outs)
    for name in graph.input_names:
        idx = graph.by_name[name]
        if idx not in needed:
            continue
        lay = ctx.layer(graph.nodes[idx], name, "Input", [])
        lay.input_param.shape.add().dim.extend(input_shapes[name])
        ctx.blob[(idx, 0)] = name
    skip = set(graph.param_names) | set(graph.aux_names) | set(graph.label_names)
    for node in graph.nodes:
        if node.index not in needed or node.op == "null":
            continue
        fn = CONVERTERS[node.op]
        roles = slots_of(OPS[node.op], node.attrs) if node.op in OPS else (None,) * len(node.inputs)
        ins = []
        for (src, out), role in zip(node.inputs, roles):
            src_node = graph.nodes[src]
            if src_node.op == "null" and src_node.name in skip:
                if role in DATA_ROLES:
                    raise ctx.fail(node, f"reads the parameter {src_node.name!r} as data; Caffe layers take "
                                         f"weights only as their own blobs")
                continue
            if (src, out) not in ctx.blob:
                what = graph.output_names(src)[out] if out < len(graph.output_names(src)) else f"output {out}"
                raise ctx.fail(node, f"reads {what!r}, which has no Caffe counterpart (only a node's first output "
                                     f"converts)")
            ins.append(ctx.blob[(src, out)])
        ctx.blob[(node.index, 0)] = fn(ctx, node, ins)
    outputs = []
    for src, out in graph.heads:
        if (src, out) not in ctx.blob:
            raise node_error(graph.path, f"output {graph.output_names(src)[out]!r}", "has no Caffe counterpart")
        outputs.append(ctx.blob[(src, out)])
    ctx.net.name = _net_name(graph.path)
    text = dump(ctx.net)
    names = [graph.nodes[src].name for src, _ in graph.heads]
    return Converted(text, ctx.rules, {n: tuple(input_shapes[n]) for n in graph.input_names}, outputs, names,
                     "mxnet", "caffe", ctx.notes)


def _net_name(path: str) -> str:
    import os

    base = os.path.basename(path)
    for suffix in ("-symbol.json", ".json"):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


__all__ = ["CONVERTERS", "convert"]
