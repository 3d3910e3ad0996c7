"""The MXNet -symbol.json template reader: parameter names, shapes from an input shape, metadata, registry."""

from __future__ import annotations

import pytest

from conftest import fixture_file

from mapspec.errors import FormatError, MapspecError
from mapspec.formats import open_checkpoint
from mapspec.formats import mxnet_symbol as ms
from mapspec.frameworks.mxnet import graph as mxg

MFN_SYMBOL = "mobilefacenet-mxnet/model_mobilefacenet-symbol.json"


@pytest.fixture(scope="module")
def mfn_graph():
    return mxg.load_symbol(fixture_file(MFN_SYMBOL))


def test_template_needs_input_shape(mfn_graph):
    r = ms.SymbolReader(mfn_graph.path, graph=mfn_graph)
    assert len(r.param_names()) == 284 and "fc1_moving_var" in r and len(r) == 284
    with pytest.raises(FormatError, match=r"input_shape=\(N, C, H, W\)"):
        r.infos()
    r = ms.open(mfn_graph.path, input_shape=[1, 3, 112, 112])
    infos = r.infos()
    assert len(infos) == 284
    assert infos["conv_1_conv2d_weight"].shape == (64, 3, 3, 3)
    assert infos["conv_1_conv2d_weight"].meta == {"prefix": "arg", "op": "Convolution", "node": "conv_1_conv2d",
                                                  "role": "weight"}
    assert infos["fc1_moving_var"].meta["prefix"] == "aux"
    assert infos["pre_fc1_weight"].shape == (128, 512)
    assert r.has_data is False
    with pytest.raises(FormatError, match="holds no values"):
        r.read("fc1_gamma")


def test_template_through_registry():
    path = fixture_file(MFN_SYMBOL)
    r = open_checkpoint(path, input_shape=(1, 3, 112, 112))
    assert r.format == "mxnet-symbol" and len(r.infos()) == 284
    with pytest.raises(MapspecError, match="cannot hold them"):
        ms.create("x-symbol.json", [])


def test_input_shape_recorded_in_symbol():
    sym = {"nodes": [{"op": "null", "name": "data", "attrs": {"__shape__": "(1, 3, 8, 8)"}, "inputs": []},
                     {"op": "null", "name": "fc_weight", "inputs": []},
                     {"op": "FullyConnected", "name": "fc", "attrs": {"num_hidden": "4", "no_bias": "True"},
                      "inputs": [[0, 0, 0], [1, 0, 0]]}], "heads": [[2, 0, 0]]}
    graph = mxg.graph_from_json(sym, "x-symbol.json")
    r = ms.SymbolReader("x-symbol.json", graph=graph)
    assert r.infos()["fc_weight"].shape == (4, 192)
