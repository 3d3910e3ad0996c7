"""MXNet symbol graphs (``PREFIX-symbol.json``): a template of the parameters a ``.params`` holds.

A symbol file is JSON::

    {"nodes": [{"op": "null" | "<Op>", "name": str, "attrs": {str: str}, "inputs": [[node, output, version]]}],
     "arg_nodes": [...], "node_row_ptr": [...], "heads": [[node, output, version]],
     "attrs": {"mxnet_version": ["int", 10201]}}

Variables are ``"op": "null"`` nodes; parameters are the variables an operator
consumes at a weight-like slot (a Convolution's ``weight``/``bias``, a BatchNorm's
``gamma``/``beta`` and the auxiliary states ``moving_mean``/``moving_var``).
Operator attributes are strings (``"(3, 3)"``, ``"True"``, ``"2e-05"``) under
``attrs`` (MXNet >= 0.12) or ``param`` and ``attr`` (older files); all three are
read, and parsed by a tiny literal parser (never ``eval``) into the types MXNet
declares for that operator, with MXNet's defaults filled in (see ``OPS``).

Parameter shapes depend on the input shape (a convolution's weight needs the
input channel count), so a template needs ``input_shape=(1, 3, 112, 112)`` (the
single data input) or ``input_shapes={"data": (...)}``; a ``__shape__`` attribute
on an input variable, which some exporters write, is used when neither is given.
Without any of these, ``infos()`` raises a :class:`FormatError` that says so;
``param_names()`` lists the parameters without shapes.

Public API: :func:`load_symbol` (path -> :class:`Graph`), :func:`infer_shapes`
(graph, input shapes -> ``{variable or output name: shape}``), :func:`parse_literal`
and the format functions ``sniff``/``open``/``create``/``save``.
"""

from __future__ import annotations

import builtins
import difflib
import json
import os
import re
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence, Union

from ..errors import FormatError, MapspecError
from .base import Reader, TensorInfo, shapes_option

NAME = "mxnet-symbol"
MAX_JSON_BYTES = 512 << 20  # a symbol file is a few MB at most; refuse to parse absurd files
MAX_NDIM = 32
Shape = tuple


# -- literals ----------------------------------------------------------------

_INT = re.compile(r"[+-]?\d+[lL]?\Z")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\Z|[+-]?(inf|nan)\Z", re.IGNORECASE)
_WORDS = {"true": True, "false": False, "none": None}


def _scalar(text: str):
    """int, float, bool or None for a scalar literal; the stripped string otherwise."""
    t = text.strip()
    low = t.lower()
    if low in _WORDS:
        return _WORDS[low]
    if _INT.match(t):
        return int(t.rstrip("lL"))
    if _FLOAT.match(t):
        return float(t)
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
        return t[1:-1]
    return t


def parse_literal(text: str):
    """Parse an MXNet attribute string without ``eval``.

    ``"True"`` -> True, ``"None"`` -> None, ``"64"`` -> 64, ``"2e-05"`` -> 2e-05,
    ``"(3, 3)"``/``"[3, 3]"``/``"(2L,)"`` -> (3, 3)/(3, 3)/(2,), a flat tuple of
    scalars; anything else (``"relu"``, nested structures) is returned as the string.
    """
    t = text.strip()
    if len(t) >= 2 and (t[0], t[-1]) in (("(", ")"), ("[", "]")):
        inner = t[1:-1].strip()
        if not inner:
            return ()
        parts = inner.split(",")
        if parts[-1].strip() == "":
            parts = parts[:-1]
        items = [_scalar(p) for p in parts]
        if all(i is None or isinstance(i, (bool, int, float)) for i in items) and all(p.strip() for p in parts):
            return tuple(items)
        return t
    return _scalar(t)


class _BadValue(Exception):
    """An attribute string that does not parse as the declared type."""


def _as_int(text: str) -> int:
    v = parse_literal(text)
    if isinstance(v, bool) or not isinstance(v, int):
        raise _BadValue("an integer")
    return v


def _as_float(text: str) -> float:
    v = parse_literal(text)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _BadValue("a number")
    return float(v)


def _as_bool(text: str) -> bool:
    v = parse_literal(text)
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    raise _BadValue("a boolean (True/False/1/0)")


def _as_shape(text: str) -> tuple:
    v = parse_literal(text)
    if isinstance(v, int) and not isinstance(v, bool):
        v = (v,)
    if v is None:
        return ()
    if not isinstance(v, tuple) or not all(isinstance(d, int) and not isinstance(d, bool) for d in v):
        raise _BadValue("a tuple of integers such as (3, 3)")
    if len(v) > MAX_NDIM:
        raise _BadValue(f"a tuple of at most {MAX_NDIM} integers")
    return v


def _as_str(text: str) -> str:
    v = _scalar(text)
    return v if isinstance(v, str) else text.strip()


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse_or_none(text: str):
        return None if text.strip().lower() in ("none", "") else parse(text)
    return parse_or_none


