"""Caffe prototxt templates: parsing, V1 upgrade, shape inference against independent arithmetic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import fixture_file
from mapspec.errors import FormatError, MapspecError
from mapspec.formats import open_checkpoint
from mapspec.formats import prototxt as pt
from mapspec.frameworks.caffe import net as cn

DATA = Path(__file__).resolve().parents[1] / "data" / "caffe"


def numel(shape):
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


def shapes_of(reader):
    return {k: v.shape for k, v in reader.infos().items()}


# -- DenseNet --------------------------------------------------------------------------------------

DENSENETS = {  # depth -> (initial features, growth rate, layers per block); torchvision's table
    "121": (64, 32, (6, 12, 24, 16)),
    "161": (96, 48, (6, 12, 36, 24)),
    "169": (64, 32, (6, 12, 32, 32)),
    "201": (64, 32, (6, 12, 48, 32)),
}


def expected_densenet(depth: str, classes: int = 1000) -> dict:
    """shicai DenseNet blob shapes by torchvision-style arithmetic (bn_size 4, compression 0.5).

    shicai's DenseNet-201 names its transitions convB_N/blk (N = last layer of block B) where
    the others say convB_blk.
    """
    init, g, blocks = DENSENETS[depth]
    out = {}

    def bn(name, c):
        out.update({f"{name}/bn[0]": (c,), f"{name}/bn[1]": (c,), f"{name}/bn[2]": (1,),
                    f"{name}/scale[0]": (c,), f"{name}/scale[1]": (c,)})

    out["conv1[0]"] = (init, 3, 7, 7)
    bn("conv1", init)
    c = init
    for b, n in enumerate(blocks, start=2):
        for l in range(1, n + 1):
            bn(f"conv{b}_{l}/x1", c)
            out[f"conv{b}_{l}/x1[0]"] = (4 * g, c, 1, 1)
            bn(f"conv{b}_{l}/x2", 4 * g)
            out[f"conv{b}_{l}/x2[0]"] = (g, 4 * g, 3, 3)
            c += g
        blk = f"conv{b}_{n}/blk" if depth == "201" else f"conv{b}_blk"
        bn(blk, c)
        if b < 5:
            out[f"{blk}[0]"] = (c // 2, c, 1, 1)
            c //= 2
    out["fc6[0]"] = (classes, c, 1, 1)
    out["fc6[1]"] = (classes,)
    return out


def test_densenet121_blob_totals():
    r = pt.open(str(fixture_file("densenet-caffe/DenseNet_121.prototxt")))
    by_type: dict = {}
    for info in r.infos().values():
        by_type[info.meta["type"]] = by_type.get(info.meta["type"], 0) + info.numel
    assert by_type["Convolution"] + by_type["Scale"] == 7_978_856
    assert by_type["BatchNorm"] == 83_769
    bn = [i for i in r.infos().values() if i.meta["type"] == "BatchNorm"]
    factors = [i for i in bn if i.meta["blob"] == 2]
    assert len(factors) == 121 and all(i.shape == (1,) for i in factors)
    assert sum(i.numel for i in bn if i.meta["blob"] in (0, 1)) == 2 * 41_824
    assert set(by_type) == {"Convolution", "BatchNorm", "Scale"}


@pytest.mark.parametrize("depth", sorted(DENSENETS))
def test_densenet_templates_match_torchvision_arithmetic(depth):
    r = pt.open(str(fixture_file(f"densenet-caffe/DenseNet_{depth}.prototxt")))
    got = shapes_of(r)
    want = expected_densenet(depth)
    assert set(got) == set(want)
    assert got == want
    s = r.shapes()
    assert s.blobs["fc6"] == (1, 1000, 1, 1)
    # the stem: 224 -> conv 7/2 pad 3 -> 112 -> max pool 3/2 pad 1 with ceil_mode false -> 56
    assert s.blobs["pool1"] == (1, init_of(depth), 56, 56)
    assert r.attrs("pool1")["round_mode"] == "FLOOR"


def init_of(depth):
    return DENSENETS[depth][0]


# -- MobileNet ------------------------------------------------------------------------------------

def conv_shapes(reader):
    return [v.shape for k, v in reader.infos().items() if v.meta["type"] == "Convolution" and v.meta["blob"] == 0]


def test_mobilenet_v1_template():
    r = pt.open(str(fixture_file("mobilenet-caffe/mobilenet_deploy.prototxt")))
    # (out channels, stride) of the 13 depthwise-separable blocks (Howard et al. 2017, table 1)
    blocks = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    want = [(32, 3, 3, 3)]
    c = 32
    for out, _ in blocks:
        want += [(c, 1, 3, 3), (out, c, 1, 1)]
        c = out
    want.append((1000, 1024, 1, 1))
    assert conv_shapes(r) == want
    s = r.shapes()
    side = 224 // 2
    for _, stride in blocks:
        side //= stride
    assert side == 7
    assert s.blobs["prob"] == (1, 1000, 1, 1)
    dw = [l for l in r.net().layer if l.type == "Convolution" and l.convolution_param.group > 1]
    assert all(r.attrs(l.name)["group"] == r.attrs(l.name)["num_output"] for l in dw) and len(dw) == 13


def test_mobilenet_v2_template():
    r = pt.open(str(fixture_file("mobilenet-caffe/mobilenet_v2_deploy.prototxt")))
    # inverted residual settings (t, c, n, s) of Sandler et al. 2018, table 2
    settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1)]
    want = [(32, 3, 3, 3)]
    c = 32
    for t, out, n, _ in settings:
        for _ in range(n):
            hidden = c * t
            want += [(hidden, c, 1, 1), (hidden, 1, 3, 3), (out, hidden, 1, 1)]
            c = out
    want += [(1280, 320, 1, 1), (1000, 1280, 1, 1)]
    assert conv_shapes(r) == want
    assert r.shapes().blobs["prob"] == (1, 1000, 1, 1)


# -- MobileFaceNet --------------------------------------------------------------------------------

def test_mobilefacenet_prototxt_attrs():
    r = open_checkpoint(str(fixture_file("mobilefacenet-caffe-thirdparty/mxnet2caffe_mobilefacenet.prototxt")))
    assert r.format == "prototxt" and not r.has_data
    assert r.attrs("fc1")["eps"] == pytest.approx(2e-5) and r.attrs("conv_1_batchnorm")["eps"] == 1e-3
    assert r.attrs("conv_1_relu")["channel_shared"] is False
    assert r.info("conv_1_relu[0]").shape == (64,)
    assert r.info("pre_fc1[0]").shape == (128, 512)
    assert r.shapes().blobs["fc1"] == (1, 128)
    with pytest.raises(FormatError, match="holds no values"):
        r.read("pre_fc1[0]")


# -- hand-written nets --------------------------------------------------------------------------------

def test_v1_net_is_upgraded():
    r = pt.open(str(DATA / "tiny_v1.prototxt"))
    net = r.net()
    assert len(net.layers) == 0
    assert [l.type for l in net.layer] == ["Convolution", "ReLU", "Pooling", "InnerProduct", "Softmax"]
    assert [p.lr_mult for p in net.layer[0].param] == [1, 2]
    # 8x8 -> conv 3 pad 1 -> 8x8 -> max pool 3/2 (ceil) -> ceil(5/2)+1 = 4
    assert shapes_of(r) == {"conv1[0]": (4, 3, 3, 3), "conv1[1]": (4,), "ip1[0]": (5, 4 * 4 * 4), "ip1[1]": (5,)}
    assert r.info("conv1[0]").meta == {"layer": "conv1", "type": "Convolution", "blob": 0}


def test_tiny_net_shapes_by_hand():
    s = pt.open(str(DATA / "tiny_net.prototxt")).shapes()
    b = s.blobs
    assert b["conv1"] == (2, 6, 5, 5)  # (9 + 2 - 3) // 2 + 1
    assert b["pool1"] == (2, 6, 3, 3)  # ceil((5 + 2 - 2) / 2) + 1 = 4, clipped to 3: window 3 would start in the pad
    assert b["conv2"] == (2, 6, 3, 3)  # h: (3 + 4 - 5) + 1, w: 3 - 1 + 1 (dilation 2, kernel 3x1)
    assert b["deconv"] == (2, 4, 6, 6)  # 2 * (3 - 1) + 2
    assert b["pool2"] == (2, 4, 4, 4)  # ceil((6 + 2 - 3) / 2) + 1, not clipped
    assert (b["s1"], b["s2"]) == ((2, 1, 4, 4), (2, 3, 4, 4))
    assert b["reshape"] == (2, 2, 2) and b["gpool"] == (2, 6, 1, 1)
    assert s.params["conv1"] == [(6, 2, 3, 3), (6,)]
    assert s.params["deconv"] == [(12, 2, 2, 2), (4,)]  # (C_in, num_output / group, k, k)
    assert s.params["relu1"] == [(6,)]
    assert s.params["scale2"] == [(2, 3)]  # two-bottom Scale: only the bias, shaped like the operand
    assert s.params["fc2"] == [(5, 4), (4,)]  # transpose: (K, N)


def test_denseblock_shapes_match_standard_densenet_layers():
    """The seed's mapping: efficient blob k*T + (j-1) takes the values of standard layer conv_j/..."""
    r = pt.open(str(DATA / "denseblock.prototxt"))
    t, c0, g = 3, 8, 4
    got = shapes_of(r)
    blobs = [got[f"denseblock1[{i}]"] for i in range(10 * t + 1)]
    assert f"denseblock1[{10 * t + 1}]" not in got
    for j in range(t):
        c = c0 + j * g
        standard = {0: (g, 4 * g, 3, 3), 1: (c,), 2: (c,), 3: (c,), 4: (c,), 5: (4 * g, c, 1, 1),
                    6: (4 * g,), 7: (4 * g,), 8: (4 * g,), 9: (4 * g,)}
        for k, shape in standard.items():
            assert numel(blobs[k * t + j]) == numel(shape), (k, j)
    assert blobs[10 * t] == (1,)
    assert r.shapes().blobs["block1"] == (1, c0 + t * g, 16, 16)
    assert r.attrs("denseblock1")["growthRate"] == 4 and r.attrs("denseblock1")["use_BC"] is True


