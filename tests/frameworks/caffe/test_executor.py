"""The Caffe reference executor on whole nets.

* A small hand-written net against the same computation written with torch.nn.functional
  (a different code path: F.batch_norm, F.max_pool2d's own ceil mode, F.linear, ...).
* Blob/layer naming with in-place layers, output selection, ``capture``, TEST-phase
  filtering, legacy V1 nets with blobs inside, a caffemodel written by mapspec's writer.
* Errors a user can cause: clear MapspecError/ConversionError naming the layer or tensor.
* Real fixtures: DenseNet-121 with seeded weights (1x1000x1x1 output, pool1 112 -> 56) and
  against the torchvision-compatible DenseNet with the same weights mapped by hand;
  DenseNet 169, MobileNet v1/v2 with seeded weights; MobileFaceNet with its own
  caffemodel, and filled with the MXNet checkpoint's values against MXNet 1.9.1 itself.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import fixture_file

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

from mapspec.errors import ConversionError, MapspecError  # noqa: E402
from mapspec.frameworks.caffe.executor import CaffeExecutor  # noqa: E402
from mapspec.formats import open_checkpoint, prototxt  # noqa: E402
from mapspec.frameworks.caffe import net as caffe_net  # noqa: E402
from mapspec.frameworks.caffe import schema  # noqa: E402

SMALL = """
name: "small"
input: "data"
input_shape { dim: 2 dim: 3 dim: 11 dim: 11 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 stride: 2 bias_term: false } }
layer { name: "conv1/bn" type: "BatchNorm" bottom: "conv1" top: "conv1/bn" batch_norm_param { eps: 0.001 } }
layer { name: "conv1/scale" type: "Scale" bottom: "conv1/bn" top: "conv1/bn" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1/bn" top: "conv1/bn" }
layer { name: "pool1" type: "Pooling" bottom: "conv1/bn" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 group: 2 } }
layer { name: "prelu2" type: "PReLU" bottom: "conv2" top: "conv2" }
layer { name: "sum" type: "Eltwise" bottom: "conv2" bottom: "pool1" top: "sum" }
layer { name: "drop" type: "Dropout" bottom: "sum" top: "sum" include { phase: TRAIN } }
layer { name: "gap" type: "Pooling" bottom: "sum" top: "gap" pooling_param { pool: AVE global_pooling: true } }
layer { name: "fc" type: "InnerProduct" bottom: "gap" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


def seeded_weights(net, input_shapes=None, seed=0, factor=1.0):
    """Random blobs for every parameter shape the template infers (BN variances positive)."""
    shapes = caffe_net.infer(net, input_shapes)
    types = {layer.name: layer.type for layer in net.layer}
    rng = np.random.default_rng(seed)
    out = {}
    for name, blob_shapes in shapes.params.items():
        for k, s in enumerate(blob_shapes):
            if types[name] == "BatchNorm":
                v = [rng.normal(0, 0.2, s), rng.uniform(0.5, 1.5, s), np.full(s, factor)][k]
                v = v * (factor if k < 2 else 1)
            elif types[name] == "Scale":
                v = rng.uniform(0.5, 1.5, s) if k == 0 else rng.normal(0, 0.1, s)
            elif types[name] in ("Convolution", "InnerProduct") and k == 0:
                fan_in = int(np.prod(s[1:]))
                v = rng.normal(0, np.sqrt(2.0 / fan_in), s)
            else:
                v = rng.normal(0, 0.1, s)
            out[f"{name}[{k}]"] = np.asarray(v, dtype=np.float32)
    return out


@pytest.fixture(scope="module")
def small():
    net = caffe_net.load_net(SMALL)
    w = seeded_weights(net, factor=4.0)
    x = np.random.default_rng(5).standard_normal((2, 3, 11, 11)).astype(np.float32)
    return net, w, x


def small_reference(w, x):
    """The SMALL net written directly with torch.nn.functional."""
    t = {k: torch.from_numpy(v) for k, v in w.items()}
    y = F.conv2d(torch.from_numpy(x), t["conv1[0]"], stride=2)
    f = t["conv1/bn[2]"][0]
    y = F.batch_norm(y, t["conv1/bn[0]"] / f, t["conv1/bn[1]"] / f, t["conv1/scale[0]"], t["conv1/scale[1]"],
                     training=False, eps=0.001)
    y = F.relu(y)
    p = F.max_pool2d(y, 2, 2, ceil_mode=True)  # 5x5 -> 3x3 (Caffe's ceil rounding)
    c = F.prelu(F.conv2d(p, t["conv2[0]"], t["conv2[1]"], padding=1, groups=2), t["prelu2[0]"])
    s = c + p
    fc = F.linear(s.mean(dim=(2, 3)), t["fc[0]"], t["fc[1]"])
    return {"relu_out": y, "pool1": p, "sum": s, "fc": fc, "prob": torch.softmax(fc, 1)}


def test_small_net_matches_functional_torch(small):
    net, w, x = small
    ex = CaffeExecutor(net, w)
    assert ex.input_shapes == {"data": (2, 3, 11, 11)}
    assert ex.output_names == ["prob"]
    out = ex.run({"data": x})
    assert list(out) == ["prob"]
    ref = small_reference(w, x)
    np.testing.assert_allclose(out["prob"], ref["prob"].numpy(), rtol=1e-5, atol=1e-6)
    assert out["prob"].shape == (2, 5)


def test_in_place_layers_capture_and_blob_names(small):
    net, w, x = small
    ex = CaffeExecutor(SMALL, w)
    got = ex.run({"data": x}, capture=True)
    ref = small_reference(w, x)
    # every layer in execution order (the TRAIN-only Dropout is not part of the TEST net)
    assert list(got) == ["conv1", "conv1/bn", "conv1/scale", "relu1", "pool1", "conv2", "prelu2", "sum", "gap",
                         "fc", "prob"]
    # conv1/bn as the BatchNorm layer produced it (before the in-place Scale and ReLU)
    f = w["conv1/bn[2]"][0]
    conv1 = F.conv2d(torch.from_numpy(x), torch.from_numpy(w["conv1[0]"]), stride=2).numpy()
    bn = (conv1 - (w["conv1/bn[0]"] / f)[:, None, None]) / np.sqrt((w["conv1/bn[1]"] / f)[:, None, None] + 0.001)
    np.testing.assert_allclose(got["conv1"], conv1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["conv1/bn"], bn, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got["relu1"], ref["relu_out"].numpy(), rtol=1e-5, atol=1e-5)
    assert (got["conv1/scale"] < 0).any() and not (got["relu1"] < 0).any()
    # asking for the blob gives its final value (after ReLU), asking for a layer gives that layer's output
    sel = ex.run({"data": x}, outputs=["conv1/bn", "conv1/scale", "pool1"])
    np.testing.assert_array_equal(sel["conv1/bn"], got["relu1"])
    np.testing.assert_array_equal(sel["conv1/scale"], got["conv1/scale"])
    np.testing.assert_allclose(sel["pool1"], ref["pool1"].numpy(), rtol=1e-5, atol=1e-5)
    assert list(sel) == ["conv1/bn", "conv1/scale", "pool1"]


def test_in_place_followers(small):
    net, w, _ = small
    ex = CaffeExecutor(net, w)
    assert ex.in_place_followers("conv1/bn") == ["conv1/scale", "relu1"]
    assert ex.in_place_followers("conv1") == []  # conv1/bn writes a new blob
    assert ex.in_place_followers("conv2") == ["prelu2"]
    with pytest.raises(MapspecError, match="no layer named 'relu9'"):
        ex.in_place_followers("relu9")


def test_outputs_run_only_what_they_need(small, monkeypatch):
    net, w, x = small
    ex = CaffeExecutor(net, w)
    ran = []
    orig = ex._call
    monkeypatch.setattr(ex, "_call", lambda step, bottoms: ran.append(step.layer.name) or orig(step, bottoms))
    ex.run({"data": x}, outputs=["pool1"])
    assert ran == ["conv1", "conv1/bn", "conv1/scale", "relu1", "pool1"]


def test_phase_rules_levels_and_stages():
    text = """
    input: "x" input_shape { dim: 1 dim: 2 }
    state { level: 2 stage: "deploy" }
    layer { name: "a" type: "Power" bottom: "x" top: "x" power_param { scale: 2 } include { phase: TRAIN } }
    layer { name: "b" type: "Power" bottom: "x" top: "x" power_param { scale: 3 } include { min_level: 3 } }
    layer { name: "c" type: "Power" bottom: "x" top: "x" power_param { scale: 5 } include { stage: "deploy" } }
    layer { name: "d" type: "Power" bottom: "x" top: "x" power_param { scale: 7 } exclude { not_stage: "test" } }
    layer { name: "e" type: "Power" bottom: "x" top: "x" power_param { scale: 11 } exclude { phase: TRAIN } }
    """
    ex = CaffeExecutor(text, {})
    assert ex.layer_names == ["c", "e"]
    np.testing.assert_allclose(ex.run({"x": np.ones((1, 2))})["x"], np.full((1, 2), 55.0))


def test_v1_net_with_blobs_inside():
    net = schema.NetParameter()
    net.input.append("data")
    net.input_dim.extend([1, 2, 3, 3])
    v1 = net.layers.add()
    v1.name, v1.type = "ip", schema.V1LayerParameter.INNER_PRODUCT
    v1.bottom.append("data")
    v1.top.append("ip")
    v1.inner_product_param.num_output = 2
    w = np.arange(36, dtype=np.float32).reshape(2, 18) / 10
    b = np.array([1.0, -1.0], dtype=np.float32)
    wb, bb = v1.blobs.add(), v1.blobs.add()
    wb.num, wb.channels, wb.height, wb.width = 1, 1, 2, 18  # legacy 4-D blob shapes
    wb.data.extend(w.ravel().tolist())
    bb.num, bb.channels, bb.height, bb.width = 1, 1, 1, 2
    bb.data.extend(b.tolist())
    v2 = net.layers.add()
    v2.name, v2.type = "relu", schema.V1LayerParameter.RELU
    v2.bottom.append("ip")
    v2.top.append("ip")
    ex = CaffeExecutor(net)
    assert ex.input_shapes == {"data": (1, 2, 3, 3)}
    x = np.arange(18, dtype=np.float32).reshape(1, 2, 3, 3) - 9
    np.testing.assert_allclose(ex.run({"data": x})["ip"], np.maximum(x.reshape(1, 18) @ w.T + b, 0), rtol=1e-6)


def test_caffemodel_written_by_mapspec_runs_the_same(small, tmp_path):
    from mapspec.formats import caffe as caffe_format
    from mapspec.formats.base import TensorInfo

    net, w, x = small
    proto = tmp_path / "small.prototxt"
    proto.write_text(SMALL)
    tpl = prototxt.open(str(proto))
    infos = [TensorInfo(n, tuple(w[n].shape), "float32") for n in tpl.names()]
    path = tmp_path / "small.caffemodel"
    writer = caffe_format.create(str(path), infos, template=str(proto))
    for i in infos:
        writer.write(i.name, w[i.name])
    writer.close()
    reader = open_checkpoint(str(path))
    from_file = CaffeExecutor(str(proto), reader).run({"data": x}, capture=True)
    from_dict = CaffeExecutor(net, w).run({"data": x}, capture=True)
    assert list(from_file) == list(from_dict)
    for k in from_dict:
        np.testing.assert_array_equal(from_file[k], from_dict[k])


def test_batch_and_input_shape_override(small):
    net, w, x = small
    ex = CaffeExecutor(net, w, input_shapes={"data": (4, 3, 11, 11)})
    assert ex.input_shapes == {"data": (4, 3, 11, 11)}
    x4 = np.concatenate([x, x[::-1]])
    out = ex.run({"data": x4})["prob"]
    ref = small_reference(w, x)["prob"].numpy()
    np.testing.assert_allclose(out[:2], ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[2:], ref[::-1], rtol=1e-5, atol=1e-6)


# -- errors ----------------------------------------------------------------------------------

def test_missing_and_extra_blobs_are_reported_together(small):
    net, w, _ = small
    bad = dict(w)
    del bad["conv2[1]"]
    bad["fc[2]"] = np.zeros(1, np.float32)
    with pytest.raises(ConversionError) as e:
        CaffeExecutor(net, bad)
    msg = str(e.value)
    assert "layer 'conv2' (Convolution) needs 2 blob(s), the weights have 1 (conv2[0])" in msg
    assert "layer 'fc' (InnerProduct) needs 2 blob(s), the weights have 3" in msg


def test_wrong_blob_shape_names_the_tensor(small):
    net, w, x = small
    bad = dict(w, **{"conv2[0]": np.zeros((4, 4, 3, 3), np.float32)})
    ex = CaffeExecutor(net, bad)
    with pytest.raises(ConversionError) as e:
        ex.run({"data": x})
    assert e.value.tensor == "conv2[0]"
    assert "layer 'conv2' (Convolution): blob 0 (weights) has shape (4, 4, 3, 3) but this layer needs " \
           "(4, 2, 3, 3)" in str(e.value)


def test_user_errors(small):
    net, w, x = small
    with pytest.raises(MapspecError, match="cannot run layer type.*SoftmaxWithLoss.*'loss'"):
        CaffeExecutor(SMALL + 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" '
                      'top: "loss" }', w)
    with pytest.raises(MapspecError, match="layer 'x' .* reads unknown bottom blob 'nope'"):
        CaffeExecutor(SMALL + 'layer { name: "x" type: "ReLU" bottom: "nope" top: "x" }', w)
    ex = CaffeExecutor(net, w)
    with pytest.raises(MapspecError, match="'image' is not an input of this net \\(inputs: data\\)"):
        ex.run({"image": x})
    with pytest.raises(MapspecError, match="input 'data' is missing"):
        ex.run({})
    with pytest.raises(MapspecError, match="no blob or layer named 'conv9'"):
        ex.run({"data": x}, outputs=["conv9"])
    with pytest.raises(ConversionError, match=r"layer 'conv1' \(Convolution\): blob 0 \(weights\) has shape "
                                              r"\(4, 3, 3, 3\) but this layer needs \(4, 2, 3, 3\).*input "
                                              r"shapes: \(2, 2, 11, 11\)"):
        ex.run({"data": x[:, :2]})
    with pytest.raises(MapspecError, match="weights must be a reader"):
        CaffeExecutor(net, [1, 2])
    with pytest.raises(MapspecError, match="'label' is not an input"):
        CaffeExecutor(net, w, input_shapes={"label": (1,)})


# -- real fixtures --------------------------------------------------------------------------------

def _densenet_to_torchvision(w: dict, blocks) -> dict:
    """Caffe DenseNet blob names -> torchvision state dict (by hand, from the two naming schemes)."""
    sd = {}

    def bn(caffe_bn, caffe_scale, prefix):
        f = w[f"{caffe_bn}[2]"][0]
        sd[prefix + "running_mean"] = w[f"{caffe_bn}[0]"] / f
        sd[prefix + "running_var"] = w[f"{caffe_bn}[1]"] / f
        sd[prefix + "weight"] = w[f"{caffe_scale}[0]"]
        sd[prefix + "bias"] = w[f"{caffe_scale}[1]"]

    sd["features.conv0.weight"] = w["conv1[0]"]
    bn("conv1/bn", "conv1/scale", "features.norm0.")
    for b, n in enumerate(blocks, start=1):
        for i in range(1, n + 1):
            c, t = f"conv{b + 1}_{i}", f"features.denseblock{b}.denselayer{i}."
            bn(f"{c}/x1/bn", f"{c}/x1/scale", t + "norm1.")
            sd[t + "conv1.weight"] = w[f"{c}/x1[0]"]
            bn(f"{c}/x2/bn", f"{c}/x2/scale", t + "norm2.")
            sd[t + "conv2.weight"] = w[f"{c}/x2[0]"]
        c = f"conv{b + 1}_blk"
        if b < len(blocks):
            bn(f"{c}/bn", f"{c}/scale", f"features.transition{b}.norm.")
            sd[f"features.transition{b}.conv.weight"] = w[f"{c}[0]"]
        else:
            bn(f"{c}/bn", f"{c}/scale", "features.norm5.")
    sd["classifier.weight"] = w["fc6[0]"].reshape(1000, -1)
    sd["classifier.bias"] = w["fc6[1]"]
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}


