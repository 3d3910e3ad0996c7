"""Shipped specs that read or write Caffe, end to end: convert, then prove output parity with `mapspec verify`.

Source weights are seeded (the trained DenseNet/CaffeNet weights are not public) and written as
caffemodels by our writer; MobileFaceNet uses the real MXNet checkpoint from the fixtures.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pytest

from mapspec import cli
from mapspec.formats import module, open_checkpoint

from checkpoint_util import tiny_caffenet
from conftest import fixture_file
from densenet_util import caffe_blobs, expected_torchvision

torch = pytest.importorskip("torch")


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def passes(text: str) -> bool:
    return "\nPASS (" in "\n" + text


def seeded_caffemodel(prototxt: str, path: str, seed: int = 0) -> None:
    from mapspec.models.seeded import write_caffemodel

    write_caffemodel(prototxt, path, seed=seed)


# -- DenseNet ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def densenet121(tmp_path_factory):
    from mapspec.models.densenet_caffe import caffe_prototxt

    d = tmp_path_factory.mktemp("densenet")
    proto = d / "DenseNet_121.prototxt"
    proto.write_text(caffe_prototxt(121))
    blobs = caffe_blobs("121", seed=11)
    order = open_checkpoint(str(proto)).names()
    module("caffe").save(d / "DenseNet_121.caffemodel", {k: blobs[k] for k in order}, template=str(proto))
    return d, blobs


@pytest.mark.slow
def test_densenet_caffe_to_torchvision_parity(densenet121):
    from mapspec.models.densenet import densenet121 as tv121

    d, blobs = densenet121
    out = d / "densenet121.pth"
    code, _, err = run("apply", "densenet/caffe-to-torchvision", "-s", d / "DenseNet_121.caffemodel", "-o", out, "-q")
    assert code == 0, err
    sd = torch.load(out, weights_only=True)
    tv121().load_state_dict(sd, strict=True)
    for k, v in expected_torchvision(blobs).items():
        np.testing.assert_allclose(sd[k].numpy(), v, rtol=1e-6, err_msg=k)
    code, text, err = run("verify", "densenet/caffe-to-torchvision", "-s", d / "DenseNet_121.caffemodel", "-c", out,
                          "--source-graph", d / "DenseNet_121.prototxt")
    assert code == 0 and passes(text), text + err


@pytest.mark.slow
@pytest.mark.parametrize("depth", [121, 161, 169, 201])
def test_densenet_fixture_prototxts_convert_and_load(depth, tmp_path):
    """shicai's own prototxts (DenseNet-201 names its transitions convB_N/blk) -> strict torch load."""
    from mapspec.models import densenet as tvd

    proto = fixture_file(f"densenet-caffe/DenseNet_{depth}.prototxt")
    model = tmp_path / "d.caffemodel"
    seeded_caffemodel(str(proto), str(model), seed=depth)
    out = tmp_path / "d.pth"
    code, _, err = run("apply", "densenet/caffe-to-torchvision", "-s", model, "-o", out, "-q")
    assert code == 0, err
    getattr(tvd, f"densenet{depth}")().load_state_dict(torch.load(out, weights_only=True), strict=True)


@pytest.mark.slow
def test_densenet_caffe_to_efficient_caffe_parity(densenet121):
    from mapspec.models.densenet_caffe import efficient_prototxt

    d, _ = densenet121
    eff = d / "eff.prototxt"
    eff.write_text(efficient_prototxt(121))
    out = d / "eff.caffemodel"
    code, _, err = run("apply", "densenet/caffe-to-efficient-caffe", "-s", d / "DenseNet_121.caffemodel", "-t", eff,
                       "-o", out, "-q")
    assert code == 0, err
    code, text, err = run("verify", "densenet/caffe-to-efficient-caffe", "-s", d / "DenseNet_121.caffemodel",
                          "-c", out, "--source-graph", d / "DenseNet_121.prototxt", "--target-graph", eff)
    assert code == 0 and passes(text), text + err
    # the block factor is 1 and mean/var were divided by each layer's own factor
    with open_checkpoint(str(out)) as r, open_checkpoint(str(d / "DenseNet_121.caffemodel")) as s:
        assert r.read("denseblock1[60]").tolist() == [1.0]
        np.testing.assert_allclose(r.read("denseblock1[18]").ravel(),
                                   s.read("conv2_1/x1/bn[0]") / s.read("conv2_1/x1/bn[2]")[0], rtol=1e-6)


