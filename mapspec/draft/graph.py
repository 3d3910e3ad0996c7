"""The data flow between layers, where a file says it: a Caffe net's bottoms and tops, an MXNet symbol's inputs.

The draft may let order decide between two layers of the same shape only where the graph orders them
(one feeds the other, possibly through others): two parallel branches (a two-tower net, a ResNet
block's shortcut beside its last convolution) are listed in some order that says nothing about
which is which.  :class:`Topology` answers, for the layers of a file: does one reach the other,
and which layers with weights feed a layer directly (through layers without weights).  A file
without a graph (a torch, safetensors, npz or Keras weights file) has none: ``topology`` is None.
"""

from __future__ import annotations

from typing import Optional


class Topology:
    def __init__(self, edges: list):
        """``edges``: ``[(layer, [input layers])]`` in topological order."""
        self.index = {name: k for k, (name, _) in enumerate(edges)}
        self.reach: dict[str, int] = {}  # layer -> bit mask of the layers it reads from, itself included
        for name, inputs in edges:
            mask = 1 << self.index[name]
            for i in inputs:
                mask |= self.reach.get(i, 0)
            self.reach[name] = mask
        self.inputs = dict(edges)

    def ordered(self, a: str, b: str) -> bool:
        """Whether the graph says which of two layers comes first (one reads, through others, the other's
        output).  Unknown layers: no."""
        if a not in self.index or b not in self.index or a == b:
            return False
        return bool(self.reach[a] >> self.index[b] & 1 or self.reach[b] >> self.index[a] & 1)

    def feeders(self, name: str, units: set) -> frozenset:
        """The layers among ``units`` whose output reaches ``name`` through layers that are not in ``units``."""
        out, seen, stack = set(), set(), list(self.inputs.get(name, ()))
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            if n in units:
                out.add(n)
            else:
                stack += self.inputs.get(n, ())
        return frozenset(out)


def topology(reader) -> Optional[Topology]:
    fmt = reader.format
    if fmt in ("caffe", "prototxt"):
        return _caffe(reader)
    if fmt == "mxnet-symbol":
        return _mxnet(reader.graph)
    if fmt == "mxnet":
        graph = reader.symbol
        return None if graph is None else _mxnet(graph)
    return None


def _caffe(reader) -> Optional[Topology]:
    producer: dict[str, str] = {}  # blob -> the layer that wrote it last (in-place layers rewrite it)
    edges = []
    for layer in reader.nodes():
        a = reader.attrs(layer)
        if not a:
            return None
        edges.append((layer, [producer[b] for b in a.get("bottom", ()) if b in producer]))
        for t in a.get("top", ()):
            producer[t] = layer
    return Topology(edges)


def _mxnet(graph) -> Topology:
    nodes = graph.nodes
    edges = [(n.name, [nodes[i].name for i, _ in n.inputs if nodes[i].op != "null"]) for n in nodes
             if n.op != "null"]
    return Topology(edges)