@pytest.fixture(scope="module")
def densenet121():
    path = fixture_file("densenet-caffe/DenseNet_121.prototxt")
    net = caffe_net.load_net(str(path))
    w = seeded_weights(net, seed=121, factor=999.982)
    return path, net, w


@pytest.mark.slow
def test_densenet121_runs_with_seeded_weights(densenet121):
    path, net, w = densenet121
    ex = CaffeExecutor(str(path), w)
    assert ex.input_shapes == {"data": (1, 3, 224, 224)}
    assert ex.output_names == ["fc6"]
    x = np.random.default_rng(7).standard_normal((1, 3, 224, 224)).astype(np.float32)
    out = ex.run({"data": x}, capture=True)
    assert out["fc6"].shape == (1, 1000, 1, 1)
    assert np.isfinite(out["fc6"]).all() and out["fc6"].std() > 0
    assert out["pool1"].shape == (1, 64, 56, 56)  # ceil_mode: false (Caffe's default ceil would give 57)
    assert out["concat_2_6"].shape == (1, 256, 56, 56)
    assert out["pool5"].shape == (1, 1024, 1, 1)
    assert len([k for k in out if k in ex.layer_names]) == len(ex.layer_names)


@pytest.mark.slow
def test_densenet121_equals_torchvision_densenet(densenet121):
    from mapspec.models.densenet import densenet121 as tv_densenet121

    path, net, w = densenet121
    model = tv_densenet121().eval()
    missing, unexpected = model.load_state_dict(_densenet_to_torchvision(w, (6, 12, 24, 16)), strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)
    x = np.random.default_rng(8).standard_normal((1, 3, 224, 224)).astype(np.float32)
    ours = CaffeExecutor(str(path), w).run({"data": x})["fc6"].reshape(1, 1000)
    with torch.no_grad():
        theirs = model(torch.from_numpy(x)).numpy()
    scale = np.abs(theirs).max()
    print(f"\nDenseNet-121 caffe executor vs torch: max abs diff {np.abs(ours - theirs).max():.3g} (scale {scale:.3g})")
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4 * scale)


