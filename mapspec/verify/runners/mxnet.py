"""Runs an MXNet symbol (-symbol.json + .params) with mapspec's MXNet executor.

The graph defaults to the ``-symbol.json`` beside the ``.params`` (as the MXNet reader finds it).
"""

from __future__ import annotations

from ...formats import open_checkpoint
from ...frameworks.mxnet.ops import param_base_name
from .base import Side
from .executor import ExecutorRunner, open_weights


class MXNetRunner(ExecutorRunner):
    def layer_of(self, tensor: str) -> str:
        return param_base_name(tensor)


def build(side: Side) -> MXNetRunner:
    from ...frameworks.mxnet.executor import MXNetExecutor

    if not side.graph:
        with open_checkpoint(side.weights, format=side.weights_format) as r:
            finder = getattr(r, "symbol_path", None)
            side.graph = finder() if finder else None
    reader = open_weights(side, "-symbol.json")
    return MXNetRunner("mxnet", MXNetExecutor(side.graph, reader), side.input, side.output)
