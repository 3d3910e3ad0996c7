"""MXNet symbol graphs (``PREFIX-symbol.json``): parsing, variable roles and shape inference.

A symbol file is JSON::

    {"nodes": [{"op": "null" | "<Op>", "name": str, "attrs": {str: str}, "inputs": [[node, output, version]]}],
     "arg_nodes": [...], "node_row_ptr": [...], "heads": [[node, output, version]],
     "attrs": {"mxnet_version": ["int", 10201]}}

Variables are ``"op": "null"`` nodes; parameters are the variables an operator
consumes at a weight-like slot (a Convolution's ``weight``/``bias``, a BatchNorm's
``gamma``/``beta`` and the auxiliary states ``moving_mean``/``moving_var``).
Operator attributes are strings under ``attrs`` (MXNet >= 0.12) or ``param`` and ``attr``
(older files); all three are read and typed by :func:`mapspec.frameworks.mxnet.ops.typed_attrs`.

:func:`load_symbol` (path -> :class:`Graph`), :func:`graph_from_json`, :func:`infer_shapes`
(graph, input shapes -> ``{variable or output name: shape}``), :func:`infer_node_shapes`
and :func:`resolve_input_shapes` (an input shape given by the user, or recorded in the
symbol's ``__shape__`` attributes).
"""

from __future__ import annotations

import builtins
import difflib
import json
import os
from typing import Mapping, NamedTuple, Optional, Sequence

from ...errors import FormatError, MapspecError
from ...files import check_regular
from .attrs import MAX_INT_CHARS, MAX_NDIM, BadValue, as_shape, parse_literal
from .ops import (AUX_ROLES, LABEL_ROLES, OPS, PARAM_HINTS, PARAM_ROLES, PARAM_SUFFIXES, ShapeError, outputs_of,
                  slots_of, typed_attrs)

MAX_JSON_BYTES = 512 << 20  # a symbol file is a few MB at most; refuse to parse absurd files

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
    check_regular(path)  # a FIFO would block forever
    try:
        size = os.path.getsize(path)
        if size > MAX_JSON_BYTES:
            raise FormatError(path, f"file has {size} bytes; a symbol file over {MAX_JSON_BYTES} bytes is refused")
        with builtins.open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise FormatError(path, f"cannot read: {e.strerror}") from None
    def bounded_int(text: str) -> int:  # int() of 4300 digits is Python's traceback
        if len(text) > MAX_INT_CHARS:
            raise FormatError(path, f"an integer of {len(text)} digits; a symbol file's are far shorter")
        return int(text)

    try:
        return json.loads(raw.decode("utf-8"), parse_int=bounded_int)
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
        except BadValue as e:
            raise _fail(path, f"{where}: {e}") from None
        spec = OPS.get(op)
        if spec is not None:
            try:
                want = slots_of(spec, attrs)
            except BadValue as e:
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


def dfs_order(nodes: tuple, heads: tuple) -> list[int]:
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
    order = dfs_order(nodes, heads)
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
                shape = as_shape(raw)
            except BadValue:
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
    for name, shape in (input_shapes or {}).items():
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
                shape = as_shape(raw)
            except BadValue:
                shape = ()
            if shape and all(d > 0 for d in shape):
                var[name] = shape
    outs: list[Optional[list]] = [None] * len(graph.nodes)
    needed = set(dfs_order(graph.nodes, graph.heads))
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
        except ShapeError as e:
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


__all__ = ["Graph", "Node", "graph_from_json", "load_symbol", "dfs_order", "default_input_shapes",
           "resolve_input_shapes", "infer_node_shapes", "infer_shapes"]