@pytest.mark.slow
def test_densenet169_runs(fixtures_dir):
    path = fixture_file("densenet-caffe/DenseNet_169.prototxt")
    net = caffe_net.load_net(str(path))
    w = seeded_weights(net, seed=169)
    out = CaffeExecutor(net, w, input_shapes={"data": (1, 3, 96, 96)}).run(
        {"data": np.ones((1, 3, 96, 96), np.float32)})
    assert out["fc6"].shape == (1, 1000, 1, 1) and np.isfinite(out["fc6"]).all()


@pytest.mark.parametrize("name", ["mobilenet_deploy.prototxt", "mobilenet_v2_deploy.prototxt"])
def test_mobilenets_run(name):
    path = fixture_file(f"mobilenet-caffe/{name}")
    net = caffe_net.load_net(str(path))
    w = seeded_weights(net, seed=3)
    ex = CaffeExecutor(str(path), w)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    out = ex.run({"data": x}, capture=True)
    final = out[ex.output_names[-1]]
    assert final.size == 1000 and np.isfinite(final).all()
    for layer in net.layer:  # depthwise convolutions ran with group = channels
        if layer.type == "Convolution" and layer.convolution_param.group > 1:
            assert layer.convolution_param.group == out[layer.name].shape[1]


MFN_CAFFE = "mobilefacenet-caffe-thirdparty/mxnet2caffe_mobilefacenet"
MFN_MXNET = "mobilefacenet-mxnet/model_mobilefacenet"


