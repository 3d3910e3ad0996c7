"""Which runner verify uses for a side: chosen from the runner registry's declarations alone
(mapspec/verify/runners/choice.py), through the function verify builds its sides with."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from mapspec.errors import MapspecError
from mapspec.language.runners import RUNNERS
from mapspec.verify.core import _side

ROOT = Path(__file__).resolve().parents[2]


def kind(tmp_path, weights, fmt=None, cfg=None, graph=None, model=None, config=None, side="source"):
    spec = SimpleNamespace(spec_dir=str(tmp_path))
    return _side(side, cfg, spec, str(tmp_path / weights), fmt, graph, model, config, {}).kind


@pytest.fixture
def files(tmp_path):
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    (hf / "model.safetensors").write_bytes(b"")
    for name in ("m.onnx", "net.caffemodel", "net.prototxt", "m.params", "w.safetensors", "w.pt"):
        (tmp_path / name).write_bytes(b"")
    return tmp_path


@pytest.mark.parametrize("weights,fmt,options,want", [
    ("hf/model.safetensors", "safetensors", {}, "transformers"),          # a config.json beside the weights
    ("hf", "sharded", {}, "transformers"),                                 # the folder itself
    ("w.safetensors", "safetensors", {"config": "c.json"}, "transformers"),
    ("m.onnx", "onnx", {}, "onnx"),
    ("m.onnx", None, {}, "onnx"),                                          # the suffix says onnx
    ("net.caffemodel", "caffe", {"graph": "net.prototxt"}, "caffe"),
    ("net.caffemodel", "caffemodel", {"graph": "net.prototxt"}, "caffe"),  # a format alias
    ("m.params", "mxnet", {}, "mxnet"),
    ("w.pt", "torch", {"model": "f.py:make"}, "model"),
    ("hf/model.safetensors", "safetensors", {"model": "f.py:make"}, "model"),   # the option beats the file
    ("w.pt", "torch", {"model": "f.py:make", "cfg": {"run": "torch"}}, "torch"),  # a factory for the spec's run
    ("w.pt", "torch", {"cfg": {"run": "keras"}}, "keras"),
    ("m.onnx", "onnx", {"config": "c.json", "cfg": {"run": "onnx"}}, "transformers"),  # --SIDE-config over run
    ("m.onnx", "onnx", {"config": "c.json", "model": "f.py:make"}, "transformers"),
])
def test_each_kind_of_side_gets_its_runner(files, weights, fmt, options, want):
    assert kind(files, weights, fmt, **options) == want


def test_two_runners_accepting_a_side_is_an_error_naming_both_and_the_key_that_picks(files):
    (files / "hf" / "model.onnx").write_bytes(b"")
    with pytest.raises(MapspecError) as e:
        kind(files, "hf/model.onnx", "onnx", side="target")
    assert str(e.value) == ("the target could run as transformers (a config.json lies beside the weights) or as "
                            "onnx (the weights are onnx): name one with verify.target.run in the spec "
                            "(--target-config picks transformers)")
    assert kind(files, "hf/model.onnx", "onnx", cfg={"run": "onnx"}) == "onnx"


@pytest.mark.parametrize("weights,fmt,options", [
    ("w.safetensors", "safetensors", {}),
    ("net.caffemodel", "caffe", {}),          # a caffemodel runs only with its graph
    ("w.pt", None, {}),
])
def test_no_runner_accepting_a_side_lists_what_each_runs(files, weights, fmt, options):
    with pytest.raises(MapspecError) as e:
        kind(files, weights, fmt, **options)
    message = str(e.value)
    assert "nothing says how to run the source" in message and "\n" not in message
    for name, entry in RUNNERS.items():
        assert f"{name}: {entry.runs.replace('SIDE', 'source')}" in message
    assert "caffe: a Caffe .caffemodel with its .prototxt (--source-graph)" in message


def test_verify_core_hard_codes_no_runner_or_marker_file():
    text = (ROOT / "mapspec" / "verify" / "core.py").read_text()
    names = [n for n in RUNNERS if n != "model"]  # "model" is also a side's key (its factory)
    found = [w for w in (*names, "config.json", "prototxt", "symbol.json")
             if re.search(rf"[\"']{re.escape(w)}[\"']|{re.escape(w)}\b(?=[\"'])", text)]
    assert found == []