# -- options, errors, round trips ---------------------------------------------------------------------

def test_input_shape_option_overrides():
    r = pt.open(str(fixture_file("densenet-caffe/DenseNet_121.prototxt")), input_shape=[2, 3, 320, 320])
    assert r.shapes().blobs["fc6"] == (2, 1000, 1, 1)
    assert r.shapes().blobs["pool1"] == (2, 64, 80, 80)
    r = open_checkpoint(str(DATA / "tiny_net.prototxt"), input_shapes={"data": [1, 4, 17, 17]})
    assert r.shapes().blobs["conv1"] == (1, 6, 9, 9)
    with pytest.raises(MapspecError, match="not an input"):
        pt.open(str(DATA / "tiny_net.prototxt"), input_shapes={"conv1": [1, 2]}).infos()
    with pytest.raises(MapspecError, match="positive integer"):
        pt.open(str(DATA / "tiny_net.prototxt"), input_shape=[1, -4, 9, 9]).infos()


def test_missing_input_shape_is_explained():
    r = pt.open(str(DATA / "tiny_v1.prototxt"))
    assert len(r.infos()) == 4
    text = 'input: "data"\nlayer { name: "c" type: "Convolution" bottom: "data" top: "c" ' \
           'convolution_param { num_output: 2 kernel_size: 1 } }'
    with pytest.raises(FormatError, match=r"input_shape=\[N, C, H, W\]"):
        pt.open(text).infos()
    assert len(pt.open(text, input_shape=[1, 3, 4, 4]).infos()) == 2


