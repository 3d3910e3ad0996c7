"""``mapspec graph NET.prototxt --to mxnet``: the written symbol run in real MXNet gives the Caffe net's numbers.

Weights are seeded (:mod:`mapspec.models.seeded`: BatchNorm statistics stored times a factor far from 1,
so a spec that forgets to divide fails); the emitted spec converts them.  Caffe's numbers come from
mapspec's Caffe executor (tested against recorded real-Caffe runs), MXNet's from MXNet 1.9.1.

* MobileNet v1 and DenseNet-121 (the real prototxts of the fixtures).
* A zoo net with every layer type the converter knows (BatchNorm with and without Scale, Split,
  3-input Eltwise, PROD/MAX/difference, Power, pooling with Caffe's ceil rounding and a padded average,
  Reshape, Softmax on axis 2, ...), then converted back to Caffe: both directions against MXNet.
* Refusals name the layer.
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
from mapspec.frameworks.convert.caffe_to_mxnet import convert
from mapspec.frameworks.mxnet.graph import graph_from_json, infer_shapes
from mapspec.models.seeded import write_caffemodel

ZOO = """name: "zoo"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 4 dim: 11 dim: 11 } } }
layer { name: "pw" type: "Power" bottom: "data" top: "pw" power_param { scale: 0.5 shift: -0.25 } }
layer { name: "conv1" type: "Convolution" bottom: "pw" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 group: 2 } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" relu_param { negative_slope: 0.1 } }
layer { name: "split" type: "Split" bottom: "conv1" top: "a" top: "b" }
layer { name: "conv2" type: "Convolution" bottom: "a" top: "conv2"
        convolution_param { num_output: 8 kernel_h: 3 kernel_w: 1 pad_h: 1 pad_w: 0 bias_term: false } }
layer { name: "bn2" type: "BatchNorm" bottom: "conv2" top: "bn2" batch_norm_param { eps: 0.001 } }
layer { name: "sc2" type: "Scale" bottom: "bn2" top: "bn2" scale_param { bias_term: true } }
layer { name: "prelu2" type: "PReLU" bottom: "bn2" top: "prelu2" }
layer { name: "sum" type: "Eltwise" bottom: "prelu2" bottom: "b" bottom: "conv1" top: "sum" }
layer { name: "prod" type: "Eltwise" bottom: "sum" bottom: "b" top: "prod" eltwise_param { operation: PROD } }
layer { name: "max" type: "Eltwise" bottom: "prod" bottom: "sum" top: "max" eltwise_param { operation: MAX } }
layer { name: "sub" type: "Eltwise" bottom: "max" bottom: "a" top: "sub"
        eltwise_param { operation: SUM coeff: 1 coeff: -1 } }
