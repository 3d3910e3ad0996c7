"""The runner contract, over every entry of ``mapspec.verify.runners.RUNNERS``: each runs a tiny model of
its kind built from a :class:`Side` as verify builds it, and returns outputs of the shape the model gives
(known from the model's own definition: a Linear's out features, a Caffe InnerProduct's num_output, a
vocabulary) and, with ``capture``, the activations of its layers.  A runner added without a case here
fails ``test_every_runner_has_a_case``; one whose optional package (the registry's ``needs``) is missing skips
with the reason.  The mxnet runner runs mapspec's own MXNet executor: it needs no MXNet.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from mapspec.formats import open_checkpoint
from mapspec.verify.runners import RUNNERS, Side, make_runner

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "data"
MODELS = HERE / "contract_models.py"
IMAGE = (2, 3, 8, 8)  # the torch/keras/onnx nets take N x 3 x 8 x 8 (NCHW; the keras runner makes it NHWC)


def distinct(shape, start: int) -> np.ndarray:
    n = int(np.prod(shape))
    return ((np.arange(n) + start) % 97 / 97.0 + 0.25).astype(np.float32).reshape(shape)


def _torch_weights(tmp_path) -> Path:
    torch = pytest.importorskip("torch")
    import importlib.util

    spec = importlib.util.spec_from_file_location("contract_models", MODELS)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    net = mod.torch_conv()
    state = {k: torch.from_numpy(distinct(tuple(v.shape), 100 * i)) for i, (k, v) in enumerate(net.state_dict().items())}
    torch.save(state, tmp_path / "w.pt")
    return tmp_path / "w.pt"


def torch_side(tmp_path, kind="torch"):
    return Side("source", kind, str(_torch_weights(tmp_path)), model=f"{MODELS}:torch_conv", model_from_cli=True), \
        distinct(IMAGE, 7), (2, 5)


def keras_side(tmp_path):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    pytest.importorskip("keras")
    import importlib.util

    spec = importlib.util.spec_from_file_location("contract_models_k", MODELS)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    net = mod.keras_conv()
    net.set_weights([distinct(w.shape, 100 * i) for i, w in enumerate(net.get_weights())])
    net.save_weights(str(tmp_path / "w.weights.h5"))
    return Side("source", "keras", str(tmp_path / "w.weights.h5"), model=f"{MODELS}:keras_conv",
                model_from_cli=True), distinct(IMAGE, 7), (2, 5)


def onnx_side(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    torch = pytest.importorskip("torch")
    import importlib.util

    spec = importlib.util.spec_from_file_location("contract_models_o", MODELS)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    net = mod.torch_conv()
    torch.onnx.export(net, (torch.zeros(*IMAGE),), str(tmp_path / "m.onnx"), dynamo=False)
    return Side("source", "onnx", str(tmp_path / "m.onnx")), distinct(IMAGE, 7), (2, 5)


def _template_values(template, path: Path, save, **options) -> Path:
    """Distinct positive values (BatchNorm variances too) for every tensor the template declares."""
    with open_checkpoint(template, **options) as t:
        values = {n: distinct(i.shape, 100 * k) for k, (n, i) in enumerate(t.infos().items())}
    save(values)
    return path


def caffe_side(tmp_path):
    from mapspec.formats import caffe

    proto = DATA / "caffe" / "tiny_net.prototxt"
    path = tmp_path / "w.caffemodel"
    _template_values(proto, path, lambda v: caffe.save(str(path), v, template=str(proto)))
    # the prototxt's input is 2 x 4 x 9 x 9; its "fc" layer is an InnerProduct with num_output 5
    return Side("source", "caffe", str(path), graph=str(proto), output="fc"), distinct((2, 4, 9, 9), 3), (2, 5)


def mxnet_side(tmp_path):
    from mapspec.formats import mxnet

    symbol = DATA / "mxnet" / "legacy-symbol.json"
    path = tmp_path / "w.params"
    _template_values(symbol, path, lambda v: mxnet.save(str(path), v, template=str(symbol)),
                     input_shape=[1, 3, 8, 8])
    # legacy-symbol.json ends in FullyConnected fc0 (num_hidden 10) and a softmax over it
    return Side("source", "mxnet", str(path), graph=str(symbol)), distinct((1, 3, 8, 8), 3), (1, 10)


def transformers_side(tmp_path):
    pytest.importorskip("transformers")
    from llm_fixtures import llama_config, save_model

    save_model(tmp_path / "llm", llama_config(vocab_size=96, num_hidden_layers=1))
    ids = (np.arange(5, dtype=np.int64) * 7 % 96).reshape(1, 5)
    return Side("source", "transformers", str(tmp_path / "llm" / "model.safetensors")), ids, (1, 5, 96)


CASES = {
    "caffe": caffe_side,
    "mxnet": mxnet_side,
    "torch": torch_side,
    "keras": keras_side,
    "transformers": transformers_side,
    "onnx": onnx_side,
    "model": lambda tmp_path: torch_side(tmp_path, "model"),  # a factory returning a torch module
}


def test_every_runner_has_a_case():
    assert set(CASES) == set(RUNNERS), "give each runner a tiny model in CASES"


@pytest.mark.parametrize("kind", list(RUNNERS))
def test_runner_runs_a_tiny_model(tmp_path, kind):
    for package in RUNNERS.entry(kind).needs:  # what the registry says the runner imports
        pytest.importorskip(package, reason=f"the {kind} runner needs the package {package}")
    side, x, shape = CASES[kind](tmp_path)
    runner = make_runner(side)
    outputs, acts = runner.run(x)
    assert len(outputs) == 1 and not acts
    (y,) = outputs.values()
    assert y.shape == shape and np.isfinite(y).all()
    again, acts = runner.run(x, capture=True)
    assert acts, f"the {kind} runner captured no activations"
    assert np.array_equal(next(iter(again.values())), y), f"the {kind} runner is not deterministic"
