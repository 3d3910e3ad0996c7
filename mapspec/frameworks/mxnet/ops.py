"""MXNet operators: typed attributes with MXNet's defaults, input slots, outputs and shape rules.

:data:`OPS` maps an op name to an :class:`OpDef`: the roles of its input slots (``data``,
``weight``, ``gamma``, ``moving_mean``, ...), its declared attributes (:class:`Param`, with
MXNet's defaults: BatchNorm's ``eps`` 1e-3 and ``fix_gamma`` True, ...), a shape rule
``infer(attrs, input shapes) -> (input shapes, output shapes)`` reproducing MXNet's
``InferShape`` and its visible outputs.  :func:`typed_attrs` turns a node's attribute strings
into typed values.  The arithmetic both the shape rules and the executor need is here once:
:func:`pooled_size`, :func:`deconv_pad_adj`, :func:`reshape_target`.  :func:`param_base_name`
strips MXNet's parameter suffixes (``conv1_weight`` -> ``conv1``).
"""

from __future__ import annotations

from typing import Callable, Mapping, NamedTuple, Sequence, Union

from ...errors import ShapeError  # noqa: F401 - raised by shape rules; turned into a FormatError naming the node
from .attrs import KINDS, REQUIRED, BadValue, Param, parse_literal

# -- the op table --------------------------------------------------------------

PARAM_ROLES = frozenset({"weight", "bias", "gamma", "beta", "moving_mean", "moving_var"})
AUX_ROLES = frozenset({"moving_mean", "moving_var"})
LABEL_ROLES = frozenset({"label"})
# Variable names that are parameters whatever consumes them (MXNet's naming conventions).
PARAM_SUFFIXES = ("_weight", "_bias", "_gamma", "_beta", "_moving_mean", "_moving_var", "_running_mean",
                  "_running_var")
# Hidden variable attributes only learned parameters carry (initializer, learning-rate/decay multipliers).
PARAM_HINTS = ("__init__", "__lr_mult__", "__wd_mult__")


class OpDef(NamedTuple):
    """What mapspec knows about one MXNet operator."""

    slots: Union[tuple, Callable[[dict], tuple]]  # input slot roles, in order (may depend on attrs)
    params: dict  # attribute name -> Param
    infer: Callable  # (attrs, input shapes (None where unknown)) -> (input shapes, output shapes)
    outputs: Union[tuple, Callable[[dict], tuple]] = ("output",)  # names of the visible outputs


def slots_of(op: OpDef, attrs: dict) -> tuple:
    return op.slots(attrs) if callable(op.slots) else op.slots


def outputs_of(op: OpDef, attrs: dict) -> tuple:
    return op.outputs(attrs) if callable(op.outputs) else op.outputs


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _need(shape, what: str = "data") -> tuple:
    if shape is None:
        raise ShapeError(f"the shape of its {what} input is unknown")
    return tuple(shape)


def _spatial(a: dict, key: str, n: int, fill: int) -> tuple:
    v = a.get(key) or ()
    if not v:
        return (fill,) * n
    if len(v) != n:
        raise ShapeError(f"{key}={tuple(v)} has {len(v)} entries but the kernel has {n}")
    return tuple(v)


def _check_layout(a: dict, n: int) -> None:
    layout = a.get("layout")
    want = {1: "NCW", 2: "NCHW", 3: "NCDHW"}.get(n)
    if layout not in (None, want):
        raise ShapeError(f"layout {layout!r} is not supported (only channels-first {want})")


def _data_and_kernel(a: dict, s: list) -> tuple:
    """(data shape, kernel, number of spatial axes) of a (De)Convolution, checked against each other."""
    data = _need(s[0])
    k = tuple(a["kernel"])
    n = len(k)
    if n not in (1, 2, 3):
        raise ShapeError(f"kernel {k} must have 1, 2 or 3 entries")
    _check_layout(a, n)
    if len(data) != n + 2:
        raise ShapeError(f"data shape {data} should have {n + 2} dimensions for kernel {k}")
    return data, k, n