def test_unknown_fields_are_skipped_and_reported(tmp_path):
    p = tmp_path / "odd.prototxt"
    p.write_text('input: "x" input_shape { dim: 1 dim: 2 dim: 4 dim: 4 }\n'
                 'layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x" batch_norm_param { eps: 0.01 '
                 'frozen: true } bn_param { momentum: 0.9 slope_filler { type: "constant" } } }\n'
                 'some_net_option: "yes"\n')
    r = pt.open(str(p))
    assert r.attrs("bn")["unknown_fields"] == ["batch_norm_param.frozen", "bn_param"]
    assert r.attrs("bn")["eps"] == 0.01
    assert [u.path for u in r.unknown_fields()] == ["layer[0].batch_norm_param.frozen", "layer[0].bn_param",
                                                   "some_net_option"]
    assert r.unknown_fields()[0].line == 2
    assert shapes_of(r) == {"bn[0]": (2,), "bn[1]": (2,), "bn[2]": (1,)}


def test_dump_round_trips(tmp_path):
    net = cn.load_net(str(fixture_file("densenet-caffe/DenseNet_121.prototxt")))
    text = cn.dump(net)
    again = cn.load_net(text)
    assert again == net
    assert "ceil_mode: false" in text  # the fork's field keeps its name
    p = tmp_path / "v1.prototxt"
    p.write_text(cn.dump(cn.load_net(str(DATA / "tiny_v1.prototxt"))))
    assert shapes_of(pt.open(str(p))) == shapes_of(pt.open(str(DATA / "tiny_v1.prototxt")))


def test_create_refuses():
    with pytest.raises(MapspecError, match="format caffe"):
        pt.create("x.prototxt", [])


def test_attrs_have_caffe_defaults():
    r = pt.open(str(DATA / "tiny_net.prototxt"))
    conv2 = r.attrs("conv2")
    assert (conv2["group"], conv2["bias_term"], conv2["kernel"], conv2["pad"], conv2["stride"], conv2["dilation"]) \
        == (1, False, [3, 1], [2, 0], [1, 1], [2, 2])
    assert r.attrs("conv1")["bias_term"] is True and r.attrs("conv1")["group"] == 2
    assert {k: r.attrs("conv1/scale")[k] for k in ("axis", "num_axes", "bias_term")} == \
        {"axis": 1, "num_axes": 1, "bias_term": True}
    assert r.attrs("bias2")["axis"] == 1 and r.attrs("relu1")["channel_shared"] is False
    bn = r.attrs("conv1/bn")
    assert (bn["eps"], bn["use_global_stats"], bn["moving_average_fraction"]) == (0.001, True, 0.999)
    assert r.attrs("prod")["coeff"] == [1.0, 1.0] and r.attrs("sum")["coeff"] == [0.5, -2.0]
    assert r.attrs("sum")["operation"] == "SUM" and r.attrs("lrn2")["norm_region"] == "WITHIN_CHANNEL"
    fc = r.attrs("fc")
    assert (fc["num_output"], fc["bias_term"], fc["axis"], fc["transpose"]) == (5, True, 1, False)
    assert r.attrs("pool2")["pool"] == "AVE" and r.attrs("pool2")["round_mode"] == "CEIL"
    assert r.attrs("gpool")["global_pooling"] is True and r.attrs("gpool")["kernel"] is None
    assert r.attrs("nope") == {} and r.nodes()[:3] == ["data", "conv1", "conv1/bn"]