# Declared attribute kinds -> parser.  Every kind has an "or None" twin ("int?").
KINDS: dict[str, Callable[[str], Any]] = {"int": _as_int, "float": _as_float, "bool": _as_bool,
                                          "shape": _as_shape, "str": _as_str}
KINDS.update({k + "?": _optional(f) for k, f in list(KINDS.items())})


# -- the op table --------------------------------------------------------------

class _ShapeError(Exception):
    """Raised by shape rules; turned into a FormatError naming the node."""


class Param(NamedTuple):
    kind: str  # a key of KINDS
    default: Any  # MXNet's default; _REQUIRED if the attribute must be given


_REQUIRED = object()

# Slot roles that make a variable a learned parameter, and those that hold auxiliary states.
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
        raise _ShapeError(f"the shape of its {what} input is unknown")
    return tuple(shape)


def _spatial(a: dict, key: str, n: int, fill: int) -> tuple:
    v = a.get(key) or ()
    if not v:
        return (fill,) * n
    if len(v) != n:
        raise _ShapeError(f"{key}={tuple(v)} has {len(v)} entries but the kernel has {n}")
    return tuple(v)


def _check_layout(a: dict, n: int) -> None:
    layout = a.get("layout")
    want = {1: "NCW", 2: "NCHW", 3: "NCDHW"}.get(n)
    if layout not in (None, want):
        raise _ShapeError(f"layout {layout!r} is not supported (only channels-first {want})")


def _data_and_kernel(a: dict, s: list) -> tuple:
    """(data shape, kernel, number of spatial axes) of a (De)Convolution, checked against each other."""
    data = _need(s[0])
    k = tuple(a["kernel"])
    n = len(k)
    if n not in (1, 2, 3):
        raise _ShapeError(f"kernel {k} must have 1, 2 or 3 entries")
    _check_layout(a, n)
    if len(data) != n + 2:
        raise _ShapeError(f"data shape {data} should have {n + 2} dimensions for kernel {k}")
    return data, k, n