def test_mobilefacenet_thirdparty_caffemodel_runs():
    proto, model = fixture_file(MFN_CAFFE + ".prototxt"), fixture_file(MFN_CAFFE + ".caffemodel")
    ex = CaffeExecutor(str(proto), open_checkpoint(str(model)))
    assert ex.output_names == ["fc1"]
    x = (np.random.default_rng(1).uniform(0, 255, (1, 3, 112, 112)).astype(np.float32) - 127.5) * 0.0078125
    out = ex.run({"data": x}, capture=True)
    assert out["fc1"].shape == (1, 128) and np.isfinite(out["fc1"]).all()
    assert sum(1 for layer in ex.layer_names if layer.endswith("_relu")) == 33  # PReLU layers


def _mobilefacenet_from_mxnet_params(net, params) -> dict:
    """The third-party prototxt filled with the MXNet checkpoint (README: BN mean/var, factor 1, gamma/beta
    into the Scale layers, PReLU gamma, fc1 gamma 1 because of fix_gamma)."""
    w = {}
    names = set(params.names())
    for layer in net.layer:
        n = layer.name
        if layer.type == "Convolution":
            w[f"{n}[0]"] = params.read(f"{n}_weight")
        elif layer.type == "BatchNorm":
            w[f"{n}[0]"] = params.read(f"{n}_moving_mean")
            w[f"{n}[1]"] = params.read(f"{n}_moving_var")
            w[f"{n}[2]"] = np.ones(1, np.float32)
        elif layer.type == "Scale":
            bn = n[: -len("_scale")]
            beta = params.read(f"{bn}_beta")
            w[f"{n}[0]"] = np.ones_like(beta) if bn == "fc1" else params.read(f"{bn}_gamma")
            w[f"{n}[1]"] = beta
        elif layer.type == "PReLU":
            w[f"{n}[0]"] = params.read(f"{n}_gamma")
        elif layer.type == "InnerProduct":
            w[f"{n}[0]"] = params.read(f"{n}_weight")
            w[f"{n}[1]"] = params.read(f"{n}_bias") if f"{n}_bias" in names else None
    return {k: np.asarray(v, np.float32) for k, v in w.items()}


