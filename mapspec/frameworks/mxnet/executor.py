"""Run an MXNet symbol with torch (float32, CPU), no MXNet needed: a reference for ``verify``.

``MXNetExecutor(symbol, weights, input_shapes=None)``: ``symbol`` is a ``-symbol.json``
path or a loaded :class:`~mapspec.frameworks.mxnet.graph.Graph`; ``weights`` a
:class:`~mapspec.formats.base.Reader` (e.g. the ``.params`` reader) or a ``{name: array}``
mapping, names without ``arg:``/``aux:`` (a mapping's prefixed keys are stripped).

Semantics are MXNet's at inference (``is_train=False``): BatchNorm uses the moving
statistics (and gamma = 1 under ``fix_gamma``), Dropout is the identity, SoftmaxOutput
is a softmax and ignores its label.  Each op is one pure kernel in
:mod:`mapspec.frameworks.mxnet.exec_ops`; the table ``KERNELS`` maps op names to them.

``run(inputs, outputs=None, capture=False)`` returns numpy arrays keyed by node name
(an op's first output; further visible outputs by MXNet's output name, e.g.
``bn_mean``); ``outputs`` may name nodes or MXNet output names (``fc1_output``).  The
default outputs are the symbol's heads.  With ``capture``, every op node's output is
returned too, in execution order.  Parameter shapes are checked against the shapes
MXNet's rules infer from the actual input shapes before anything runs.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from ...errors import ConversionError, MapspecError
from .graph import Graph, infer_node_shapes, load_symbol, resolve_input_shapes
from .ops import ShapeError
from ..executor_base import Executor, feed, tensor_source

try:
    import torch
except ImportError:  # pragma: no cover - torch is an optional dependency
    torch = None

if torch is not None:
    from .exec_ops import KERNELS, Unsupported
else:  # pragma: no cover
    KERNELS, Unsupported = {}, Exception


def _strip(name: str) -> str:
    head, sep, rest = name.partition(":")
    return rest if sep and head in ("arg", "aux") else name


class MXNetExecutor(Executor):
    """An MXNet symbol with its weights, runnable with torch."""

    framework = "mxnet"

    def __init__(self, symbol, weights, input_shapes: Optional[Mapping[str, Sequence[int]]] = None):
        super().__init__()
        if torch is None:  # pragma: no cover
            raise MapspecError("the MXNet reference executor needs torch: pip install torch")
        self.graph: Graph = symbol if isinstance(symbol, Graph) else load_symbol(symbol)
        g = self.graph
        self._order = self._needed(tuple(g.heads))
        bad = sorted({g.nodes[i].op for i in self._order if g.nodes[i].op != "null" and g.nodes[i].op not in KERNELS})
        if bad:
            where = [g.nodes[i].name for i in self._order if g.nodes[i].op in bad][:5]
            raise MapspecError(f"{g.path}: the MXNet executor cannot run op(s) {', '.join(bad)} (nodes "
                               f"{', '.join(where)}); supported: {', '.join(sorted(KERNELS))}")
        self.params = self._load_weights(weights)
        self.input_shapes = resolve_input_shapes(g, None, input_shapes)
        self.output_names = [self._key(n, k) for n, k in g.heads]
        self._checked: set = set()
        if all(n in self.input_shapes for n in g.input_names):
            self._check_shapes(self.input_shapes)

    # -- set-up --------------------------------------------------------------
    def _load_weights(self, weights) -> dict:
        g = self.graph
        wanted = list(g.param_names) + list(g.aux_names)
        if isinstance(weights, Mapping):  # a mapping may still carry arg:/aux: prefixes
            stripped = {_strip(k): v for k, v in weights.items()}
            have = set(stripped)
            get = stripped.__getitem__
        elif (source := tensor_source(weights)) is not None:
            have, get = set(source[0]), source[1]
        else:
            raise MapspecError(f"weights must be a reader or a {{name: array}} mapping, not {type(weights).__name__}")
        missing = [n for n in wanted if n not in have]
        if missing:
            more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
            raise ConversionError(f"the weights lack {len(missing)} parameter(s) of {g.path}: "
                                  f"{', '.join(missing[:8])}{more}")
        out = {}
        for name in wanted:
            arr = np.asarray(get(name))
            out[name] = torch.from_numpy(np.array(arr, dtype=np.float32, copy=True))
        return out

    def _key(self, node: int, out: int) -> str:
        return self.graph.nodes[node].name if out == 0 else self.graph.output_names(node)[out]

    def _needed(self, targets: tuple) -> list[int]:
        """Indices of the nodes the targets depend on, in graph (topological) order."""
        seen = set()
        stack = [n for n, _ in targets]
        while stack:
            i = stack.pop()
            if i in seen:
                continue
            seen.add(i)
            stack.extend(src for src, _ in self.graph.nodes[i].inputs)
        return sorted(seen)

    def _check_shapes(self, shapes: Mapping[str, tuple]) -> None:
        key = tuple(sorted((k, tuple(v)) for k, v in shapes.items()))
        if key in self._checked:
            return
        var, _ = infer_node_shapes(self.graph, shapes)
        for name, t in self.params.items():
            want = var.get(name)
            if want is not None and tuple(t.shape) != tuple(want):
                raise ConversionError(f"has shape {tuple(t.shape)} but {self.graph.path} needs {tuple(want)} "
                                      f"for inputs {dict(shapes)}", tensor=name)
        self._checked.add(key)

    def _resolve(self, name: str) -> tuple:
        """(node index, output index) of a node name or an MXNet output name."""
        g = self.graph
        idx = g.by_name.get(name)
        if idx is not None and g.nodes[idx].op != "null":
            return idx, 0
        for i in self._order:
            if g.nodes[i].op == "null":
                continue
            names = g.output_names(i)
            if name in names:
                return i, names.index(name)
        raise MapspecError(f"{g.path}: no op node or output named {name!r}")

    # -- running ---------------------------------------------------------------
    def run(self, inputs: Mapping[str, np.ndarray], outputs: Optional[Sequence[str]] = None,
            capture: bool = False) -> dict:
        g = self.graph
        unknown = [k for k in inputs if k not in g.input_names and k not in g.label_names]
        if unknown:
            raise MapspecError(f"{g.path}: {', '.join(map(repr, unknown))} is not an input of this symbol "
                               f"(inputs: {', '.join(g.input_names)})")
        targets = [self._resolve(n) for n in outputs] if outputs is not None else list(g.heads)
        order = self._order if capture else self._needed(tuple(targets))
        needed_inputs = [n for n in g.input_names if g.by_name[n] in set(order)]
        values = feed(g.path, inputs, needed_inputs, g.input_names)
        self._check_shapes({n: tuple(values[n].shape) for n in needed_inputs})
        # Free each intermediate after its last consumer unless it is kept.
        keep = {i for i, _ in targets}
        uses: dict[int, int] = {}
        for i in order:
            for src, _ in g.nodes[i].inputs:
                uses[src] = uses.get(src, 0) + 1
        results: dict = {}
        outs: dict[int, tuple] = {}
        with torch.no_grad():
            for i in order:
                node = g.nodes[i]
                if node.op == "null":
                    outs[i] = (values[node.name] if node.name in values else self.params.get(node.name),)
                    continue
                args = []
                for j, (src, k) in enumerate(node.inputs):
                    produced = outs[src]
                    if g.nodes[src].name in g.label_names:
                        args.append(None)  # labels do not matter at inference
                        continue
                    if k >= len(produced) or produced[k] is None:
                        raise MapspecError(f"{g.path}: node {node.name!r} ({node.op}) uses output {k} of "
                                           f"{g.nodes[src].name!r}, which the executor does not compute")
                    args.append(produced[k])
                outs[i] = self._call(node, args)
                if capture:
                    for k, t in enumerate(outs[i]):
                        results[self._key(i, k)] = t.numpy()
                for src, _ in node.inputs:
                    uses[src] -= 1
                    if uses[src] == 0 and src not in keep and g.nodes[src].op != "null":
                        outs[src] = tuple(None for _ in outs[src])
        for (i, k), name in zip(targets, outputs if outputs is not None else self.output_names):
            if k >= len(outs[i]) or outs[i][k] is None:
                if outputs is None:
                    continue  # a training-only head (LeakyReLU rrelu's mask): nothing to compare at inference
                raise MapspecError(f"{g.path}: output {name!r} is not computed at inference by the executor")
            results[name] = outs[i][k].numpy()
        return results

    def _call(self, node, args) -> tuple:
        kernel = KERNELS[node.op]
        try:
            out = kernel(node.attrs, *args)
        except Unsupported as e:
            raise MapspecError(f"{self.graph.path}: node {node.name!r}: {e} is not supported by the MXNet "
                               f"executor") from None
        except (ShapeError, RuntimeError, ValueError, IndexError) as e:
            raise MapspecError(f"{self.graph.path}: node {node.name!r} ({node.op}) failed: {e}") from None
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)


__all__ = ["MXNetExecutor", "KERNELS"]