def _infer_conv(a: dict, s: list):
    data, k, n = _data_and_kernel(a, s)
    stride, dilate, pad = _spatial(a, "stride", n, 1), _spatial(a, "dilate", n, 1), _spatial(a, "pad", n, 0)
    nf, g, c = a["num_filter"], a["num_group"], data[1]
    if g < 1 or nf < 1 or min(k) < 1 or min(stride) < 1 or min(dilate) < 1 or min(pad) < 0:
        raise ShapeError("num_filter, num_group, kernel, stride and dilate must be positive, pad >= 0")
    if c % g or nf % g:
        raise ShapeError(f"num_group={g} must divide the input channels ({c}) and num_filter ({nf})")
    out = []
    for i in range(n):
        dk = dilate[i] * (k[i] - 1) + 1
        if dk > data[2 + i] + 2 * pad[i]:
            raise ShapeError(f"kernel {k[i]} (dilated {dk}) is larger than the padded input "
                              f"{data[2 + i] + 2 * pad[i]} along spatial axis {i}")
        out.append((data[2 + i] + 2 * pad[i] - dk) // stride[i] + 1)
    ins = [data, (nf, c // g) + k] + ([] if a["no_bias"] else [(nf,)])
    return ins, [(data[0], nf) + tuple(out)]


def deconv_pad_adj(a: dict, data: tuple) -> tuple:
    """(pad, adj) of a Deconvolution, from ``target_shape`` when it is set (MXNet's InferPad)."""
    k = tuple(a["kernel"])
    n = len(k)
    stride, dilate = _spatial(a, "stride", n, 1), _spatial(a, "dilate", n, 1)
    target = tuple(a.get("target_shape") or ())
    if target and any(target):
        if len(target) != n:
            raise ShapeError(f"target_shape {target} must have {n} entries")
        pad, adj = [], []
        for i in range(n):
            total = stride[i] * (data[2 + i] - 1) + dilate[i] * (k[i] - 1) + 1
            if total < target[i]:
                raise ShapeError(f"target_shape {target} is too big for the input {data}")
            total -= target[i]
            adj.append(total % 2)
            pad.append((total + 1) // 2)
        return tuple(pad), tuple(adj)
    return _spatial(a, "pad", n, 0), _spatial(a, "adj", n, 0)


def _infer_deconv(a: dict, s: list):
    data, k, n = _data_and_kernel(a, s)
    stride, dilate = _spatial(a, "stride", n, 1), _spatial(a, "dilate", n, 1)
    pad, adj = deconv_pad_adj(a, data)
    nf, g, c = a["num_filter"], a["num_group"], data[1]
    if g < 1 or nf < 1 or min(k) < 1 or min(stride) < 1 or min(dilate) < 1 or min(pad) < 0 or min(adj) < 0:
        raise ShapeError("num_filter, num_group, kernel, stride and dilate must be positive, pad/adj >= 0")
    if c % g or nf % g:
        raise ShapeError(f"num_group={g} must divide the input channels ({c}) and num_filter ({nf})")
    out = []
    for i in range(n):
        o = stride[i] * (data[2 + i] - 1) + dilate[i] * (k[i] - 1) + 1 - 2 * pad[i] + adj[i]
        if o < 1:
            raise ShapeError(f"output size {o} along spatial axis {i} is not positive (pad {pad[i]} too big)")
        out.append(o)
    ins = [data, (c, nf // g) + k] + ([] if a["no_bias"] else [(nf,)])
    return ins, [(data[0], nf) + tuple(out)]


def _infer_fc(a: dict, s: list):
    data = _need(s[0])
    nh = a["num_hidden"]
    if nh < 1 or not data:
        raise ShapeError(f"num_hidden={nh} must be positive and data must have at least one dimension")
    if a["flatten"]:
        k, out = _numel(data[1:]), (data[0], nh)
    else:
        k, out = data[-1], data[:-1] + (nh,)
    return [data, (nh, k)] + ([] if a["no_bias"] else [(nh,)]), [out]


def _infer_bn(a: dict, s: list):
    data = _need(s[0])
    axis = a["axis"]
    if not -len(data) <= axis < len(data):
        raise ShapeError(f"axis {axis} is out of range for data of shape {data}")
    c = (data[axis],)
    return [data, c, c, c, c], [data, c, c]


def _bn_outputs(a: dict) -> tuple:
    return ("output", "mean", "var") if a.get("output_mean_var") else ("output",)


def _infer_leaky(a: dict, s: list):
    data = _need(s[0])
    if a["act_type"] == "prelu":
        return [data, ((data[1],) if len(data) >= 2 else (1,))], [data]
    return [data], [data, data] if a["act_type"] == "rrelu" else [data]


def _infer_same(a: dict, s: list):
    data = _need(s[0])
    return [data] + [tuple(x) if x is not None else data for x in s[1:]], [data]


def _infer_pool(a: dict, s: list):
    data = _need(s[0])
    if len(data) < 3:
        raise ShapeError(f"data shape {data} needs at least 3 dimensions (N, C, spatial...)")
    n = len(data) - 2
    _check_layout(a, n)
    if a["global_pool"]:
        return [data], [data[:2] + (1,) * n]
    k = tuple(a["kernel"])
    if len(k) != n:
        raise ShapeError(f"kernel {k} must have {n} entries for data of shape {data}")
    stride, pad = _spatial(a, "stride", n, 1), _spatial(a, "pad", n, 0)
    conv = a["pooling_convention"]
    if conv not in ("valid", "full"):
        raise ShapeError(f"pooling_convention {conv!r} is not supported (valid, full)")
    if min(k) < 1 or min(stride) < 1 or min(pad) < 0:
        raise ShapeError("kernel and stride must be positive, pad >= 0")
    out = [pooled_size(data[2 + i], k[i], stride[i], pad[i], conv) for i in range(n)]
    return [data], [data[:2] + tuple(out)]


def pooled_size(size: int, kernel: int, stride: int, pad: int, convention: str = "valid") -> int:
    """MXNet's pooled output size along one axis: ``(size + 2*pad - kernel) / stride + 1``, rounded down
    for ``pooling_convention`` "valid" and up for "full" (whose last window may hang past the padding)."""
    span = size + 2 * pad - kernel
    if span < 0:
        raise ShapeError(f"kernel {kernel} is larger than the padded input {size + 2 * pad}")
    if convention not in ("valid", "full"):
        raise ShapeError(f"pooling_convention {convention!r} is not supported (valid, full)")
    return span // stride + 1 if convention == "valid" else -(-span // stride) + 1


def _infer_flatten(a: dict, s: list):
    data = _need(s[0])
    if not data:
        raise ShapeError("cannot flatten a 0-d array")
    return [data], [(data[0], _numel(data[1:]))]


def _infer_concat(a: dict, s: list):
    shapes = [_need(x, f"#{i}") for i, x in enumerate(s)]
    if not shapes:
        raise ShapeError("Concat has no inputs")
    nd = len(shapes[0])
    dim = a["dim"] + nd if a["dim"] < 0 else a["dim"]
    if not 0 <= dim < nd:
        raise ShapeError(f"dim {a['dim']} is out of range for inputs of {nd} dimensions")
    for i, x in enumerate(shapes):
        if len(x) != nd or x[:dim] != shapes[0][:dim] or x[dim + 1:] != shapes[0][dim + 1:]:
            raise ShapeError(f"input #{i} of shape {x} does not match input #0 {shapes[0]} off dim {dim}")
    out = list(shapes[0])
    out[dim] = sum(x[dim] for x in shapes)
    return shapes, [tuple(out)]


def reshape_target(a: dict, data: tuple) -> tuple:
    """The output shape of MXNet's Reshape (special codes 0, -1, -2, -3, -4; ``reverse``)."""
    params = tuple(a.get("shape") or ())
    if not params:
        return _legacy_target(a, data)
    src = list(reversed(data)) if a.get("reverse") else list(data)
    if a.get("reverse"):
        params = tuple(reversed(params))
    out: list[int] = []
    infer_at = -1
    si = i = 0

    def take() -> int:
        nonlocal si
        if si >= len(src):
            raise ShapeError(f"shape {tuple(a['shape'])} consumes more dimensions than data {data} has")
        si += 1
        return src[si - 1]

    while i < len(params):
        p = params[i]
        if p == 0:
            out.append(take())
        elif p == -1:
            if infer_at >= 0:
                raise ShapeError(f"shape {tuple(a['shape'])} has more than one -1")
            infer_at = len(out)
            out.append(1)
            if si < len(src):
                si += 1
        elif p == -2:
            out.extend(src[si:])
            si = len(src)
        elif p == -3:
            d1 = take()
            d2 = take()
            out.append(d1 * d2)
        elif p == -4:
            if i + 2 >= len(params):
                raise ShapeError("-4 in shape must be followed by two dimensions")
            d0 = take()
            d1, d2 = params[i + 1], params[i + 2]
            i += 2
            if d1 == -1 and d2 > 0 and d0 % d2 == 0:
                d1 = d0 // d2
            elif d2 == -1 and d1 > 0 and d0 % d1 == 0:
                d2 = d0 // d1
            if d1 < 1 or d2 < 1 or d1 * d2 != d0:
                raise ShapeError(f"-4 split of dimension {d0} into ({params[i - 1]}, {params[i]}) does not fit")
            out.extend([d1, d2])
        elif p > 0:
            out.append(p)
            if si < len(src):
                si += 1
        else:
            raise ShapeError(f"shape code {p} is not one of 0, -1, -2, -3, -4 or a positive size")
        i += 1
    total = _numel(data)
    if infer_at >= 0:
        rest = _numel(out)  # includes the placeholder 1
        if rest == 0 or total % rest:
            raise ShapeError(f"cannot infer the -1 in shape {tuple(a['shape'])} for data {data}")
        out[infer_at] = total // rest
    if a.get("reverse"):
        out.reverse()
    if _numel(out) != total:
        raise ShapeError(f"shape {tuple(a['shape'])} gives {tuple(out)} ({_numel(out)} elements) but data "
                          f"{data} has {total}")
    return tuple(out)


def _legacy_target(a: dict, data: tuple) -> tuple:
    target = tuple(a.get("target_shape") or ())
    if not target:
        raise ShapeError("Reshape needs a shape")
    if a.get("keep_highest"):
        target = (data[0],) + target
    total = _numel(data)
    zeros = [i for i, d in enumerate(target) if d == 0]
    out = list(target)
    if len(zeros) > 1:
        raise ShapeError(f"target_shape {target} may leave only one dimension (0) to infer")
    if zeros:
        rest = _numel(d for d in target if d != 0)
        if rest == 0 or total % rest:
            raise ShapeError(f"cannot infer target_shape {target} for data {data}")
        out[zeros[0]] = total // rest
    if _numel(out) != total:
        raise ShapeError(f"target_shape {target} does not fit data {data}")
    return tuple(out)


def _infer_reshape(a: dict, s: list):
    data = _need(s[0])
    return [data], [reshape_target(a, data)]


def _infer_elemwise(a: dict, s: list):
    known = [tuple(x) for x in s if x is not None]
    if not known:
        raise ShapeError("the shapes of all its inputs are unknown")
    for x in known:
        if x != known[0]:
            raise ShapeError(f"inputs of shapes {known[0]} and {x} differ (use a broadcast_* op)")
    return [known[0]] * len(s), [known[0]]


def broadcast_shape(x: tuple, y: tuple) -> tuple:
    nd = max(len(x), len(y))
    x, y = (1,) * (nd - len(x)) + tuple(x), (1,) * (nd - len(y)) + tuple(y)
    out = []
    for a, b in zip(x, y):
        if a != b and 1 not in (a, b):
            raise ShapeError(f"shapes {x} and {y} cannot be broadcast together")
        out.append(b if a == 1 else a)
    return tuple(out)


def _infer_broadcast(a: dict, s: list):
    x, y = _need(s[0], "lhs"), _need(s[1], "rhs")
    return [x, y], [broadcast_shape(x, y)]


def _infer_softmax_output(a: dict, s: list):
    data = _need(s[0])
    if a["multi_output"]:
        label = (data[0],) + data[2:]
    elif a["preserve_shape"]:
        label = data[:-1]
    else:
        label = (data[0],)
    return [data, tuple(s[1]) if s[1] is not None else label], [data]


def _infer_embedding(a: dict, s: list):
    data = _need(s[0])
    return [data, (a["input_dim"], a["output_dim"])], [data + (a["output_dim"],)]


def _conv_slots(a: dict) -> tuple:
    return ("data", "weight") if a.get("no_bias") else ("data", "weight", "bias")


MAX_ARGS = 1 << 16  # inputs of a variadic op (Concat, add_n); more means a corrupt attribute


def _variadic(a: dict) -> tuple:
    n = a.get("num_args") or 0
    if not 0 <= n <= MAX_ARGS:
        raise BadValue(f"attribute 'num_args'={n} is out of range (0..{MAX_ARGS})")
    return ("data",) * n


_CONV_PARAMS = {"kernel": Param("shape", REQUIRED), "stride": Param("shape", ()), "dilate": Param("shape", ()),
                "pad": Param("shape", ()), "num_filter": Param("int", REQUIRED), "num_group": Param("int", 1),
                "workspace": Param("int", 1024), "no_bias": Param("bool", False), "cudnn_tune": Param("str?", None),
                "cudnn_off": Param("bool", False), "layout": Param("str?", None)}
_SCALAR = {"scalar": Param("float", 1.0), "is_int": Param("bool", True)}
_UNARY = OpDef(("data",), {}, _infer_same)
_BINARY = OpDef(("lhs", "rhs"), {}, _infer_elemwise)
_BROADCAST = OpDef(("lhs", "rhs"), {}, _infer_broadcast)
_SCALAR_OP = OpDef(("data",), _SCALAR, _infer_same)

OPS: dict[str, OpDef] = {
    "Convolution": OpDef(_conv_slots, _CONV_PARAMS, _infer_conv),
    "Deconvolution": OpDef(_conv_slots, {**_CONV_PARAMS, "adj": Param("shape", ()),
                                         "target_shape": Param("shape", ()), "workspace": Param("int", 512),
                                         "no_bias": Param("bool", True)}, _infer_deconv),
    "FullyConnected": OpDef(_conv_slots, {"num_hidden": Param("int", REQUIRED), "no_bias": Param("bool", False),
                                          "flatten": Param("bool", True)}, _infer_fc),
    "BatchNorm": OpDef(("data", "gamma", "beta", "moving_mean", "moving_var"),
                       {"eps": Param("float", 1e-3), "momentum": Param("float", 0.9),
                        "fix_gamma": Param("bool", True), "use_global_stats": Param("bool", False),
                        "output_mean_var": Param("bool", False), "axis": Param("int", 1),
                        "cudnn_off": Param("bool", False), "min_calib_range": Param("float?", None),
                        "max_calib_range": Param("float?", None)}, _infer_bn, _bn_outputs),
    "LeakyReLU": OpDef(lambda a: ("data", "gamma") if a.get("act_type") == "prelu" else ("data",),
                       {"act_type": Param("str", "leaky"), "slope": Param("float", 0.25),
                        "lower_bound": Param("float", 0.125), "upper_bound": Param("float", 0.334)}, _infer_leaky,
                       lambda a: ("output", "mask") if a.get("act_type") == "rrelu" else ("output",)),
    "Activation": OpDef(("data",), {"act_type": Param("str", REQUIRED)}, _infer_same),
    "Pooling": OpDef(("data",), {"kernel": Param("shape", ()), "pool_type": Param("str", "max"),
                                 "global_pool": Param("bool", False), "cudnn_off": Param("bool", False),
                                 "pooling_convention": Param("str", "valid"), "stride": Param("shape", ()),
                                 "pad": Param("shape", ()), "p_value": Param("int?", None),
                                 "count_include_pad": Param("bool?", None), "layout": Param("str?", None)},
                     _infer_pool),
    "Flatten": OpDef(("data",), {}, _infer_flatten),
    "Dropout": OpDef(("data",), {"p": Param("float", 0.5), "mode": Param("str", "training"),
                                 "axes": Param("shape", ()), "cudnn_off": Param("bool?", False)}, _infer_same),
    "Concat": OpDef(_variadic, {"num_args": Param("int", REQUIRED), "dim": Param("int", 1)}, _infer_concat),
    "Reshape": OpDef(("data",), {"shape": Param("shape", ()), "reverse": Param("bool", False),
                                 "target_shape": Param("shape", ()), "keep_highest": Param("bool", False)},
                     _infer_reshape),
    "SoftmaxOutput": OpDef(("data", "label"), {"grad_scale": Param("float", 1.0),
                                               "ignore_label": Param("float", -1.0),
                                               "multi_output": Param("bool", False),
                                               "use_ignore": Param("bool", False),
                                               "preserve_shape": Param("bool", False),
                                               "normalization": Param("str", "null"),
                                               "out_grad": Param("bool", False),
                                               "smooth_alpha": Param("float", 0.0)}, _infer_softmax_output),
    "softmax": OpDef(lambda a: ("data", "length") if a.get("use_length") else ("data",),
                     {"axis": Param("int", -1), "temperature": Param("float?", None), "dtype": Param("str?", None),
                      "use_length": Param("bool?", False)}, _infer_same),
    "SoftmaxActivation": OpDef(("data",), {"mode": Param("str", "instance")}, _infer_same),
    "L2Normalization": OpDef(("data",), {"eps": Param("float", 1e-10), "mode": Param("str", "instance")},
                             _infer_same),
    "Embedding": OpDef(("data", "weight"), {"input_dim": Param("int", REQUIRED),
                                            "output_dim": Param("int", REQUIRED),
                                            "dtype": Param("str", "float32"), "sparse_grad": Param("bool", False)},
                       _infer_embedding),
    "clip": OpDef(("data",), {"a_min": Param("float", REQUIRED), "a_max": Param("float", REQUIRED)}, _infer_same),
    "_copy": _UNARY, "identity": _UNARY, "BlockGrad": _UNARY, "stop_gradient": _UNARY,
    "relu": _UNARY, "sigmoid": _UNARY, "tanh": _UNARY,
    "add_n": OpDef(_variadic, {"num_args": Param("int", REQUIRED)}, _infer_elemwise),
    "ElementWiseSum": OpDef(_variadic, {"num_args": Param("int", REQUIRED)}, _infer_elemwise),
}
for _names, _def in ((("elemwise_add", "_Plus", "_plus", "_add", "elemwise_sub", "_Minus", "_minus", "_sub",
                       "elemwise_mul", "_Mul", "_mul", "elemwise_div", "_Div", "_div", "_Maximum", "_maximum",
                       "_Minimum", "_minimum"), _BINARY),
                     (("broadcast_add", "broadcast_plus", "broadcast_sub", "broadcast_minus", "broadcast_mul",
                       "broadcast_div", "broadcast_maximum", "broadcast_minimum"), _BROADCAST),
                     (("_plus_scalar", "_PlusScalar", "_minus_scalar", "_MinusScalar", "_rminus_scalar",
                       "_RMinusScalar", "_mul_scalar", "_MulScalar", "_div_scalar", "_DivScalar", "_rdiv_scalar",
                       "_RDivScalar", "_maximum_scalar", "_MaximumScalar", "_minimum_scalar", "_MinimumScalar"),
                      _SCALAR_OP)):
    for _n in _names:
        OPS[_n] = _def


def typed_attrs(op: str, raw: Mapping[str, str]) -> dict:
    """Typed attributes of an ``op`` node from its attribute strings, MXNet's defaults filled in.

    Hidden attributes (``__init__``, ``__lr_mult__``, ...) are left out; attributes an
    op does not declare (or all, for ops mapspec does not know) go through
    :func:`parse_literal`.  Raises ``BadValue`` with the reason.
    """
    spec = OPS.get(op)
    out: dict = {}
    for k, v in raw.items():
        if k.startswith("__") and k.endswith("__"):
            continue
        p = spec.params.get(k) if spec else None
        if p is None:
            out[k] = parse_literal(v)
            continue
        try:
            out[k] = KINDS[p.kind](v)
        except BadValue as e:
            shown = v if len(v) <= 80 else f"{v[:40]}...{v[-20:]} ({len(v)} characters)"
            raise BadValue(f"attribute {k!r}={shown!r} is not {e}") from None
    if spec:
        for k, p in spec.params.items():
            if k not in out:
                if p.default is REQUIRED:
                    raise BadValue(f"attribute {k!r} is required by {op} but missing")
                out[k] = p.default
        k = out.get("kernel")
        if op in _WINDOWED and isinstance(k, tuple) and k:
            # MXNet's empty stride/dilate/pad mean "1s"/"0s"; spell them out for specs and executors.
            for key, fill in (("stride", 1), ("dilate", 1), ("pad", 0), ("adj", 0)):
                if out.get(key) == ():
                    out[key] = (fill,) * len(k)
    return out


_WINDOWED = ("Convolution", "Deconvolution", "Pooling")


def param_base_name(name: str) -> str:
    """The layer part of an MXNet parameter name: ``conv1_weight`` -> ``conv1``, ``bn_moving_var`` -> ``bn``
    (:data:`PARAM_SUFFIXES`); a name without such a suffix is returned unchanged."""
    for suffix in PARAM_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


__all__ = ["OPS", "OpDef", "ShapeError", "typed_attrs", "slots_of", "outputs_of", "pooled_size", "deconv_pad_adj",
           "reshape_target", "broadcast_shape", "PARAM_ROLES", "AUX_ROLES", "LABEL_ROLES", "PARAM_SUFFIXES",
           "PARAM_HINTS", "param_base_name"]