def _infer_conv(a: dict, s: list):
    data, k, n = _data_and_kernel(a, s)
    stride, dilate, pad = _spatial(a, "stride", n, 1), _spatial(a, "dilate", n, 1), _spatial(a, "pad", n, 0)
    nf, g, c = a["num_filter"], a["num_group"], data[1]
    if g < 1 or nf < 1 or min(k) < 1 or min(stride) < 1 or min(dilate) < 1 or min(pad) < 0:
        raise _ShapeError("num_filter, num_group, kernel, stride and dilate must be positive, pad >= 0")
    if c % g or nf % g:
        raise _ShapeError(f"num_group={g} must divide the input channels ({c}) and num_filter ({nf})")
    out = []
    for i in range(n):
        dk = dilate[i] * (k[i] - 1) + 1
        if dk > data[2 + i] + 2 * pad[i]:
            raise _ShapeError(f"kernel {k[i]} (dilated {dk}) is larger than the padded input "
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
            raise _ShapeError(f"target_shape {target} must have {n} entries")
        pad, adj = [], []
        for i in range(n):
            total = stride[i] * (data[2 + i] - 1) + dilate[i] * (k[i] - 1) + 1
            if total < target[i]:
                raise _ShapeError(f"target_shape {target} is too big for the input {data}")
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
        raise _ShapeError("num_filter, num_group, kernel, stride and dilate must be positive, pad/adj >= 0")
    if c % g or nf % g:
        raise _ShapeError(f"num_group={g} must divide the input channels ({c}) and num_filter ({nf})")
    out = []
    for i in range(n):
        o = stride[i] * (data[2 + i] - 1) + dilate[i] * (k[i] - 1) + 1 - 2 * pad[i] + adj[i]
        if o < 1:
            raise _ShapeError(f"output size {o} along spatial axis {i} is not positive (pad {pad[i]} too big)")
        out.append(o)
    ins = [data, (c, nf // g) + k] + ([] if a["no_bias"] else [(nf,)])
    return ins, [(data[0], nf) + tuple(out)]


def _infer_fc(a: dict, s: list):
    data = _need(s[0])
    nh = a["num_hidden"]
    if nh < 1 or not data:
        raise _ShapeError(f"num_hidden={nh} must be positive and data must have at least one dimension")
    if a["flatten"]:
        k, out = _numel(data[1:]), (data[0], nh)
    else:
        k, out = data[-1], data[:-1] + (nh,)
    return [data, (nh, k)] + ([] if a["no_bias"] else [(nh,)]), [out]


def _infer_bn(a: dict, s: list):
    data = _need(s[0])
    axis = a["axis"]
    if not -len(data) <= axis < len(data):
        raise _ShapeError(f"axis {axis} is out of range for data of shape {data}")
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
        raise _ShapeError(f"data shape {data} needs at least 3 dimensions (N, C, spatial...)")
    n = len(data) - 2
    _check_layout(a, n)
    if a["global_pool"]:
        return [data], [data[:2] + (1,) * n]
    k = tuple(a["kernel"])
    if len(k) != n:
        raise _ShapeError(f"kernel {k} must have {n} entries for data of shape {data}")
    stride, pad = _spatial(a, "stride", n, 1), _spatial(a, "pad", n, 0)
    conv = a["pooling_convention"]
    if conv not in ("valid", "full"):
        raise _ShapeError(f"pooling_convention {conv!r} is not supported (valid, full)")
    if min(k) < 1 or min(stride) < 1 or min(pad) < 0:
        raise _ShapeError("kernel and stride must be positive, pad >= 0")
    out = []
    for i in range(n):
        span = data[2 + i] + 2 * pad[i] - k[i]
        if span < 0:
            raise _ShapeError(f"kernel {k[i]} is larger than the padded input {data[2 + i] + 2 * pad[i]}")
        out.append(span // stride[i] + 1 if conv == "valid" else -(-span // stride[i]) + 1)
    return [data], [data[:2] + tuple(out)]


def _infer_flatten(a: dict, s: list):
    data = _need(s[0])
    if not data:
        raise _ShapeError("cannot flatten a 0-d array")
    return [data], [(data[0], _numel(data[1:]))]


def _infer_concat(a: dict, s: list):
    shapes = [_need(x, f"#{i}") for i, x in enumerate(s)]
    if not shapes:
        raise _ShapeError("Concat has no inputs")
    nd = len(shapes[0])
    dim = a["dim"] + nd if a["dim"] < 0 else a["dim"]
    if not 0 <= dim < nd:
        raise _ShapeError(f"dim {a['dim']} is out of range for inputs of {nd} dimensions")
    for i, x in enumerate(shapes):
        if len(x) != nd or x[:dim] != shapes[0][:dim] or x[dim + 1:] != shapes[0][dim + 1:]:
            raise _ShapeError(f"input #{i} of shape {x} does not match input #0 {shapes[0]} off dim {dim}")
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
            raise _ShapeError(f"shape {tuple(a['shape'])} consumes more dimensions than data {data} has")
        si += 1
        return src[si - 1]

    while i < len(params):
        p = params[i]
        if p == 0:
            out.append(take())
        elif p == -1:
            if infer_at >= 0:
                raise _ShapeError(f"shape {tuple(a['shape'])} has more than one -1")
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
                raise _ShapeError("-4 in shape must be followed by two dimensions")
            d0 = take()
            d1, d2 = params[i + 1], params[i + 2]
            i += 2
            if d1 == -1 and d2 > 0 and d0 % d2 == 0:
                d1 = d0 // d2
            elif d2 == -1 and d1 > 0 and d0 % d1 == 0:
                d2 = d0 // d1
            if d1 < 1 or d2 < 1 or d1 * d2 != d0:
                raise _ShapeError(f"-4 split of dimension {d0} into ({params[i - 1]}, {params[i]}) does not fit")
            out.extend([d1, d2])
        elif p > 0:
            out.append(p)
            if si < len(src):
                si += 1
        else:
            raise _ShapeError(f"shape code {p} is not one of 0, -1, -2, -3, -4 or a positive size")
        i += 1
    total = _numel(data)
    if infer_at >= 0:
        rest = _numel(out)  # includes the placeholder 1
        if rest == 0 or total % rest:
            raise _ShapeError(f"cannot infer the -1 in shape {tuple(a['shape'])} for data {data}")
        out[infer_at] = total // rest
    if a.get("reverse"):
        out.reverse()
    if _numel(out) != total:
        raise _ShapeError(f"shape {tuple(a['shape'])} gives {tuple(out)} ({_numel(out)} elements) but data "
                          f"{data} has {total}")
    return tuple(out)


def _legacy_target(a: dict, data: tuple) -> tuple:
    target = tuple(a.get("target_shape") or ())
    if not target:
        raise _ShapeError("Reshape needs a shape")
    if a.get("keep_highest"):
        target = (data[0],) + target
    total = _numel(data)
    zeros = [i for i, d in enumerate(target) if d == 0]
    out = list(target)
    if len(zeros) > 1:
        raise _ShapeError(f"target_shape {target} may leave only one dimension (0) to infer")
    if zeros:
        rest = _numel(d for d in target if d != 0)
        if rest == 0 or total % rest:
            raise _ShapeError(f"cannot infer target_shape {target} for data {data}")
        out[zeros[0]] = total // rest
    if _numel(out) != total:
        raise _ShapeError(f"target_shape {target} does not fit data {data}")
    return tuple(out)


def _infer_reshape(a: dict, s: list):
    data = _need(s[0])
    return [data], [reshape_target(a, data)]


def _infer_elemwise(a: dict, s: list):
    known = [tuple(x) for x in s if x is not None]
    if not known:
        raise _ShapeError("the shapes of all its inputs are unknown")
    for x in known:
        if x != known[0]:
            raise _ShapeError(f"inputs of shapes {known[0]} and {x} differ (use a broadcast_* op)")
    return [known[0]] * len(s), [known[0]]


def broadcast_shape(x: tuple, y: tuple) -> tuple:
    nd = max(len(x), len(y))
    x, y = (1,) * (nd - len(x)) + tuple(x), (1,) * (nd - len(y)) + tuple(y)
    out = []
    for a, b in zip(x, y):
        if a != b and 1 not in (a, b):
            raise _ShapeError(f"shapes {x} and {y} cannot be broadcast together")
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
        raise _BadValue(f"attribute 'num_args'={n} is out of range (0..{MAX_ARGS})")
    return ("data",) * n


_CONV_PARAMS = {"kernel": Param("shape", _REQUIRED), "stride": Param("shape", ()), "dilate": Param("shape", ()),
                "pad": Param("shape", ()), "num_filter": Param("int", _REQUIRED), "num_group": Param("int", 1),
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
    "FullyConnected": OpDef(_conv_slots, {"num_hidden": Param("int", _REQUIRED), "no_bias": Param("bool", False),
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
    "Activation": OpDef(("data",), {"act_type": Param("str", _REQUIRED)}, _infer_same),
    "Pooling": OpDef(("data",), {"kernel": Param("shape", ()), "pool_type": Param("str", "max"),
                                 "global_pool": Param("bool", False), "cudnn_off": Param("bool", False),
                                 "pooling_convention": Param("str", "valid"), "stride": Param("shape", ()),
                                 "pad": Param("shape", ()), "p_value": Param("int?", None),
                                 "count_include_pad": Param("bool?", None), "layout": Param("str?", None)},
                     _infer_pool),
    "Flatten": OpDef(("data",), {}, _infer_flatten),
    "Dropout": OpDef(("data",), {"p": Param("float", 0.5), "mode": Param("str", "training"),
                                 "axes": Param("shape", ()), "cudnn_off": Param("bool?", False)}, _infer_same),
    "Concat": OpDef(_variadic, {"num_args": Param("int", _REQUIRED), "dim": Param("int", 1)}, _infer_concat),
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
    "Embedding": OpDef(("data", "weight"), {"input_dim": Param("int", _REQUIRED),
                                            "output_dim": Param("int", _REQUIRED),
                                            "dtype": Param("str", "float32"), "sparse_grad": Param("bool", False)},
                       _infer_embedding),
    "clip": OpDef(("data",), {"a_min": Param("float", _REQUIRED), "a_max": Param("float", _REQUIRED)}, _infer_same),
    "_copy": _UNARY, "identity": _UNARY, "BlockGrad": _UNARY, "stop_gradient": _UNARY,
    "relu": _UNARY, "sigmoid": _UNARY, "tanh": _UNARY,
    "add_n": OpDef(_variadic, {"num_args": Param("int", _REQUIRED)}, _infer_elemwise),
    "ElementWiseSum": OpDef(_variadic, {"num_args": Param("int", _REQUIRED)}, _infer_elemwise),
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
    :func:`parse_literal`.  Raises ``_BadValue`` with the reason.
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
        except _BadValue as e:
            raise _BadValue(f"attribute {k!r}={v!r} is not {e}") from None
    if spec:
        for k, p in spec.params.items():
            if k not in out:
                if p.default is _REQUIRED:
                    raise _BadValue(f"attribute {k!r} is required by {op} but missing")
                out[k] = p.default
        k = out.get("kernel")
        if op in _WINDOWED and isinstance(k, tuple) and k:
            # MXNet's empty stride/dilate/pad mean "1s"/"0s"; spell them out for specs and executors.
            for key, fill in (("stride", 1), ("dilate", 1), ("pad", 0), ("adj", 0)):
                if out.get(key) == ():
                    out[key] = (fill,) * len(k)
    return out


_WINDOWED = ("Convolution", "Deconvolution", "Pooling")


# -- the graph -----------------------------------------------------------------

class Node(NamedTuple):
    """One node of a symbol graph, in file (topological) order."""

    index: int
    op: str  # "null" for variables
    name: str
    attrs: dict  # typed attributes (defaults filled in for known ops), without hidden ones
    raw: dict  # the attribute strings as stored, hidden ones included
    inputs: tuple  # ((node index, output index), ...)


class Graph(NamedTuple):
    """A loaded ``-symbol.json``: nodes in order, heads, and the variables sorted by role.

    ``arg_names``/``aux_names`` follow MXNet's ``list_arguments()``/``list_auxiliary_states()``
    order (depth-first from the heads); ``input_names``/``label_names`` are the arguments
    fed by the user, ``param_names`` the learned ones.  ``roles`` maps each variable to
    ``(slot role, consuming node index)`` for its first consumer (role None if unknown).
    """

    path: str
    nodes: tuple
    heads: tuple  # ((node index, output index), ...)
    arg_names: tuple
    aux_names: tuple
    input_names: tuple
    label_names: tuple
    param_names: tuple
    roles: dict
    by_name: dict  # node name -> index (the first node of that name)
    version: Optional[int]

    def node(self, name: str) -> Node:
        try:
            return self.nodes[self.by_name[name]]
        except KeyError:
            close = difflib.get_close_matches(name, list(self.by_name), n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise FormatError(self.path, f"no node named {name!r} in this symbol{hint}") from None

    def output_names(self, index: int) -> tuple:
        """MXNet's names of a node's visible outputs (``conv1_output``, ``bn_mean``, ...)."""
        node = self.nodes[index]
        if node.op == "null":
            return (node.name,)
        spec = OPS.get(node.op)
        outs = outputs_of(spec, node.attrs) if spec else ("output",)
        return tuple(f"{node.name}_{o}" for o in outs)

    def head_names(self) -> tuple:
        return tuple(self.output_names(n)[i] for n, i in self.heads)


def _fail(path: str, msg: str) -> FormatError:
    return FormatError(path, msg)


def _read_json(path: str):
    try:
        size = os.path.getsize(path)
        if size > MAX_JSON_BYTES:
            raise FormatError(path, f"file has {size} bytes; a symbol file over {MAX_JSON_BYTES} bytes is refused")
        with builtins.open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise FormatError(path, f"cannot read: {e.strerror}") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise FormatError(path, f"not UTF-8 text ({e.reason})", offset=e.start) from None
    except json.JSONDecodeError as e:
        raise FormatError(path, f"not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})",
                          offset=e.pos) from None
    except RecursionError:
        raise FormatError(path, "JSON is nested too deeply") from None


def _entry(path: str, e, n_nodes: int, where: str) -> tuple:
    """A checked ``[node, output(, version)]`` reference."""
    if (not isinstance(e, list) or len(e) not in (2, 3)
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in e)):
        raise _fail(path, f"{where}: {e!r} is not a [node, output, version] reference")
    if not 0 <= e[0] < n_nodes or not 0 <= e[1] < 1 << 16:
        raise _fail(path, f"{where}: reference {e!r} points outside the {n_nodes} nodes")
    return (e[0], e[1])


def graph_from_json(obj, path: str = "<symbol>", inputs: Optional[Sequence[str]] = None) -> Graph:
    """Build a checked :class:`Graph` from a parsed symbol JSON object.

    ``inputs`` names the data inputs explicitly (like a Module's ``data_names``); then every
    other argument that is not a label is a parameter.  Without it, see :func:`_classify`.
    """
    if not isinstance(obj, dict) or not isinstance(obj.get("nodes"), list):
        raise _fail(path, "not an MXNet symbol: no \"nodes\" list at the top level")
    raw_nodes = obj["nodes"]
    n = len(raw_nodes)
    nodes: list[Node] = []
    by_name: dict[str, int] = {}
    for i, rn in enumerate(raw_nodes):
        where = f"node #{i}"
        if not isinstance(rn, dict) or not isinstance(rn.get("op"), str) or not isinstance(rn.get("name"), str):
            raise _fail(path, f"{where} is not an object with string \"op\" and \"name\"")
        name, op = rn["name"], rn["op"]
        where = f"node #{i} {name!r} ({op})"
        raw: dict = {}
        for key in ("attr", "param", "attrs"):  # later keys win, as in MXNet's upgrader
            part = rn.get(key) or {}
            if not isinstance(part, dict) or not all(isinstance(v, str) for v in part.values()):
                raise _fail(path, f"{where}: \"{key}\" must map attribute names to strings")
            raw.update(part)
        raw_inputs = rn.get("inputs", [])
        if not isinstance(raw_inputs, list):
            raise _fail(path, f"{where}: \"inputs\" is not a list")
        refs = tuple(_entry(path, e, n, f"{where} input #{j}") for j, e in enumerate(raw_inputs))
        for j, (src, _) in enumerate(refs):
            if src >= i:
                raise _fail(path, f"{where}: input #{j} refers to node #{src}, which does not come before it "
                            f"(nodes must be in topological order)")
        if op == "null" and refs:
            raise _fail(path, f"{where}: a variable cannot have inputs")
        try:
            attrs = typed_attrs(op, raw) if op != "null" else {k: parse_literal(v) for k, v in raw.items()}
        except _BadValue as e:
            raise _fail(path, f"{where}: {e}") from None
        spec = OPS.get(op)
        if spec is not None:
            try:
                want = slots_of(spec, attrs)
            except _BadValue as e:
                raise _fail(path, f"{where}: {e}") from None
            if len(refs) != len(want):
                raise _fail(path, f"{where}: has {len(refs)} inputs but {op} with these attributes takes "
                            f"{len(want)} ({', '.join(want) or 'none'})")
        nodes.append(Node(i, op, name, attrs, raw, refs))
        by_name.setdefault(name, i)
    # Output indices must exist on the producing node (known ops; unknown ops are unchecked).
    for node in nodes:
        for j, (src, out) in enumerate(node.inputs):
            _check_output(path, nodes[src], out, f"node #{node.index} {node.name!r} input #{j}")
    heads_raw = obj.get("heads")
    if heads_raw is None:
        heads = ((n - 1, 0),) if n else ()
    elif isinstance(heads_raw, list):
        heads = tuple(_entry(path, e, n, f"head #{j}") for j, e in enumerate(heads_raw))
    else:
        raise _fail(path, "\"heads\" is not a list")
    if not heads:
        raise _fail(path, "the symbol has no outputs (empty \"heads\")")
    for j, (src, out) in enumerate(heads):
        _check_output(path, nodes[src], out, f"head #{j}")
    version = None
    ver = (obj.get("attrs") or {}).get("mxnet_version") if isinstance(obj.get("attrs"), dict) else None
    if isinstance(ver, list) and len(ver) == 2 and isinstance(ver[1], int):
        version = ver[1]
    return _classify(path, tuple(nodes), heads, by_name, version, inputs)


def _check_output(path: str, node: Node, out: int, where: str) -> None:
    if node.op == "null":
        n_out = 1
    elif node.op in OPS:
        n_out = len(outputs_of(OPS[node.op], node.attrs))
        if node.op == "BatchNorm":
            n_out = 3  # mean/var are addressable even when hidden
    else:
        return
    if out >= n_out:
        raise _fail(path, f"{where}: output index {out} out of bounds for node {node.name!r} ({node.op}) "
                    f"with {n_out} output(s)")


def _dfs_order(nodes: tuple, heads: tuple) -> list[int]:
    """Post-order depth-first traversal from the heads (nnvm's DFSVisit), without recursion."""
    seen: set[int] = set()
    order: list[int] = []
    for h, _ in heads:
        if h in seen:
            continue
        stack = [(h, 0)]
        seen.add(h)
        while stack:
            idx, k = stack[-1]
            ins = nodes[idx].inputs
            if k < len(ins):
                stack[-1] = (idx, k + 1)
                src = ins[k][0]
                if src not in seen:
                    seen.add(src)
                    stack.append((src, 0))
            else:
                stack.pop()
                order.append(idx)
    return order


def _classify(path: str, nodes: tuple, heads: tuple, by_name: dict, version,
              given_inputs: Optional[Sequence[str]] = None) -> Graph:
    """Sort the variables into aux states, labels, parameters and inputs.

    Aux: consumed at an auxiliary slot (BatchNorm's moving_mean/moving_var).  Label:
    consumed at a label slot (SoftmaxOutput's), or named ``*_label``.  Parameter:
    consumed at a weight-like slot, or named like one (``*_weight``, ``*_gamma``, ...),
    or carrying ``__init__``/``__lr_mult__``/``__wd_mult__``.  Input: everything else
    (``data``, the operands of element-wise ops) -- unless ``given_inputs`` lists the
    inputs, which then decides.
    """
    order = _dfs_order(nodes, heads)
    roles: dict[str, tuple] = {}
    all_roles: dict[int, set] = {}
    for idx in order:
        node = nodes[idx]
        spec = OPS.get(node.op)
        want = slots_of(spec, node.attrs) if spec else (None,) * len(node.inputs)
        for (src, _), role in zip(node.inputs, want):
            if nodes[src].op == "null":
                all_roles.setdefault(src, set()).add(role)
                roles.setdefault(nodes[src].name, (role, idx))
    args, aux, inputs, labels, params = [], [], [], [], []
    seen_names: dict[str, int] = {}
    for idx in order:
        node = nodes[idx]
        if node.op != "null":
            continue
        if node.name in seen_names:
            raise _fail(path, f"two variables are named {node.name!r} (nodes #{seen_names[node.name]} and #{idx})")
        seen_names[node.name] = idx
        rs = all_roles.get(idx, set())
        roles.setdefault(node.name, (None, None))
        if rs & AUX_ROLES:
            aux.append(node.name)
            continue
        args.append(node.name)
        if given_inputs is not None and node.name in given_inputs:
            inputs.append(node.name)
        elif rs & LABEL_ROLES or (not rs & PARAM_ROLES and node.name.endswith("_label")):
            labels.append(node.name)
        elif (given_inputs is not None or rs & PARAM_ROLES or node.name.endswith(PARAM_SUFFIXES)
              or any(h in node.raw for h in PARAM_HINTS)):
            params.append(node.name)
        else:
            inputs.append(node.name)
    if given_inputs is not None:
        unknown = [n for n in given_inputs if n not in args]
        if unknown:
            raise MapspecError(f"{path}: inputs= names {', '.join(map(repr, unknown))}, which "
                               f"{'is' if len(unknown) == 1 else 'are'} not an argument of this symbol "
                               f"(arguments: {', '.join(args)})")
    return Graph(path, nodes, heads, tuple(args), tuple(aux), tuple(inputs), tuple(labels), tuple(params),
                 roles, by_name, version)


def load_symbol(path, inputs: Optional[Sequence[str]] = None) -> Graph:
    """Read and check a ``-symbol.json`` file (``inputs``: see :func:`graph_from_json`)."""
    path = str(path)
    return graph_from_json(_read_json(path), path, inputs)


# -- shape inference -------------------------------------------------------------

def _as_shape_arg(path: str, name: str, shape) -> tuple:
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
        raise MapspecError(f"{path}: input shape for {name!r} must be a list of sizes such as (1, 3, 112, 112), "
                           f"not {shape!r}")
    out = tuple(shape)
    if len(out) > MAX_NDIM or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in out):
        raise MapspecError(f"{path}: input shape {out!r} for {name!r} must be at most {MAX_NDIM} "
                           f"non-negative integers")
    return out


def default_input_shapes(graph: Graph) -> dict:
    """Input shapes recorded in the symbol itself (``__shape__`` attributes of input variables)."""
    out = {}
    for name in graph.input_names:
        raw = graph.nodes[graph.by_name[name]].raw.get("__shape__")
        if raw is not None:
            try:
                shape = _as_shape(raw)
            except _BadValue:
                continue
            if shape and all(d > 0 for d in shape):
                out[name] = shape
    return out


def resolve_input_shapes(graph: Graph, input_shape=None, input_shapes=None) -> dict:
    """``input_shapes`` from the options (``input_shape`` names the single data input)."""
    shapes = dict(default_input_shapes(graph))
    if input_shape is not None:
        if len(graph.input_names) != 1:
            raise MapspecError(f"{graph.path}: input_shape is for a symbol with one input, but this one has "
                               f"{len(graph.input_names)} ({', '.join(graph.input_names) or 'none'}); "
                               f"use input_shapes={{name: shape}}")
        shapes[graph.input_names[0]] = _as_shape_arg(graph.path, graph.input_names[0], input_shape)
    for name, shape in shapes_option(graph.path, input_shapes).items():
        if graph.by_name.get(name) is None or graph.nodes[graph.by_name[name]].op != "null":
            raise MapspecError(f"{graph.path}: input_shapes names {name!r}, which is not a variable of this "
                               f"symbol (inputs: {', '.join(graph.input_names) or 'none'})")
        shapes[name] = _as_shape_arg(graph.path, name, shape)
    return shapes


def infer_node_shapes(graph: Graph, input_shapes: Mapping[str, Sequence[int]]) -> tuple:
    """(variable shapes by name, output shapes per node index) for the given input shapes."""
    path = graph.path
    var: dict[str, tuple] = {}
    for name, shape in input_shapes.items():
        var[name] = _as_shape_arg(path, name, shape)
    for name in graph.param_names + graph.aux_names + graph.label_names:
        raw = graph.nodes[graph.by_name[name]].raw.get("__shape__")
        if raw is not None and name not in var:
            try:
                shape = _as_shape(raw)
            except _BadValue:
                shape = ()
            if shape and all(d > 0 for d in shape):
                var[name] = shape
    outs: list[Optional[list]] = [None] * len(graph.nodes)
    needed = set(_dfs_order(graph.nodes, graph.heads))
    for node in graph.nodes:
        if node.index not in needed:
            continue
        if node.op == "null":
            outs[node.index] = [var.get(node.name)]
            continue
        spec = OPS.get(node.op)
        where = f"node {node.name!r} ({node.op})"
        if spec is None:
            raise FormatError(path, f"{where}: mapspec has no shape rule for op {node.op!r}; supported ops: "
                              f"{', '.join(sorted(OPS))}")
        ins = [outs[src][k] if k < len(outs[src]) else None for src, k in node.inputs]
        for (src, _), shape in zip(node.inputs, ins):
            if shape is None and graph.nodes[src].op == "null" and graph.nodes[src].name in graph.input_names:
                raise FormatError(path, f"the shape of input {graph.nodes[src].name!r} is needed: open the symbol "
                                  f"with input_shape=(N, C, H, W) (e.g. (1, 3, 112, 112)) or "
                                  f"input_shapes={{{graph.nodes[src].name!r}: ...}}")
        try:
            want_in, got_out = spec.infer(node.attrs, ins)
        except _ShapeError as e:
            raise FormatError(path, f"{where}: {e}") from None
        for (src, k), have, want in zip(node.inputs, ins, want_in):
            want = tuple(want)
            if have is None:
                src_node = graph.nodes[src]
                if src_node.op != "null":
                    raise FormatError(path, f"{where}: the shape of input {src_node.name!r} is unknown")
                var[src_node.name] = want
                outs[src][k] = want
            elif tuple(have) != want:
                raise FormatError(path, f"{where}: input {graph.nodes[src].name!r} has shape {tuple(have)} but "
                                  f"{node.op} with these attributes needs {want}")
        full = list(got_out)
        for shape in full:
            if any(d < 0 for d in shape):
                raise FormatError(path, f"{where}: negative size in inferred shape {shape}")
        outs[node.index] = [tuple(s) for s in full]
    return var, outs


def infer_shapes(graph: Graph, input_shapes: Mapping[str, Sequence[int]]) -> dict:
    """``{variable or output name: shape}`` for every variable and op output reachable from the heads.

    Op outputs use MXNet's names (``conv1_output``, ``bn_mean``), as ``get_internals`` does.
    """
    var, outs = infer_node_shapes(graph, input_shapes)
    result: dict[str, tuple] = {}
    for node in graph.nodes:
        if outs[node.index] is None:
            continue
        if node.op == "null":
            if node.name in var:
                result[node.name] = var[node.name]
            continue
        for name, shape in zip(graph.output_names(node.index), outs[node.index]):
            result[name] = shape
    return result


# -- the template reader ---------------------------------------------------------

class SymbolReader(Reader):
    """A ``-symbol.json`` as a template: parameter names, shapes (given an input shape), attributes.

    Options: ``input_shape`` (the single data input's shape) or ``input_shapes``
    (``{input name: shape}``).  Tensors are listed in graph order, auxiliary states
    beside their op; ``meta`` holds ``prefix`` ("arg"/"aux"), ``op``, ``node`` (the
    consuming op node) and ``role`` (``weight``, ``gamma``, ``moving_var``, ...).
    """

    format = NAME
    has_data = False

    def __init__(self, path: str, input_shape=None, input_shapes=None, graph: Optional[Graph] = None,
                 inputs: Optional[Sequence[str]] = None):
        super().__init__(path)
        self.graph = graph if graph is not None else load_symbol(path, inputs)
        self.input_shapes = resolve_input_shapes(self.graph, input_shape, input_shapes)
        self._names = self._param_order()
        self._ready = False

    def _param_order(self) -> list[str]:
        wanted = set(self.graph.param_names) | set(self.graph.aux_names)
        out = []
        for idx in _dfs_order(self.graph.nodes, self.graph.heads):
            node = self.graph.nodes[idx]
            if node.op == "null" and node.name in wanted:
                out.append(node.name)
        return out

    def param_names(self) -> list[str]:
        """Names of all parameters (arg and aux), no shapes needed."""
        return list(self._names)

    def prefix(self, name: str) -> str:
        return "aux" if name in self.graph.aux_names else "arg"

    def _meta(self, name: str) -> dict:
        role, consumer = self.graph.roles.get(name, (None, None))
        node = self.graph.nodes[consumer] if consumer is not None else None
        return {"prefix": self.prefix(name), "op": node.op if node else None, "node": node.name if node else None,
                "role": role}

    def infos(self) -> dict:
        if not self._ready:
            missing = [n for n in self.graph.input_names if n not in self.input_shapes]
            if missing:
                raise FormatError(self.path, f"parameter shapes depend on the input shape: open the symbol with "
                                  f"input_shape=(N, C, H, W) such as (1, 3, 112, 112) (or input_shapes="
                                  f"{{{missing[0]!r}: ...}}); param_names() lists the names without shapes")
            var, _ = infer_node_shapes(self.graph, self.input_shapes)
            for name in self._names:
                if name not in var:
                    raise FormatError(self.path, f"cannot infer the shape of parameter {name!r}", tensor=name)
                self._infos[name] = TensorInfo(name, var[name], None, self._meta(name))
            self._ready = True
        return self._infos

    def names(self) -> list[str]:
        return list(self._names)

    def info(self, name: str) -> TensorInfo:
        if name not in self._names:
            raise FormatError(self.path, "no such parameter in this symbol", tensor=name)
        return self.infos()[name]

    def __contains__(self, name: str) -> bool:
        return name in self._names

    def __len__(self) -> int:
        return len(self._names)

    def attrs(self, node: str) -> dict:
        n = self.graph.node(node)
        return {"op": n.op, **n.attrs}

    def nodes(self) -> list[str]:
        return [n.name for n in self.graph.nodes if n.op != "null"]


def sniff(path: str, head: bytes) -> bool:
    h = head.lstrip()
    return h[:1] == b"{" and (b'"nodes"' in h or str(path).lower().endswith("-symbol.json"))


# Options a user may give (spec source/target options; --source-option, --template-option, --target-option, inspect --option); anything else is an error.
READ_OPTIONS = ("input_shape", "input_shapes", "inputs")
WRITE_OPTIONS = ()


def open(path: str, input_shape=None, input_shapes=None, inputs=None, **options) -> SymbolReader:  # noqa: A001
    return SymbolReader(path, input_shape=input_shape, input_shapes=input_shapes, inputs=inputs)


def create(path: str, infos, **options):
    raise MapspecError(f"{path}: an MXNet -symbol.json describes parameters but cannot hold them; "
                       f"write the weights as .params (format mxnet)")


def save(path: str, tensors, **options) -> None:
    create(path, [])