@pytest.mark.slow
def test_efficient_caffe_without_the_flip_is_caught(densenet121, tmp_path):
    """The seed-000 mistake: copying 3x3 filters as they are gives a net that verify rejects."""
    from mapspec.models.densenet_caffe import efficient_prototxt
    from mapspec.resources import shipped_specs

    d, _ = densenet121
    eff = tmp_path / "eff.prototxt"
    eff.write_text(efficient_prototxt(121))
    text = shipped_specs()["densenet/caffe-to-efficient-caffe"].read_text()
    broken = text.replace("    apply: [{reverse: 2}, {reverse: 3}]\n", "")
    assert broken != text
    spec = tmp_path / "broken.yaml"
    spec.write_text(broken)
    out = tmp_path / "eff.caffemodel"
    assert run("apply", spec, "-s", d / "DenseNet_121.caffemodel", "-t", eff, "-o", out, "-q")[0] == 0
    code, text, _ = run("verify", spec, "-s", d / "DenseNet_121.caffemodel", "-c", out,
                        "--source-graph", d / "DenseNet_121.prototxt", "--target-graph", eff, "--layers")
    assert code == 1 and "FAIL" in text
    assert "first divergence: conv2_6/x2 -> denseblock1" in text and "likely cause: kernels copied unchanged (denseblock1[" in text, text


@pytest.mark.slow
def test_densenet_factor_not_divided_out_is_diagnosed(densenet121, tmp_path):
    """Caffe stores BatchNorm statistics times a moving-average factor (blob 2); forgetting to divide it
    out of conv1's statistics scales every channel of norm0 by about 1/sqrt(factor)."""
    from mapspec.resources import shipped_specs

    d, _ = densenet121
    text = shipped_specs()["densenet/caffe-to-torchvision"].read_text()
    broken = text.replace('    apply: [{div: {by: "conv1/bn[2]", zero: 0}}]\n', "")
    assert broken.count("conv1/bn[2]") == text.count("conv1/bn[2]") - 2
    spec = tmp_path / "broken.yaml"
    spec.write_text(broken)
    out = tmp_path / "b.pth"
    assert run("apply", spec, "-s", d / "DenseNet_121.caffemodel", "-o", out, "-q")[0] == 0
    code, text, err = run("verify", spec, "-s", d / "DenseNet_121.caffemodel", "-c", out,
                          "--source-graph", d / "DenseNet_121.prototxt", "--layers")
    assert code == 1 and "FAIL" in text, text + err
    assert "first divergence: conv1/scale -> features.norm0" in text, text
    assert "likely cause: every channel is scaled by the same" in text and "moving-average factor" in text


# -- CaffeNet -> Keras ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def caffenet(tmp_path_factory):
    return tiny_caffenet(tmp_path_factory.mktemp("caffenet"))


@pytest.mark.parametrize("spec,factory", [("caffenet/caffe-to-keras", "keras_caffenet_split_tiny"),
                                          ("caffenet/caffe-to-keras-grouped", "keras_caffenet_grouped_tiny")])
