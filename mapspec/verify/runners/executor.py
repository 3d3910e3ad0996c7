"""A runner over one of mapspec's reference executors (Caffe, MXNet): shared by their runner modules."""

from __future__ import annotations

from collections import OrderedDict
from typing import Optional

import numpy as np

from ...errors import MapspecError
from ...formats import open_checkpoint
from .base import Runner, Side


class ExecutorRunner(Runner):
    def __init__(self, kind: str, executor, input_name: Optional[str], output: Optional[str]):
        self.kind = kind
        self.ex = executor
        names = list(executor.input_shapes) if executor.input_shapes else []
        self.input_name = input_name or (names[0] if names else "data")
        self.output = output

    def run(self, x, capture=False):
        outs = [self.output] if self.output else None
        res = self.ex.run({self.input_name: self.prepare(x)}, outputs=outs, capture=capture)
        key = self.output or self.ex.output_names[-1]
        if key not in res:
            raise MapspecError(f"the {self.kind} model has no output {key!r}; outputs: "
                               f"{', '.join(self.ex.output_names)}")
        acts = OrderedDict((k, v) for k, v in res.items()) if capture else OrderedDict()
        return OrderedDict([(key, np.asarray(res[key]))]), acts

    def alternatives(self, layer: str) -> list:
        followers = getattr(self.ex, "in_place_followers", None)
        return list(followers(layer)) if followers else []

    def inputs_of(self, layer: str):
        producers = getattr(self.ex, "producers", None)
        try:
            return list(producers(layer)) if producers else None
        except MapspecError:
            return None

    def input_shape(self):
        shapes = self.ex.input_shapes or {}
        return tuple(shapes.get(self.input_name) or next(iter(shapes.values()), ())) or None


def open_weights(side: Side, graph_suffix: str):
    if not side.graph:
        raise MapspecError(f"the {side.kind} {side.name} needs its graph file (a {graph_suffix}): pass it with "
                           f"{side.flag}-graph")
    return open_checkpoint(side.weights, format=side.weights_format)
