"""The verify runners a spec may name, and the module that implements each: data.

It lives in the spec layer so that checking a spec's ``verify:`` names needs no import of
:mod:`mapspec.verify` (which stands above the spec loader); :mod:`mapspec.verify.runners` runs them.
Modules are imported on first use, so naming a runner never imports torch, keras or transformers.
"""

RUNNERS: dict[str, str] = {
    "caffe": "mapspec.verify.runners.caffe",
    "mxnet": "mapspec.verify.runners.mxnet",
    "torch": "mapspec.verify.runners.torch",
    "keras": "mapspec.verify.runners.keras",
    "transformers": "mapspec.verify.runners.transformers",
    "onnx": "mapspec.verify.runners.onnx",
    "model": "mapspec.verify.runners.model",   # torch or keras, whichever the factory returns
}