def test_caffenet_to_keras_parity(caffenet, spec, factory, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    d = caffenet
    out = d / f"{factory}.h5"
    code, _, err = run("apply", spec, "-s", d / "tiny.caffemodel", "-o", out, "-q", "--force")
    assert code == 0, err
    code, text, err = run("verify", spec, "-s", d / "tiny.caffemodel", "-c", out, "--source-graph",
                          d / "tiny.prototxt", "--target-model", f"mapspec.models.caffenet:{factory}",
                          "--input-shape", "1,3,99,99", "--input", "random", "--layers")
    assert code == 0 and passes(text), text + err
    assert "first divergence" not in text
    # raw 0..255 pixels, where LRN does real work: logits are large, so the tolerance scales with them
    pixels = np.random.default_rng(9).uniform(0, 255, (1, 3, 99, 99)).astype(np.float32)
    np.save(d / "pixels.npy", pixels)
    code, text, err = run("verify", spec, "-s", d / "tiny.caffemodel", "-c", out, "--source-graph",
                          d / "tiny.prototxt", "--target-model", f"mapspec.models.caffenet:{factory}",
                          "--input-shape", "1,3,99,99", "--input", d / "pixels.npy", "--atol", "1e-2", "--json")
    import json

    doc = json.loads(text)
    assert code == 0 and doc["ok"] and doc["output"]["max_rel"] < 1e-5, text + err


def test_caffenet_flatten_order_mistake_is_diagnosed(caffenet, tmp_path, monkeypatch):
    """Without the C,H,W -> H,W,C reorder, verify points at fc6."""
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    from mapspec.resources import shipped_specs

    text = shipped_specs()["caffenet/caffe-to-keras-grouped"].read_text()
    start = text.index('  - from: "fc6[0]"')
    end = text.index('  - from: "fc<i>[0]"')
    broken = tmp_path / "broken.yaml"
    broken.write_text(text[:start] + text[end:])
    out = tmp_path / "b.h5"
    assert run("apply", broken, "-s", caffenet / "tiny.caffemodel", "-o", out, "-q")[0] == 0
    code, text, _ = run("verify", broken, "-s", caffenet / "tiny.caffemodel", "-c", out, "--source-graph",
                        caffenet / "tiny.prototxt", "--target-model",
                        "mapspec.models.caffenet:keras_caffenet_grouped_tiny", "--input-shape", "1,3,99,99",
                        "--layers")
    assert code == 1
    assert "first divergence: relu6 -> fc6" in text or "first divergence: fc6 -> fc6" in text, text


# -- MobileFaceNet MXNet -> Caffe ---------------------------------------------------------------

MFN = "mobilefacenet-mxnet/model_mobilefacenet-0200.params"


@pytest.mark.slow
def test_mobilefacenet_mxnet_to_caffe_parity(tmp_path):
    params = fixture_file(MFN)
    out = tmp_path / "mobilefacenet.caffemodel"
    code, _, err = run("apply", "mobilefacenet/mxnet-to-caffe", "-s", params, "-o", out, "-q")
    assert code == 0, err
    image = fixture_file("images/Aaron_Eckhart_0001.jpg")
    for extra in (["--input", image], ["--input", "random"]):
        code, text, err = run("verify", "mobilefacenet/mxnet-to-caffe", "-s", params, "-c", out, *extra)
        assert code == 0 and passes(text), text + err
    with open_checkpoint(str(out)) as r:
        assert r.read("fc1_scale[0]").tolist() == [1.0] * 128  # fix_gamma
        assert r.read("fc1[2]").tolist() == [1.0]
        assert r.attrs("fc1")["eps"] == pytest.approx(2e-5)
        assert r.attrs("conv_1_batchnorm")["eps"] == pytest.approx(1e-3)


def test_mobilefacenet_matches_the_third_party_caffe_layout():
    """Our target prototxt holds exactly the blobs (names and shapes) of the MXNet2Caffe conversion."""
    params = fixture_file(MFN)
    third = fixture_file("mobilefacenet-caffe-thirdparty/mxnet2caffe_mobilefacenet.caffemodel")
    for template in (third, third.with_suffix(".prototxt")):
        code, text, err = run("plan", "mobilefacenet/mxnet-to-caffe", "-s", params, "-t", template)
        assert code == 0 and text.rstrip().endswith("coverage: OK"), err


@pytest.mark.slow
def test_third_party_prototxt_filled_with_params_matches_mxnet(tmp_path):
    """The fixture README's claim, with our executors: the MXNet2Caffe prototxt (no input normalisation
    layer), filled through the spec, computes MXNet's embedding on a normalised input."""
    from mapspec.frameworks.caffe.executor import CaffeExecutor
    from mapspec.frameworks.mxnet.executor import MXNetExecutor
    from mapspec.verify import compare

    params = fixture_file(MFN)
    proto = fixture_file("mobilefacenet-caffe-thirdparty/mxnet2caffe_mobilefacenet.prototxt")
    out = tmp_path / "m.caffemodel"
    assert run("apply", "mobilefacenet/mxnet-to-caffe", "-s", params, "-t", proto, "-o", out, "-q")[0] == 0
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, 112, 112)).astype(np.float32)
    ref = MXNetExecutor(str(params).replace("-0200.params", "-symbol.json"), open_checkpoint(str(params))).run(
        {"data": x})["fc1"]
    with open_checkpoint(str(out)) as w:
        got = CaffeExecutor(str(proto), w).run({"data": (x - 127.5) * 0.0078125}, outputs=["fc1"])["fc1"]
    c = compare(ref, got)
    assert c.max_abs <= 1e-4 and c.cosine >= 0.99999, c


# -- BatchNorm folding ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mobilenet_deploy",
                                  pytest.param("mobilenet_v2_deploy", marks=pytest.mark.slow)])
def test_fold_bn_command_and_shipped_spec_agree(name, tmp_path):
    proto = fixture_file(f"mobilenet-caffe/{name}.prototxt")
    model = tmp_path / f"{name}.caffemodel"
    seeded_caffemodel(str(proto), str(model), seed=5)
    code, text, err = run("fold-bn", proto, model, "-o", tmp_path / "folded", "--verify",
                          "--emit-spec", tmp_path / "fold.yaml")
    assert code == 0, text + err
    assert text.count("PASS") == 2 and "FAIL" not in text
    folded = open_checkpoint(str(tmp_path / "folded.prototxt"))
    assert not any(i.meta["type"] in ("BatchNorm", "Scale") for i in folded.infos().values())
    # the pattern spec shipped for LAYER/bn + LAYER/scale naming gives the same weights
    out = tmp_path / "spec.caffemodel"
    code, _, err = run("apply", "caffe/fold-bn", "-s", model, "-t", tmp_path / "folded.prototxt", "-o", out, "-q")
    assert code == 0, err
    code, text, _ = run("diff", tmp_path / "folded.caffemodel", out)
    assert code == 0, text
    # the generated spec is a valid spec
    assert run("validate", tmp_path / "fold.yaml")[0] == 0


