"""The verify runners a spec may name: the module of each, what it runs and what it needs (data).

It lives in the spec layer so that checking a spec's ``verify:`` names needs no import of
:mod:`mapspec.verify` (which stands above the spec loader); :mod:`mapspec.verify.runners` runs them and
:mod:`mapspec.verify.runners.choice` picks one for a side from these declarations alone.
Modules are imported on first use, so naming a runner never imports torch, keras or transformers.
"""

from __future__ import annotations

from typing import NamedTuple

from ..registry import LazyTable


class RunnerEntry(NamedTuple):
    module: str
    runs: str                   # what it runs, in words ("SIDE" stands for source/target)
    needs: tuple = ()           # the optional packages it imports (checked before it is built)
    formats: tuple = ()         # weights formats it runs when nothing else says how
    with_graph: bool = False    # ... only with a graph (--SIDE-graph)
    beside: str = ""            # a file in the weights' folder that says this runner
    flag: str = ""              # the command-line option (--SIDE-FLAG) that picks it when the spec does not
    over_spec: bool = False     # ... even when the spec's verify.SIDE.run names another


RUNNERS = LazyTable("runner", {
    "caffe": RunnerEntry("mapspec.verify.runners.caffe", "a Caffe .caffemodel with its .prototxt (--SIDE-graph)",
                         needs=("torch",), formats=("caffe",), with_graph=True),
    "mxnet": RunnerEntry("mapspec.verify.runners.mxnet", "an MXNet .params (its -symbol.json beside it or "
                                                         "--SIDE-graph)", needs=("torch",), formats=("mxnet",)),
    "torch": RunnerEntry("mapspec.verify.runners.torch", "a torch model from a factory (verify.SIDE.model or "
                                                         "--SIDE-model)", needs=("torch",)),
    "keras": RunnerEntry("mapspec.verify.runners.keras", "a Keras model from a factory (verify.SIDE.model or "
                                                         "--SIDE-model)", needs=("keras",)),
    "transformers": RunnerEntry("mapspec.verify.runners.transformers",
                                "a transformers model: --SIDE-config, or a config.json beside the weights",
                                needs=("torch", "transformers"), beside="config.json", flag="config", over_spec=True),
    "onnx": RunnerEntry("mapspec.verify.runners.onnx", "an .onnx model", needs=("onnx", "onnxruntime"),
                        formats=("onnx",)),
    # torch or keras, whichever the factory returns
    "model": RunnerEntry("mapspec.verify.runners.model", "whatever a model factory returns (--SIDE-model)",
                         flag="model"),
})
