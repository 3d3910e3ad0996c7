"""Reference executors: run a legacy framework's graph with torch, no framework needed.

An executor is built from a graph file (a Caffe ``.prototxt``, an MXNet
``-symbol.json``) and weights (a tensor source: anything with ``names()`` and ``read(name)``, as every
:class:`~mapspec.formats.base.Reader` has, or a ``{name: array}`` mapping whose names follow that format's tensor naming:
``layer[k]`` for Caffe, ``op_weight`` style names without ``arg:``/``aux:`` for MXNet).

Each operator lives in its own small function (a pure torch kernel), apart from the
table that maps the framework's op/layer type to it, after the pattern of onnx's
reference evaluator.  ``run`` returns the requested outputs as numpy arrays and,
with ``capture=True``, every intermediate activation by its blob/node name, in
execution order, for layer-by-layer comparison in ``mapspec verify --layers``.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from ..errors import MapspecError


class Executor:
    """Base class: subclasses set ``self.input_shapes`` and implement ``_run``."""

    framework: str = "?"

    def __init__(self):
        self.input_shapes: dict[str, tuple] = {}
        self.output_names: list[str] = []

    def run(self, inputs: Mapping[str, np.ndarray], outputs: Optional[Sequence[str]] = None,
            capture: bool = False) -> dict[str, np.ndarray]:
        """Run the graph on ``inputs`` (name -> array); return outputs (and intermediates when ``capture``)."""
        raise NotImplementedError


def tensor_source(weights):
    """``(names, read)`` of a ``{name: array}`` mapping or a reader-like tensor source (``names()`` and
    ``read(name)``, as every format's reader has: the executors need no import of :mod:`mapspec.formats`),
    else None."""
    if isinstance(weights, Mapping):
        return list(weights), weights.__getitem__
    names, read = getattr(weights, "names", None), getattr(weights, "read", None)
    if callable(names) and callable(read):
        return list(names()), read
    return None


def feed(path: str, inputs: Mapping[str, np.ndarray], needed: Sequence[str], known: Sequence[str]) -> dict:
    """The ``needed`` inputs as float32 torch tensors (copies); a missing one is an error naming the ``known``."""
    import torch

    absent = [n for n in needed if n not in inputs]
    if absent:
        raise MapspecError(f"{path}: input {absent[0]!r} is missing (inputs: {', '.join(known)})")
    return {n: torch.from_numpy(np.array(inputs[n], dtype=np.float32, copy=True)) for n in needed}