@pytest.mark.slow
@pytest.mark.parametrize("key", ["face", "noise"])
def test_mobilefacenet_filled_from_mxnet_matches_mxnet(mxnet_python, tmp_path, key):
    from mxnet_oracle import run as oracle

    proto = fixture_file(MFN_CAFFE + ".prototxt")
    sym, params = fixture_file(MFN_MXNET + "-symbol.json"), fixture_file(MFN_MXNET + "-0200.params")
    net = caffe_net.load_net(str(proto))
    w = _mobilefacenet_from_mxnet_params(net, open_checkpoint(str(params)))
    if key == "face":
        oracle(mxnet_python, "decode_image.py", fixture_file("images/Aaron_Eckhart_0001.jpg"), tmp_path / "img.npy")
        x = np.load(tmp_path / "img.npy").transpose(2, 0, 1)[None].astype(np.float32)  # RGB, decoded by MXNet
    else:
        x = np.random.default_rng(1234).uniform(0, 255, (1, 3, 112, 112)).astype(np.float32)
    np.savez(tmp_path / "in.npz", data=x)
    oracle(mxnet_python, "forward.py", sym, params, tmp_path / "in.npz", tmp_path / "out.npz")
    theirs = np.load(tmp_path / "out.npz")["fc1_output"]
    # the MXNet graph normalises its input itself (_minus_scalar 127.5, _mul_scalar 0.0078125); the prototxt not
    ours = CaffeExecutor(net, w).run({"data": (x - 127.5) * 0.0078125})["fc1"]
    cos = float((ours.ravel() @ theirs.ravel()) / np.linalg.norm(ours) / np.linalg.norm(theirs))
    err = float(np.abs(ours - theirs).max())
    print(f"\nMobileFaceNet ({key}) caffe executor vs MXNet: max abs error {err:.3g}, cosine {cos:.9f}")
    assert cos >= 0.99999
    assert err <= 1e-3 * float(np.abs(theirs).max())


