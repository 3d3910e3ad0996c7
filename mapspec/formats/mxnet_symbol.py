"""MXNet symbol graphs (``PREFIX-symbol.json``) as a format: a template of the parameters a ``.params`` holds.

Parameter shapes depend on the input shape (a convolution's weight needs the
input channel count), so a template needs ``input_shape=(1, 3, 112, 112)`` (the
single data input) or ``input_shapes={"data": (...)}``; a ``__shape__`` attribute
on an input variable, which some exporters write, is used when neither is given.
Without any of these, ``infos()`` raises a :class:`FormatError` that says so;
``param_names()`` lists the parameters without shapes.  ``inputs=[...]`` names the data
inputs explicitly.

What a symbol is (parsing, variable roles, shape inference) lives in
:mod:`mapspec.frameworks.mxnet.graph`; the ops, their typed attributes and MXNet's defaults
in :mod:`mapspec.frameworks.mxnet.ops`.
"""

from __future__ import annotations

from typing import Optional, Sequence

from ..errors import FormatError, MapspecError
from ..frameworks.mxnet.graph import Graph, dfs_order, infer_node_shapes, load_symbol, resolve_input_shapes
from .base import Reader, TensorInfo, shapes_option

NAME = "mxnet-symbol"


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
        self.input_shapes = resolve_input_shapes(self.graph, input_shape, shapes_option(path, input_shapes))
        self._names = self._param_order()
        self._ready = False

    def _param_order(self) -> list[str]:
        wanted = set(self.graph.param_names) | set(self.graph.aux_names)
        out = []
        for idx in dfs_order(self.graph.nodes, self.graph.heads):
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
