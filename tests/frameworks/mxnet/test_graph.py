"""MXNet graphs: literal parsing, typed attributes, parameter roles, shape inference vs MXNet."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from conftest import fixture_file
from mxnet_oracle import run_json

from mapspec.errors import FormatError, MapspecError
from mapspec.formats import mxnet_symbol as ms
from mapspec.frameworks.mxnet import attrs as mxa
from mapspec.frameworks.mxnet import graph as mxg
from mapspec.frameworks.mxnet import ops as mxo

DATA = Path(__file__).resolve().parents[2] / "data" / "mxnet"
MFN_SYMBOL = "mobilefacenet-mxnet/model_mobilefacenet-symbol.json"


# -- literals and attributes ----------------------------------------------------------

@pytest.mark.parametrize("text, value", [
    ("True", True), ("false", False), ("None", None), ("64", 64), ("-3", -3), ("7L", 7), ("0.001", 0.001),
    ("2e-05", 2e-05), (".5", 0.5), ("(3, 3)", (3, 3)), ("[1,2]", (1, 2)), ("(2L,)", (2,)), ("()", ()),
    ("(1, None)", (1, None)), ("relu", "relu"), ("'avg'", "avg"), ("((1, 2), 3)", "((1, 2), 3)"),
    ("(1,,2)", "(1,,2)"), ("  (1, 2)  ", (1, 2)), ("__import__('os')", "__import__('os')"),
])
def test_parse_literal(text, value):
    got = mxa.parse_literal(text)
    assert got == value and type(got) is type(value)


def test_typed_attrs_fill_mxnet_defaults():
    bn = mxo.typed_attrs("BatchNorm", {})
    assert (bn["eps"], bn["momentum"], bn["fix_gamma"], bn["use_global_stats"], bn["axis"]) == (1e-3, 0.9, True,
                                                                                               False, 1)
    conv = mxo.typed_attrs("Convolution", {"kernel": "(3, 3)", "num_filter": "8"})
    assert (conv["num_group"], conv["no_bias"], conv["stride"], conv["pad"], conv["dilate"]) == (
        1, False, (1, 1), (0, 0), (1, 1))
    assert mxo.typed_attrs("Deconvolution", {"kernel": "(2,2)", "num_filter": "1"})["no_bias"] is True
    fc = mxo.typed_attrs("FullyConnected", {"num_hidden": "10"})
    assert (fc["no_bias"], fc["flatten"]) == (False, True)
    lr = mxo.typed_attrs("LeakyReLU", {})
    assert (lr["act_type"], lr["slope"]) == ("leaky", 0.25)
    pool = mxo.typed_attrs("Pooling", {"kernel": "(2, 2)"})
    assert (pool["pool_type"], pool["pooling_convention"], pool["global_pool"], pool["count_include_pad"]) == (
        "max", "valid", False, None)
    # Undeclared attributes of unknown ops are parsed generically; hidden ones are dropped.
    assert mxo.typed_attrs("MyOp", {"k": "(1, 2)", "__init__": "x"}) == {"k": (1, 2)}


@pytest.mark.parametrize("attrs, message", [
    ({"kernel": "abc", "num_filter": "8"}, "'kernel'='abc' is not a tuple of integers"),
    ({"kernel": "(3, 3)", "num_filter": "8.5"}, "'num_filter'='8.5' is not an integer"),
    ({"kernel": "(3, 3)", "num_filter": "8", "no_bias": "maybe"}, "is not a boolean"),
    ({"kernel": "(3, 3)"}, "'num_filter' is required by Convolution"),
    ({"kernel": "(" + "1," * 40 + ")", "num_filter": "8"}, "at most 32"),
])
def test_bad_attributes_are_format_errors(attrs, message):
    sym = {"nodes": [{"op": "null", "name": "data", "inputs": []},
                     {"op": "null", "name": "w", "inputs": []},
                     {"op": "Convolution", "name": "conv", "attrs": attrs, "inputs": [[0, 0, 0], [1, 0, 0],
                                                                                       [1, 0, 0]]}],
           "heads": [[2, 0, 0]]}
    with pytest.raises(FormatError, match=message):
        mxg.graph_from_json(sym, "bad-symbol.json")


# -- the fixture ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def mfn_graph():
    return mxg.load_symbol(fixture_file(MFN_SYMBOL))


def test_fixture_roles_and_attrs(mfn_graph):
    g = mfn_graph
    assert g.input_names == ("data",) and g.label_names == ()
    assert len(g.param_names) == 184 and len(g.aux_names) == 100
    r = ms.SymbolReader(g.path, graph=g)
    fc1 = r.attrs("fc1")
    assert fc1["op"] == "BatchNorm" and fc1["eps"] == 2e-5 and fc1["fix_gamma"] is True
    bn = r.attrs("conv_1_batchnorm")
    assert bn["eps"] == 1e-3 and bn["fix_gamma"] is False and bn["momentum"] == 0.9
    dw = r.attrs("conv_2_dw_conv2d")
    assert dw["num_group"] == 64 and dw["num_filter"] == 64 and dw["kernel"] == (3, 3) and dw["no_bias"] is True
    assert r.attrs("conv_1_relu")["act_type"] == "prelu"
    assert r.attrs("_minusscalar0") == {"op": "_minus_scalar", "scalar": 127.5, "is_int": True}
    assert r.attrs("_mulscalar0")["scalar"] == 0.0078125
    assert len(r.nodes()) == 147
    with pytest.raises(FormatError, match="did you mean 'fc1'"):
        r.attrs("fc2")


def test_fixture_shapes_match_mxnet(mxnet_python, mfn_graph):
    ref = run_json(mxnet_python, "symbol_shapes.py", mfn_graph.path, json.dumps({"data": [1, 3, 112, 112]}))
    ours = mxg.infer_shapes(mfn_graph, {"data": (1, 3, 112, 112)})
    assert list(mfn_graph.arg_names) == ref["arg_order"]
    assert list(mfn_graph.aux_names) == ref["aux_order"]
    for name, shape in {**ref["args"], **ref["aux"], **ref["internals"]}.items():
        assert ours[name] == tuple(shape), name
    template = ms.open(mfn_graph.path, input_shape=(1, 3, 112, 112)).infos()
    assert {n: i.shape for n, i in template.items()} == {
        n: tuple(s) for n, s in {**ref["args"], **ref["aux"]}.items() if n != "data"}
    assert mfn_graph.head_names() == tuple(ref["outputs"])


@pytest.mark.parametrize("name, shape", [("legacy", [2, 4, 9, 9]), ("legacy", [1, 3, 16, 12]),
                                         ("custom-aux", [2, 4, 9, 9]), ("custom-aux", [3, 4, 5, 6])])
def test_handwritten_shapes_match_mxnet(mxnet_python, name, shape):
    path = DATA / f"{name}-symbol.json"
    ref = run_json(mxnet_python, "symbol_shapes.py", path, json.dumps({"data": shape}))
    graph = mxg.load_symbol(path)
    ours = mxg.infer_shapes(graph, {"data": tuple(shape)})
    assert list(graph.arg_names) == ref["arg_order"] and list(graph.aux_names) == ref["aux_order"]
    assert ours == {k: tuple(v) for k, v in ref["internals"].items()}


def test_legacy_file_reads_param_and_attr():
    g = mxg.load_symbol(DATA / "legacy-symbol.json")
    conv = g.node("conv0")
    assert conv.attrs["kernel"] == (3, 3) and conv.attrs["workspace"] == 512 and conv.attrs["ctx_group"] == "dev1"
    assert g.label_names == ("softmax_label",) and "softmax_label" not in g.param_names
    assert g.nodes[g.by_name["conv0_weight"]].raw["__lr_mult__"] == "1.0"


def test_custom_aux_names_and_hints():
    g = mxg.load_symbol(DATA / "custom-aux-symbol.json")
    assert g.aux_names == ("stats_a", "stats_b")
    assert "branch_scale" in g.param_names  # an element-wise operand, a parameter by its __init__
    # __shape__ on a parameter is used; the input still needs its shape.
    r = ms.open(str(DATA / "custom-aux-symbol.json"))
    with pytest.raises(FormatError, match="input_shape"):
        r.infos()
    # Naming the inputs explicitly decides the roles.
    g2 = mxg.load_symbol(DATA / "custom-aux-symbol.json", inputs=["data", "branch_scale"])
    assert g2.input_names == ("data", "branch_scale") and "branch_scale" not in g2.param_names
    with pytest.raises(MapspecError, match="not an argument"):
        mxg.load_symbol(DATA / "custom-aux-symbol.json", inputs=["nope"])
    with pytest.raises(MapspecError, match="input_shapes"):
        mxg.resolve_input_shapes(g2, input_shape=(1, 4, 9, 9))


@pytest.mark.parametrize("attrs, data, message", [
    ({"kernel": "(3, 3)", "num_filter": "6", "num_group": "4"}, (1, 6, 8, 8), "num_group=4 must divide"),
    ({"kernel": "(9, 9)", "num_filter": "6"}, (1, 6, 4, 4), "larger than the padded input"),
    ({"kernel": "(3, 3)", "num_filter": "6"}, (1, 6, 8), "should have 4 dimensions"),
    ({"kernel": "(3, 3)", "num_filter": "6", "layout": "NHWC"}, (1, 8, 8, 6), "layout 'NHWC' is not supported"),
])
def test_shape_errors_name_the_node(attrs, data, message):
    sym = {"nodes": [{"op": "null", "name": "data", "inputs": []},
                     {"op": "null", "name": "c_weight", "inputs": []},
                     {"op": "null", "name": "c_bias", "inputs": []},
                     {"op": "Convolution", "name": "c", "attrs": attrs, "inputs": [[0, 0, 0], [1, 0, 0], [2, 0, 0]]}],
           "heads": [[3, 0, 0]]}
    graph = mxg.graph_from_json(sym, "x-symbol.json")
    with pytest.raises(FormatError, match=r"node 'c' \(Convolution\): .*" + message):
        mxg.infer_shapes(graph, {"data": data})


@pytest.mark.parametrize("shape_attr, data, expected", [
    # The examples of MXNet's Reshape documentation (an independent source for the special codes).
    ("(4, 0, 2)", (2, 3, 4), (4, 3, 2)), ("(2, 0, 0)", (2, 3, 4), (2, 3, 4)), ("(6, 1, -1)", (2, 3, 4), (6, 1, 4)),
    ("(3, -1, 8)", (2, 3, 4), (3, 1, 8)), ("(-1,)", (2, 3, 4), (24,)), ("(-2,)", (2, 3, 4), (2, 3, 4)),
    ("(2, -2)", (2, 3, 4), (2, 3, 4)), ("(-2, 1, 1)", (2, 3, 4), (2, 3, 4, 1, 1)),
    ("(-3, 4)", (2, 3, 4), (6, 4)), ("(-3, -3)", (2, 3, 4, 5), (6, 20)), ("(0, -3)", (2, 3, 4), (2, 12)),
    ("(-3, -2)", (2, 3, 4), (6, 4)), ("(-4, 1, 2, -2)", (2, 3, 4), (1, 2, 3, 4)),
    ("(2, -4, -1, 3, -2)", (2, 3, 4), (2, 1, 3, 4)), ("(-1, 0)", (10, 5, 4), (40, 5)),
])
def test_reshape_codes(shape_attr, data, expected):
    attrs = mxo.typed_attrs("Reshape", {"shape": shape_attr})
    assert mxo.reshape_target(attrs, data) == expected


@pytest.mark.parametrize("shape_attr, data", [("(-1, -1)", (2, 3)), ("(5, -1)", (2, 3)), ("(7,)", (2, 3)),
                                              ("(-5,)", (2, 3)), ("(-4, 4, -1)", (6,)), ("(0, 0, 0)", (2, 3))])
def test_reshape_errors(shape_attr, data):
    sym = {"nodes": [{"op": "null", "name": "data", "inputs": []},
                     {"op": "Reshape", "name": "r", "attrs": {"shape": shape_attr}, "inputs": [[0, 0, 0]]}],
           "heads": [[1, 0, 0]]}
    with pytest.raises(FormatError, match=r"node 'r' \(Reshape\)"):
        mxg.infer_shapes(mxg.graph_from_json(sym, "r-symbol.json"), {"data": data})


def test_reshape_reverse():
    attrs = mxo.typed_attrs("Reshape", {"shape": "(-1, 0)", "reverse": "True"})
    assert mxo.reshape_target(attrs, (10, 5, 4)) == (50, 4)


# -- hostile input -------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    (b"", "not valid JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"[1, 2]", "no \"nodes\" list"),
    (b'{"nodes": [{"op": 1}]}', "string \"op\" and \"name\""),
    (b'{"nodes": [{"op": "null", "name": "a", "inputs": [[0, 0, 0]]}]}', "does not come before it"),
    (b'{"nodes": [{"op": "null", "name": "a", "inputs": []}, {"op": "Flatten", "name": "f", '
     b'"inputs": [[5, 0, 0]]}], "heads": [[1, 0, 0]]}', "points outside"),
    (b'{"nodes": [{"op": "null", "name": "a", "inputs": []}, {"op": "Flatten", "name": "f", '
     b'"inputs": [[0, 3, 0]]}], "heads": [[1, 0, 0]]}', "output index 3 out of bounds"),
    (b'{"nodes": [{"op": "null", "name": "a", "inputs": []}, {"op": "Flatten", "name": "f", '
     b'"inputs": [[0, 0, 0], [0, 0, 0]]}], "heads": [[1, 0, 0]]}', "has 2 inputs but Flatten"),
    (b'{"nodes": [{"op": "null", "name": "a", "inputs": []}, {"op": "null", "name": "a", "inputs": []},'
     b'{"op": "elemwise_add", "name": "s", "inputs": [[0, 0, 0], [1, 0, 0]]}], "heads": [[2, 0, 0]]}',
     "two variables are named 'a'"),
    (b'{"nodes": [{"op": "null", "name": "a", "attrs": {"k": 5}, "inputs": []}]}', "must map attribute names"),
    (b'{"nodes": [{"op": "null", "name": "a", "inputs": []}, {"op": "Concat", "name": "c", '
     b'"attrs": {"num_args": "1000000000000"}, "inputs": [[0, 0, 0]]}], "heads": [[1, 0, 0]]}', "num_args"),
    (b'{"nodes": [{"op": "null", "name": "a", "inputs": []}, {"op": "Concat", "name": "c", '
     b'"attrs": {"num_args": "2"}, "inputs": [[0, 0, 0]]}], "heads": [[1, 0, 0]]}', "has 1 inputs but Concat"),
    (b'{"nodes": [{"op": "null", "name": "a", "inputs": []}], "heads": []}', "no outputs"),
    (b'{"nodes": [{"op": "null", "name": "a", "inputs": []}], "heads": [[0, 0, 0]], "x": '
     + b"[" * 100000 + b"]" * 100000 + b"}", "nested too deeply"),
])
def test_hostile_json(tmp_path, text, message):
    p = tmp_path / "bad-symbol.json"
    p.write_bytes(text)
    with pytest.raises(FormatError, match=message):
        mxg.load_symbol(p)


def test_mutated_fixture_gives_format_errors_only(tmp_path):
    """Truncations and random character flips of the real symbol: a FormatError or a usable graph."""
    text = fixture_file(MFN_SYMBOL).read_bytes()
    rng = random.Random(7)
    p = tmp_path / "m-symbol.json"
    variants = [text[:n] for n in rng.sample(range(len(text)), 60)]
    for _ in range(300):
        b = bytearray(text)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.choice(b'0123456789-,()[]{}":xTFN \\')
        variants.append(bytes(b))
    ok = 0
    for v in variants:
        p.write_bytes(v)
        try:
            g = mxg.load_symbol(p)
            mxg.infer_shapes(g, {n: (1, 3, 112, 112) for n in g.input_names})
            ok += 1
        except FormatError:
            pass
        except MapspecError as e:  # e.g. a flipped name turning data into an unknown input
            assert "input" in str(e)
    assert ok > 0  # some flips land in harmless places (names, numbers that still fit)


def test_pooled_size_conventions_by_hand():
    """One pooled-size rule for shape inference and the executor (pooling-inl.h): 'valid' floors,
    'full' ceils, so a last window may hang past the padding."""
    assert mxo.pooled_size(7, 3, 2, 0, "valid") == 3  # (7 - 3) / 2 + 1
    assert mxo.pooled_size(8, 3, 2, 0, "valid") == 3  # floor(5 / 2) + 1
    assert mxo.pooled_size(8, 3, 2, 0, "full") == 4  # ceil(5 / 2) + 1
    assert mxo.pooled_size(8, 3, 2, 1, "full") == 5  # ceil(7 / 2) + 1
    with pytest.raises(mxo.ShapeError, match="larger than the padded input"):
        mxo.pooled_size(2, 5, 1, 1)
    with pytest.raises(mxo.ShapeError, match="not supported"):
        mxo.pooled_size(8, 3, 2, 0, "same")


def test_param_base_name():
    """MXNet's parameter suffixes, for whoever lines layers up with parameters (verify)."""
    names = {"conv_1_conv2d_weight": "conv_1_conv2d", "fc1_bias": "fc1", "bn0_gamma": "bn0", "bn0_beta": "bn0",
             "fc1_moving_mean": "fc1", "fc1_moving_var": "fc1", "bn_running_var": "bn", "data": "data",
             "weight": "weight"}
    assert {n: mxo.param_base_name(n) for n in names} == names