# -- DenseBlock --------------------------------------------------------------------------------------

def _dense_nets(n: int, c0: int, g: int) -> tuple:
    """A tiny efficient-DenseNet (one DenseBlock, use_BC) and the same block in standard Caffe layers."""
    head = ('input: "data" input_shape { dim: 2 dim: 3 dim: 6 dim: 7 }\n'
            f'layer {{ name: "stem" type: "Convolution" bottom: "data" top: "stem" '
            f'convolution_param {{ num_output: {c0} kernel_size: 3 pad: 1 bias_term: false }} }}\n')
    eff = head + (f'layer {{ name: "block" type: "DenseBlock" bottom: "stem" top: "out" denseblock_param {{ '
                  f'numTransition: {n} initChannel: {c0} growthRate: {g} use_BC: true }} }}\n')
    std, prev = head, "stem"
    for i in range(1, n + 1):
        for k, (num, kernel, pad) in ((1, (4 * g, 1, 0)), (2, (g, 3, 1))):
            src = prev if k == 1 else f"c{i}/x1"
            std += (f'layer {{ name: "c{i}/x{k}/bn" type: "BatchNorm" bottom: "{src}" top: "c{i}/x{k}/bn" }}\n'
                    f'layer {{ name: "c{i}/x{k}/scale" type: "Scale" bottom: "c{i}/x{k}/bn" top: "c{i}/x{k}/bn" '
                    f'scale_param {{ bias_term: true }} }}\n'
                    f'layer {{ name: "r{i}/x{k}" type: "ReLU" bottom: "c{i}/x{k}/bn" top: "c{i}/x{k}/bn" }}\n'
                    f'layer {{ name: "c{i}/x{k}" type: "Convolution" bottom: "c{i}/x{k}/bn" top: "c{i}/x{k}" '
                    f'convolution_param {{ num_output: {num} kernel_size: {kernel} pad: {pad} bias_term: false }} }}\n')
        top = "out" if i == n else f"concat_{i}"
        std += f'layer {{ name: "concat_{i}" type: "Concat" bottom: "{prev}" bottom: "c{i}/x2" top: "{top}" }}\n'
        prev = top
    return eff, std


