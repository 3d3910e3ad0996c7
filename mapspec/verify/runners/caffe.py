"""Runs a Caffe net (prototxt + caffemodel) with mapspec's Caffe executor."""

from __future__ import annotations

from .base import Side
from .executor import ExecutorRunner, open_weights


def build(side: Side) -> ExecutorRunner:
    from ...frameworks.caffe.executor import CaffeExecutor

    reader = open_weights(side, ".prototxt")
    return ExecutorRunner("caffe", CaffeExecutor(side.graph, reader), side.input, side.output)