layer { name: "sig" type: "Sigmoid" bottom: "sub" top: "sig" }
layer { name: "tanh" type: "TanH" bottom: "sub" top: "tanh" }
layer { name: "elu" type: "ELU" bottom: "sub" top: "elu" elu_param { alpha: 0.7 } }
layer { name: "bnll" type: "BNLL" bottom: "sub" top: "bnll" }
layer { name: "cat" type: "Concat" bottom: "sig" bottom: "tanh" bottom: "elu" bottom: "bnll" top: "cat" }
layer { name: "pmax" type: "Pooling" bottom: "cat" top: "pmax"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "pave" type: "Pooling" bottom: "pmax" top: "pave" pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
layer { name: "drop" type: "Dropout" bottom: "pave" top: "pave" dropout_param { dropout_ratio: 0.3 } }
layer { name: "flat" type: "Flatten" bottom: "pave" top: "flat" }
layer { name: "fc" type: "InnerProduct" bottom: "flat" top: "fc" inner_product_param { num_output: 10 } }
layer { name: "clip" type: "Clip" bottom: "fc" top: "clip" clip_param { min: -0.5 max: 0.5 } }
layer { name: "reshape" type: "Reshape" bottom: "clip" top: "reshape" reshape_param { shape { dim: 0 dim: 2 dim: -1 } } }
layer { name: "prob" type: "Softmax" bottom: "reshape" top: "prob" softmax_param { axis: 2 } }
layer { name: "gpool" type: "Pooling" bottom: "cat" top: "gpool" pooling_param { pool: AVE global_pooling: true } }
layer { name: "pave2" type: "Pooling" bottom: "cat" top: "pave2"
        pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "pave3" type: "Pooling" bottom: "cat" top: "pave3" pooling_param { pool: AVE kernel_size: 2 stride: 3 pad: 1 } }
"""
ZOO_OUTPUTS = ("prob", "gpool", "pave2", "pave3")


def _cli(*argv) -> tuple:
    out, err = io.StringIO(), io.StringIO()
    code = cli.run([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def _cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _to_mxnet(tmp, proto, shape=None):
    """Convert ``proto`` and seeded weights for it: (symbol, params, caffemodel)."""
    sym, spec, params, model = tmp / "net-symbol.json", tmp / "net.yaml", tmp / "net-0000.params", tmp / "src.caffemodel"
    extra = ["--input-shape", shape] if shape else []
    code, out, err = _cli("graph", proto, "--to", "mxnet", "-o", sym, "--emit-spec", spec, *extra)
    assert code == 0, err
    assert _cli("validate", spec)[0] == 0
    write_caffemodel(str(proto), str(model), seed=1)
    code, out, err = _cli("plan", spec, "-s", model)
    assert code == 0 and "coverage: OK" in out and "0 unused" in out, err + out
    code, out, err = _cli("apply", spec, "-s", model, "-o", params)
    assert code == 0, err
    return sym, params, model


def _caffe(proto, model, x):
    from mapspec.frameworks.caffe.executor import CaffeExecutor
    from mapspec.formats import open_checkpoint

    with open_checkpoint(str(model), format="caffe") as w:
        return CaffeExecutor(str(proto), w).run({"data": x}, capture=True)


def _mxnet(mxnet_python, tmp, sym, params, x):
    np.savez(tmp / "in.npz", data=x)
    run(mxnet_python, "forward.py", sym, params, tmp / "in.npz", tmp / "out.npz", "--internals")
    return dict(np.load(tmp / "out.npz"))


def _agree(ours, theirs, names):
    for n in names:
        a, b = ours[n], theirs[n + "_output"]
        assert a.shape == b.shape, n
        assert _cosine(a, b) >= 0.99999, n
        assert np.abs(a - b).max() <= 1e-4 * max(1.0, float(np.abs(b).max())), n


# -- structure without MXNet ------------------------------------------------------------------

@pytest.mark.parametrize("fixture", ["mobilenet-caffe/mobilenet_deploy.prototxt",
                                     "mobilenet-caffe/mobilenet_v2_deploy.prototxt",
                                     "densenet-caffe/DenseNet_121.prototxt"])
def test_symbol_shapes_are_caffes(fixture):
    """mapspec's MXNet shape inference on the written symbol gives every Caffe layer's output shape."""
    path = str(fixture_file(fixture))
    net = load_net(path)
    conv = convert(net, path)
    g = graph_from_json(json.loads(conv.text), "net-symbol.json")
    mx = infer_shapes(g, conv.inputs)
    caffe = infer(net)
    checked = 0
    for k, shapes in caffe.tops.items():
        name = net.layer[k].name
        if f"{name}_output" in mx and net.layer[k].type not in ("Scale", "Split"):
            assert mx[f"{name}_output"] == shapes[0], name
            checked += 1
    assert checked > 0.5 * len(caffe.tops)


def test_zoo_structure():
    conv = convert(load_net(ZOO), "zoo.prototxt")
    ops = {n["name"]: n for n in json.loads(conv.text)["nodes"]}
    assert ops["bn1"]["attrs"]["fix_gamma"] == "True" and ops["bn2"]["attrs"]["fix_gamma"] == "False"
    assert ops["bn2"]["attrs"]["eps"] == "0.001"
    assert ops["sum"]["op"] == "add_n" and ops["sub"]["op"] == "elemwise_sub"
    assert ops["pmax"]["attrs"]["pooling_convention"] == "full"
    assert ops["pave3"]["attrs"]["pooling_convention"] == "valid"  # Caffe's ceil drops the window in the padding
    assert (ops["pw_mul"]["op"], ops["pw"]["op"]) == ("_mul_scalar", "_plus_scalar")
    assert "sc2" not in ops and conv.source_outputs == list(ZOO_OUTPUTS)
    bn1 = next(r for r in conv.rules if r.src == "bn1[0]")
    assert bn1.also == {"bn1_gamma": [1.0] * 8, "bn1_beta": [0.0] * 8}
    assert bn1.transforms == [{"div": {"by": "bn1[2]", "zero": 0}}]


# -- numbers against real MXNet ---------------------------------------------------------------

@pytest.mark.slow
def test_zoo_both_directions_give_mxnets_numbers(mxnet_python, tmp_path):
    proto = tmp_path / "zoo.prototxt"
    proto.write_text(ZOO)
    sym, params, model = _to_mxnet(tmp_path, proto)
    x = np.random.default_rng(5).normal(size=(2, 4, 11, 11)).astype(np.float32)
    theirs = _mxnet(mxnet_python, tmp_path, sym, params, x)
    _agree(_caffe(proto, model, x), theirs, ZOO_OUTPUTS + ("fc", "cat", "pmax", "sum", "conv1", "prelu2"))
    # and back: the MXNet symbol to Caffe, its weights through the spec emitted for that direction
    back, spec, back_model = tmp_path / "back.prototxt", tmp_path / "back.yaml", tmp_path / "back.caffemodel"
    code, out, err = _cli("graph", sym, "--to", "caffe", "-o", back, "--emit-spec", spec)
    assert code == 0, err
    code, out, err = _cli("apply", spec, "-s", params, "-o", back_model)
    assert code == 0, err
    _agree(_caffe(back, back_model, x), theirs, ZOO_OUTPUTS + ("fc", "cat", "sum"))


@pytest.mark.slow
@pytest.mark.parametrize("fixture, outputs", [("mobilenet-caffe/mobilenet_deploy.prototxt", ("fc7", "prob")),
                                              ("densenet-caffe/DenseNet_121.prototxt", ("fc6", "pool5"))])
def test_real_nets_give_caffes_numbers_in_mxnet(mxnet_python, tmp_path, fixture, outputs):
    proto = tmp_path / fixture.split("/")[1]
    proto.write_text(fixture_file(fixture).read_text())
    sym, params, model = _to_mxnet(tmp_path, proto)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32)
    _agree(_caffe(proto, model, x), _mxnet(mxnet_python, tmp_path, sym, params, x), outputs)


# -- refusals ---------------------------------------------------------------------------------

HEAD = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 6 dim: 6 } } }\n'


@pytest.mark.parametrize("layer, msg", [
    ('layer { name: "n" type: "LRN" bottom: "data" top: "n" }', r"layer 'n' \(LRN\): mapspec cannot express layer "
                                                                r"type 'LRN' in MXNet"),
    ('layer { name: "s" type: "Scale" bottom: "data" top: "s" scale_param { bias_term: true } }',
     r"layer 's' \(Scale\): a Scale that does not follow a BatchNorm"),
    ('layer { name: "p" type: "Power" bottom: "data" top: "p" power_param { power: 2 } }',
     r"layer 'p' \(Power\): power=2.0: only power 1"),
    ('layer { name: "e" type: "Eltwise" bottom: "data" bottom: "data" top: "e" eltwise_param { coeff: 2 coeff: 1 } }',
     r"layer 'e' \(Eltwise\): coefficients \[2.0, 1.0\]"),
    ('layer { name: "r" type: "PReLU" bottom: "data" top: "r" prelu_param { channel_shared: true } }',
     r"layer 'r' \(PReLU\): channel_shared: true"),
    ('layer { name: "b" type: "BatchNorm" bottom: "data" top: "b" batch_norm_param { use_global_stats: false } }',
     r"layer 'b' \(BatchNorm\): use_global_stats: false"),
])
def test_inexpressible_layers_are_refused_by_name(tmp_path, layer, msg):
    with pytest.raises(MapspecError, match=r"net.prototxt: " + msg):
        convert(load_net(HEAD + layer), "net.prototxt")
    proto = tmp_path / "net.prototxt"
    proto.write_text(HEAD + layer)
    code, out, err = _cli("graph", proto, "--to", "mxnet", "-o", tmp_path / "n-symbol.json")
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "n-symbol.json").exists()


def test_emitted_specs_verify_sections_run(tmp_path):
    """``mapspec verify`` with the emitted spec's own ``verify:`` section passes, both directions (the
    MXNet side runs in mapspec's MXNet executor here; the real-MXNet proofs are above)."""
    proto = tmp_path / "zoo.prototxt"
    proto.write_text(ZOO)
    sym, params, model = _to_mxnet(tmp_path, proto)
    code, out, err = _cli("verify", tmp_path / "net.yaml", "-s", model, "-c", params)
    assert code == 0 and "PASS" in out, out + err
    back, spec, back_model = tmp_path / "back.prototxt", tmp_path / "back.yaml", tmp_path / "back.caffemodel"
    assert _cli("graph", sym, "--to", "caffe", "-o", back, "--emit-spec", spec)[0] == 0
    assert _cli("apply", spec, "-s", params, "-o", back_model)[0] == 0
    code, out, err = _cli("verify", spec, "-s", params, "-c", back_model)
    assert code == 0 and "PASS" in out, out + err