@pytest.mark.parametrize("mode, factor", [("gpu", 1.0), ("cpu", 2.5)])
def test_dense_block_equals_standard_layers_with_flipped_kernels(mode, factor):
    n, c0, g = 3, 8, 4
    eff, std = _dense_nets(n, c0, g)
    rng = np.random.default_rng(42)
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    w_std = {"stem[0]": f32(rng.normal(0, 0.3, (c0, 3, 3, 3)))}
    w_eff = {"stem[0]": w_std["stem[0]"]}
    for t in range(n):
        i, c = t + 1, c0 + t * g
        for k, (ch, group0) in ((1, (c, 1)), (2, (4 * g, 6))):
            mean, var = f32(rng.normal(0, 0.5, ch) * factor), f32(rng.uniform(0.5, 2, ch) * factor)
            gamma, beta = f32(rng.uniform(0.5, 1.5, ch)), f32(rng.normal(0, 0.2, ch))
            w_std.update({f"c{i}/x{k}/bn[0]": mean, f"c{i}/x{k}/bn[1]": var, f"c{i}/x{k}/bn[2]": f32([factor]),
                          f"c{i}/x{k}/scale[0]": gamma, f"c{i}/x{k}/scale[1]": beta})
            for d, v in enumerate((gamma, beta, mean, var)):
                w_eff[f"block[{(group0 + d) * n + t}]"] = v.reshape(1, ch, 1, 1)
        w1 = f32(rng.normal(0, 0.3, (4 * g, c, 1, 1)))
        w3 = f32(rng.normal(0, 0.2, (g, 4 * g, 3, 3)))
        w_std[f"c{i}/x1[0]"], w_std[f"c{i}/x2[0]"] = w1, w3
        w_eff[f"block[{5 * n + t}]"] = w1
        w_eff[f"block[{t}]"] = np.ascontiguousarray(w3[:, :, ::-1, ::-1])  # DenseBlock convolves, Caffe correlates
    w_eff[f"block[{10 * n}]"] = f32([factor])
    x = rng.standard_normal((2, 3, 6, 7)).astype(np.float32)
    ours = CaffeExecutor(eff, w_eff, dense_block_factor=mode).run({"data": x})["out"]
    ref = CaffeExecutor(std, w_std).run({"data": x})["out"]
    assert ours.shape == ref.shape == (2, c0 + n * g, 6, 7)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    # the layout matches the template mapspec's prototxt reader infers for the block
    shapes = caffe_net.infer(caffe_net.load_net(eff)).params["block"]
    assert [tuple(w_eff[f"block[{k}]"].shape) for k in range(len(shapes))] == [tuple(s) for s in shapes]