FOLD_NET = """
name: "tiny"
input: "data"
input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 bias_term: true } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" batch_norm_param { eps: 0.001 } }
layer { name: "sc1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "ip" type: "InnerProduct" bottom: "conv1" top: "ip" inner_product_param { num_output: 5 } }
layer { name: "bn2" type: "BatchNorm" bottom: "ip" top: "ip_bn" }
"""


def test_fold_bn_uses_each_layers_eps(tmp_path):
    """Seed 004's bug: a machine epsilon instead of the layer's own eps. Tiny variances make it visible."""
    from mapspec.frameworks.caffe.executor import CaffeExecutor

    proto = tmp_path / "tiny.prototxt"
    proto.write_text(FOLD_NET)
    rng = np.random.default_rng(0)
    w = {"conv1[0]": rng.standard_normal((4, 3, 3, 3)), "conv1[1]": rng.standard_normal(4),
         "bn1[0]": rng.standard_normal(4), "bn1[1]": np.array([1e-4, 1e-3, 1.0, 2.0]), "bn1[2]": [1.0],
         "sc1[0]": rng.uniform(0.5, 2, 4), "sc1[1]": rng.standard_normal(4),
         "ip[0]": rng.standard_normal((5, 256)), "ip[1]": rng.standard_normal(5),
         "bn2[0]": rng.standard_normal(5) * 3, "bn2[1]": np.array([1e-6, 1, 2, 3, 4]) * 3, "bn2[2]": [3.0]}
    module("caffe").save(tmp_path / "tiny.caffemodel", {k: np.asarray(v, np.float32) for k, v in w.items()},
                         template=str(proto))
    code, text, err = run("fold-bn", proto, tmp_path / "tiny.caffemodel", "-o", tmp_path / "f", "--verify")
    assert code == 0, text + err
    assert "folded conv1 -> bn1 -> sc1" in text and "folded ip -> bn2" in text
    # independent check of the folded weights
    with open_checkpoint(str(tmp_path / "f.caffemodel")) as r:
        alpha = w["sc1[0]"] / np.sqrt(w["bn1[1]"] + 1e-3)
        np.testing.assert_allclose(r.read("conv1[0]"), w["conv1[0]"] * alpha[:, None, None, None], rtol=1e-5)
        np.testing.assert_allclose(r.read("conv1[1]"), w["sc1[1]"] + (w["conv1[1]"] - w["bn1[0]"]) * alpha,
                                   rtol=1e-5)
        a2 = 1 / np.sqrt(w["bn2[1]"] / 3 + 1e-5)
        np.testing.assert_allclose(r.read("ip[1]"), (w["ip[1]"] - w["bn2[0]"] / 3) * a2, rtol=1e-5)
        assert "bn1[0]" not in r


def test_fold_bn_names_fork_fields_it_leaves_out(tmp_path):
    """A field our Caffe schema does not know is skipped when parsing; the folded prototxt cannot carry
    it, so fold-bn says so, with the line."""
    text = FOLD_NET.replace('top: "conv1"\n        convolution_param',
                            'top: "conv1"\n        my_fork_param { speed: 3 }\n        convolution_param', 1)
    proto = tmp_path / "fork.prototxt"
    proto.write_text(text)
    line = next(i for i, s in enumerate(text.splitlines(), 1) if "my_fork_param" in s)
    rng = np.random.default_rng(1)
    shapes = {"conv1[0]": (4, 3, 3, 3), "conv1[1]": (4,), "bn1[0]": (4,), "bn1[1]": (4,), "bn1[2]": (1,),
              "sc1[0]": (4,), "sc1[1]": (4,), "ip[0]": (5, 256), "ip[1]": (5,), "bn2[0]": (5,), "bn2[1]": (5,),
              "bn2[2]": (1,)}
    w = {k: rng.uniform(0.5, 2, s).astype(np.float32) for k, s in shapes.items()}
    module("caffe").save(tmp_path / "fork.caffemodel", w, template=str(proto))
    code, out, err = run("fold-bn", proto, tmp_path / "fork.caffemodel", "-o", tmp_path / "f")
    assert code == 0, out + err
    assert (f"note: {proto}:{line}: layer[0].my_fork_param is not a Caffe field mapspec knows (a fork's "
            f"extension?); it is left out of the folded prototxt, add it back by hand if your Caffe needs it"
            in out), out
    assert "my_fork_param" not in (tmp_path / "f.prototxt").read_text()
