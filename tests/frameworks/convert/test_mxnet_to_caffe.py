"""``mapspec graph SYMBOL --to caffe``: the written prototxt against MXNet2Caffe's and against real MXNet.

* MobileFaceNet (the real fixture): layer names, types and blob shapes as the third party's MXNet2Caffe
  conversion has them; the emitted spec validates, plans with full coverage and applies; real MXNet's
  fc1 and mapspec's Caffe executor on the converted net agree (cosine >= 0.99999).
* An insightface ResNet-50 (fresnet's layer pattern, built and saved by MXNet itself with random
  weights, ``tests/mxnet_oracle/fresnet.py``): the same proof.
* Pooling: every variant the converter accepts gives MXNet's numbers; the ones where Caffe's ceil
  rounding differs are refused.
* Refusals: L2Normalization, unknown ops, Dropout mode='always', a missing input shape; CLI rules.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from conftest import fixture_file
from mxnet_oracle import run

from mapspec import cli
from mapspec.errors import MapspecError
from mapspec.frameworks.caffe.net import infer, load_net
from mapspec.frameworks.convert.command import convert_file
from mapspec.frameworks.convert.mxnet_to_caffe import convert
from mapspec.frameworks.mxnet.graph import graph_from_json, load_symbol

MFN = "mobilefacenet-mxnet/model_mobilefacenet"
THIRD_PARTY = "mobilefacenet-caffe-thirdparty/mxnet2caffe_mobilefacenet"


def _cli(*argv) -> tuple:
    out, err = io.StringIO(), io.StringIO()
    code = cli.run([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def _cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _caffe_forward(prototxt, caffemodel, x, output):
    from mapspec.frameworks.caffe.executor import CaffeExecutor
    from mapspec.formats import open_checkpoint

    with open_checkpoint(str(caffemodel), format="caffe") as w:
        return CaffeExecutor(str(prototxt), w).run({"data": x})[output]


def _convert_and_apply(tmp, symbol, params, shape="1,3,112,112"):
    proto, spec, model = tmp / "net.prototxt", tmp / "net.yaml", tmp / "net.caffemodel"
    code, out, err = _cli("graph", symbol, "--to", "caffe", "-o", proto, "--input-shape", shape, "--emit-spec", spec)
    assert code == 0, err
    code, out, err = _cli("validate", spec)
    assert code == 0, err + out
    code, out, err = _cli("plan", spec, "-s", params)
    assert code == 0, err
    assert "0 unused" in out and "coverage: OK" in out, out
    code, out, err = _cli("apply", spec, "-s", params, "-o", model)
    assert code == 0, err
    return proto, model


# -- MobileFaceNet, structure ----------------------------------------------------------------

def test_mobilefacenet_layers_are_mxnet2caffes():
    """Names, types, eps and blob shapes as MXNet2Caffe wrote them; plus the input normalisation (which
    MXNet2Caffe left out: its net wants normalised input), as two Power layers."""
    from mapspec.formats import open_checkpoint

    conv = convert_file(str(fixture_file(MFN + "-symbol.json")), "caffe", "1,3,112,112")
    ours = load_net(conv.text)
    theirs = load_net(str(fixture_file(THIRD_PARTY + ".prototxt")))
    kinds = {(x.name, x.type) for x in ours.layer}
    assert kinds - {(x.name, x.type) for x in theirs.layer} == {("_minusscalar0", "Power"), ("_mulscalar0", "Power")}
    assert {(x.name, x.type) for x in theirs.layer} <= kinds
    power = {x.name: (x.power_param.power, x.power_param.scale, x.power_param.shift) for x in ours.layer
             if x.type == "Power"}
    assert power == {"_minusscalar0": (1.0, 1.0, -127.5), "_mulscalar0": (1.0, 0.0078125, 0.0)}
    eps = {x.name: round(x.batch_norm_param.eps, 9) for x in ours.layer if x.type == "BatchNorm"}
    assert eps == {x.name: round(x.batch_norm_param.eps, 9) for x in theirs.layer if x.type == "BatchNorm"}
    assert eps["fc1"] == 2e-5 and eps["conv_1_batchnorm"] == 1e-3
    shapes = infer(ours).params
    with open_checkpoint(str(fixture_file(THIRD_PARTY + ".caffemodel")), format="caffe") as r:
        blobs = {n: tuple(r.info(n).shape) for n in r.names()}
    for layer, ps in shapes.items():
        for k, s in enumerate(ps):
            assert int(np.prod(blobs[f"{layer}[{k}]"])) == int(np.prod(s)), (layer, k)
    assert set(blobs) == {f"{layer}[{k}]" for layer, ps in shapes.items() for k in range(len(ps))}


def test_mobilefacenet_spec_maps_every_tensor(tmp_path):
    proto, model = _convert_and_apply(tmp_path, fixture_file(MFN + "-symbol.json"), fixture_file(MFN + "-0200.params"))
    text = (tmp_path / "net.yaml").read_text()
    assert 'from: "fc1_gamma"\n    to: "fc1_scale[0]"\n    apply: [{fill: 1.0}]' in text  # fix_gamma=True
    assert 'from: "conv_1_batchnorm_gamma"\n    to: "conv_1_batchnorm_scale[0]"\n  ' in text  # fix_gamma=False
    assert 'also: [{to: "fc1[2]", value: [1.0], dtype: float32}]' in text


# -- numbers against real MXNet ---------------------------------------------------------------

def _mxnet_forward(mxnet_python, tmp, symbol, params, x, head):
    np.savez(tmp / "in.npz", data=x)
    run(mxnet_python, "forward.py", symbol, params, tmp / "in.npz", tmp / "out.npz")
    return np.load(tmp / "out.npz")[head]


@pytest.mark.slow
def test_mobilefacenet_caffe_gives_mxnets_embedding(mxnet_python, tmp_path):
    sym, params = fixture_file(MFN + "-symbol.json"), fixture_file(MFN + "-0200.params")
    run(mxnet_python, "decode_image.py", fixture_file("images/Aaron_Eckhart_0001.jpg"), tmp_path / "img.npy")
    face = np.load(tmp_path / "img.npy").transpose(2, 0, 1)[None].astype(np.float32)
    proto, model = _convert_and_apply(tmp_path, sym, params)
    theirs = _mxnet_forward(mxnet_python, tmp_path, sym, params, face, "fc1_output")
    ours = _caffe_forward(proto, model, face, "fc1")
    assert ours.shape == theirs.shape == (1, 128)
    assert _cosine(ours, theirs) >= 0.99999
    assert np.abs(ours - theirs).max() <= 1e-3 * np.abs(theirs).max()


@pytest.mark.slow
def test_fresnet50_caffe_gives_mxnets_embedding(mxnet_python, tmp_path):
    sym, params = tmp_path / "r50-symbol.json", tmp_path / "r50-0000.params"
    run(mxnet_python, "fresnet.py", sym, params, "3,4,14,3", "64,64,128,256,512", 7)
    nodes = json.loads(sym.read_text())["nodes"]
    ops = {n["op"] for n in nodes}
    assert {"_minus_scalar", "_mul_scalar", "LeakyReLU", "Dropout", "elemwise_add"} <= ops
    assert sum(n["op"] == "Convolution" for n in nodes) == 1 + 2 * 24 + 4  # conv0, 24 units, 4 shortcuts
    proto, model = _convert_and_apply(tmp_path, sym, params)
    x = np.random.default_rng(3).uniform(0, 255, (1, 3, 112, 112)).astype(np.float32)
    theirs = _mxnet_forward(mxnet_python, tmp_path, sym, params, x, "fc1_output")
    ours = _caffe_forward(proto, model, x, "fc1")
    assert ours.shape == theirs.shape == (1, 128)
    assert _cosine(ours, theirs) >= 0.99999


# -- pooling: both frameworks' rounding ------------------------------------------------------

def _symbol(op_nodes: list, head: int = -1) -> dict:
    """A symbol JSON: ``data`` then the given op nodes, each reading the previous one unless it says."""
    nodes = [{"op": "null", "name": "data", "inputs": []}]
    for n in op_nodes:
        nodes.append({"op": n["op"], "name": n["name"], "attrs": n.get("attrs", {}),
                      "inputs": n.get("inputs", [[len(nodes) - 1, 0, 0]])})
    return {"nodes": nodes, "arg_nodes": [0], "heads": [[len(nodes) - 1 if head < 0 else head, 0, 0]],
            "attrs": {"mxnet_version": ["int", 10901]}}


POOLS = [  # (attrs, input H=W, accepted)
    ({"kernel": "(3, 3)", "stride": "(2, 2)", "pool_type": "max", "pooling_convention": "full"}, 9, True),
    ({"kernel": "(3, 3)", "stride": "(2, 2)", "pool_type": "max", "pooling_convention": "full"}, 10, True),
    ({"kernel": "(3, 3)", "stride": "(2, 2)", "pool_type": "avg", "pooling_convention": "full"}, 10, True),
    ({"kernel": "(3, 3)", "stride": "(2, 2)", "pad": "(1, 1)", "pool_type": "avg"}, 9, True),
    ({"kernel": "(2, 2)", "stride": "(2, 2)", "pool_type": "max"}, 8, True),
    ({"kernel": "(3, 3)", "stride": "(2, 2)", "pool_type": "max"}, 9, True),
    ({"kernel": "(3, 3)", "stride": "(2, 2)", "pool_type": "max"}, 10, False),  # valid 4, Caffe's ceil 5
    ({"kernel": "(3, 3)", "stride": "(2, 2)", "pad": "(1, 1)", "pool_type": "avg"}, 8, False),
    ({"kernel": "(3, 3)", "stride": "(2, 2)", "pad": "(1, 1)", "pool_type": "max", "pooling_convention": "full"},
     8, True),
    ({"kernel": "(2, 2)", "stride": "(3, 3)", "pad": "(1, 1)", "pool_type": "max",
      "pooling_convention": "full"}, 5, False),  # full 3, Caffe drops the window starting in the padding: 2
    ({"kernel": "(1, 1)", "global_pool": "True", "pool_type": "avg"}, 7, True),
    ({"kernel": "(1, 1)", "global_pool": "True", "pool_type": "max"}, 5, True),
]


def _pool_symbol(attrs: dict) -> dict:
    return _symbol([{"op": "Pooling", "name": "pool", "attrs": attrs}])


@pytest.mark.parametrize("attrs, size, ok", [(a, s, ok) for a, s, ok in POOLS if not ok])
def test_pooling_caffe_cannot_reproduce_is_refused(attrs, size, ok):
    g = graph_from_json(_pool_symbol(attrs), "pool-symbol.json")
    with pytest.raises(MapspecError, match=r"pool-symbol.json: node 'pool' \(Pooling\): MXNet pools a "
                                           rf"{size}-wide axis to \d+ .* gives \d+"):
        convert(g, {"data": (1, 2, size, size)})


@pytest.mark.slow
def test_pooling_accepted_variants_give_mxnets_numbers(mxnet_python, tmp_path):
    """All accepted variants in one symbol (one input and one head each): one MXNet run."""
    cases = [(a, s) for a, s, ok in POOLS if ok]
    nodes, heads, inputs = [], [], {}
    for i, (attrs, size) in enumerate(cases):
        nodes.append({"op": "null", "name": f"data{i}", "inputs": []})
        nodes.append({"op": "Pooling", "name": f"pool{i}", "attrs": attrs, "inputs": [[len(nodes) - 1, 0, 0]]})
        heads.append([len(nodes) - 1, 0, 0])
        inputs[f"data{i}"] = np.random.default_rng(i).normal(size=(1, 2, size, size)).astype(np.float32)
    sym = tmp_path / "pools-symbol.json"
    sym.write_text(json.dumps({"nodes": nodes, "arg_nodes": list(range(0, len(nodes), 2)), "heads": heads}))
    np.savez(tmp_path / "in.npz", **inputs)
    run(mxnet_python, "nd_save.py", _npz(tmp_path / "empty.npz"), tmp_path / "empty.params")
    run(mxnet_python, "forward.py", sym, tmp_path / "empty.params", tmp_path / "in.npz", tmp_path / "out.npz")
    theirs = np.load(tmp_path / "out.npz")
    conv = convert(load_symbol(sym), {k: v.shape for k, v in inputs.items()})
    from mapspec.frameworks.caffe.executor import CaffeExecutor

    ours = CaffeExecutor(conv.text, {}).run(inputs)
    for i, (attrs, size) in enumerate(cases):
        assert ours[f"pool{i}"].shape == theirs[f"pool{i}_output"].shape, (attrs, size)
        np.testing.assert_allclose(ours[f"pool{i}"], theirs[f"pool{i}_output"], rtol=1e-6, atol=1e-6,
                                   err_msg=str((attrs, size)))


def _npz(path):
    np.savez(path, dummy=np.zeros(1, np.float32))
    return path


# -- refusals ---------------------------------------------------------------------------------

@pytest.mark.parametrize("node, msg", [
    ({"op": "L2Normalization", "name": "l2n", "attrs": {"mode": "instance"}},
     r"node 'l2n' \(L2Normalization\): Caffe has no stock L2 normalisation layer"),
    ({"op": "Dropout", "name": "drop", "attrs": {"p": "0.5", "mode": "always"}},
     r"node 'drop' \(Dropout\): mode='always' drops values at inference too"),
    ({"op": "SoftmaxOutput", "name": "sm", "inputs": [[0, 0, 0], [1, 0, 0]]},
     r"node 'sm' \(SoftmaxOutput\): SoftmaxOutput normalises over all of \(3, 4, 4\)"),
    ({"op": "Activation", "name": "act", "attrs": {"act_type": "softsign"}},
     r"node 'act' \(Activation\): act_type='softsign' has no Caffe layer"),
    ({"op": "erfinv", "name": "odd"}, r"node 'odd' \(erfinv\): mapspec cannot express op 'erfinv' in Caffe"),
])
def test_inexpressible_nodes_are_refused_by_name(node, msg):
    nodes = [node]
    if node["op"] == "SoftmaxOutput":
        nodes = [{"op": "null", "name": "sm_label", "inputs": []}, dict(node, inputs=[[0, 0, 0], [1, 0, 0]])]
    g = graph_from_json(_symbol(nodes), "x-symbol.json")
    with pytest.raises(MapspecError, match=msg):
        convert(g, {"data": (1, 3, 4, 4)})


def test_cli_refusal_is_one_line_exit_1_and_writes_nothing(tmp_path):
    sym = tmp_path / "x-symbol.json"
    sym.write_text(json.dumps(_symbol([{"op": "L2Normalization", "name": "l2n"}])))
    code, out, err = _cli("graph", sym, "--to", "caffe", "-o", tmp_path / "x.prototxt", "--input-shape", "1,3,4,4",
                          "--emit-spec", tmp_path / "x.yaml")
    assert code == 1 and "Traceback" not in err
    assert err.startswith(f"mapspec: error: {sym}: node 'l2n' (L2Normalization)") and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x-symbol.json"]


def test_cli_needs_an_input_shape_and_force(tmp_path):
    sym = tmp_path / "x-symbol.json"
    sym.write_text(json.dumps(_symbol([{"op": "Activation", "name": "r", "attrs": {"act_type": "relu"}}])))
    out_path = tmp_path / "x.prototxt"
    code, out, err = _cli("graph", sym, "--to", "caffe", "-o", out_path)
    assert code == 1 and "input 'data'" in err and "--input-shape" in err
    assert _cli("graph", sym, "--to", "caffe", "-o", out_path, "--input-shape", "1,3,4,4")[0] == 0
    code, out, err = _cli("graph", sym, "--to", "caffe", "-o", out_path, "--input-shape", "1,3,4,4")
    assert code == 1 and "output exists; pass --force" in err
    assert _cli("graph", sym, "--to", "caffe", "-o", out_path, "--input-shape", "1,3,4,4", "-f")[0] == 0
    code, out, err = _cli("graph", sym, "--to", "mxnet", "-o", tmp_path / "y-symbol.json")
    assert code == 2 and "already a mxnet graph" in err