def test_dense_block_factor_modes_differ_only_when_factor_is_not_one():
    eff, _ = _dense_nets(2, 4, 2)
    net = caffe_net.load_net(eff)
    w = seeded_weights(net, seed=9)
    for k in (8, 9, 18, 19):  # BN variances (groups 4 and 9 of numTransition 2) must be positive
        w[f"block[{k}]"] = np.abs(w[f"block[{k}]"]) + 0.5
    w["block[20]"] = np.array([4.0], np.float32)
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 7)).astype(np.float32)
    gpu = CaffeExecutor(net, w).run({"data": x})["out"]
    cpu = CaffeExecutor(net, w, dense_block_factor="cpu").run({"data": x})["out"]
    np.testing.assert_array_equal(gpu[:, :4], cpu[:, :4])  # the block's input channels pass through
    assert np.abs(gpu[:, 4:] - cpu[:, 4:]).max() > 1e-3
    with pytest.raises(MapspecError, match="dense_block_factor must be one of gpu, cpu"):
        CaffeExecutor(net, w, dense_block_factor="both")


# -- hostile parameters ---------------------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_EDGE_INTS = st.sampled_from([0, 1, 2, 3, 5, 17, 1000, 2**20, 2**31 - 1])
_FIELDS = [  # (layer, param message, field, repeated?)
    ("conv1", "convolution_param", "kernel_size", True), ("conv1", "convolution_param", "stride", True),
    ("conv1", "convolution_param", "pad", True), ("conv1", "convolution_param", "dilation", True),
    ("conv1", "convolution_param", "num_output", False), ("conv2", "convolution_param", "group", False),
    ("conv2", "convolution_param", "kernel_h", False), ("pool1", "pooling_param", "kernel_size", False),
    ("pool1", "pooling_param", "stride", False), ("pool1", "pooling_param", "pad", False),
    ("pool1", "pooling_param", "pad_w", False), ("fc", "inner_product_param", "num_output", False),
    ("gap", "pooling_param", "stride", False), ("conv1/scale", "scale_param", "num_axes", False),
]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.sampled_from(_FIELDS), _EDGE_INTS), min_size=1, max_size=3),
       axis=st.integers(-6, 6))
def test_hostile_parameters_give_mapspec_errors_only(small, edits, axis):
    """Absurd or inconsistent layer parameters: a MapspecError naming the layer, never another
    exception, never a huge allocation."""
    net0, w, x = small
    net = schema.NetParameter()
    net.CopyFrom(net0)
    layers = {layer.name: layer for layer in net.layer}
    for (name, msg, field, repeated), value in edits:
        p = getattr(layers[name], msg)
        if repeated:
            getattr(p, field).append(value)
        elif field == "num_axes":
            setattr(p, field, value - 2)
        else:
            setattr(p, field, value)
    layers["prob"].softmax_param.axis = axis
    try:
        CaffeExecutor(net, w).run({"data": x})
    except MapspecError as e:
        assert "layer '" in str(e) or "the weights do not fit" in str(e)
