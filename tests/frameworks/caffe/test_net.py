"""Caffe nets as graphs: loading, phase filtering, shape inference and its errors (mapspec.frameworks.caffe.net)."""

from __future__ import annotations

import pytest

from mapspec.errors import FormatError
from mapspec.frameworks.caffe import net as cn


def test_pooling_rounding_modes():
    def pooled(extra, size=5):
        text = (f'input: "x" input_shape {{ dim: 1 dim: 1 dim: {size} dim: {size} }}\n'
                f'layer {{ name: "p" type: "Pooling" bottom: "x" top: "p" pooling_param {{ {extra} }} }}')
        return cn.infer(cn.load_net(text)).blobs["p"][2]

    assert pooled("kernel_size: 2 stride: 2") == 3  # ceil(3 / 2) + 1
    assert pooled("kernel_size: 2 stride: 2 round_mode: FLOOR") == 2
    assert pooled("kernel_size: 2 stride: 2 ceil_mode: false") == 2
    assert pooled("kernel_size: 2 stride: 2 ceil_mode: true") == 3
    assert pooled("kernel_size: 2 stride: 2 pad: 1") == 3  # 4, minus the window starting in the padding
    assert pooled("kernel_size: 3 stride: 2 pad: 1", size=6) == 4  # ceil(5/2)+1 = 4; (4-1)*2 = 6 < 6+1
    assert pooled("global_pooling: true", size=7) == 1
    with pytest.raises(FormatError, match="global_pooling"):
        pooled("global_pooling: true kernel_size: 2")


def test_denseblock_without_bc():
    text = ('input: "x" input_shape { dim: 1 dim: 5 dim: 4 dim: 4 }\n'
            'layer { name: "d" type: "DenseBlock" bottom: "x" top: "y" '
            'denseblock_param { numTransition: 2 initChannel: 5 growthRate: 3 } }')
    s = cn.infer(cn.load_net(text))
    assert s.params["d"] == [(3, 5, 3, 3), (3, 8, 3, 3), (1, 5, 1, 1), (1, 8, 1, 1), (1, 5, 1, 1), (1, 8, 1, 1),
                             (1, 5, 1, 1), (1, 8, 1, 1), (1, 5, 1, 1), (1, 8, 1, 1), (1,)]
    assert s.blobs["y"] == (1, 11, 4, 4)


def test_unknown_layer_type_names_layer_and_type():
    text = ('input: "x" input_shape { dim: 1 dim: 3 dim: 4 dim: 4 }\n'
            'layer { name: "weird1" type: "FancyNorm" bottom: "x" top: "y" }')
    with pytest.raises(FormatError, match=r"layer 0 'weird1' \(FancyNorm\).*'FancyNorm'"):
        cn.infer(cn.load_net(text))


@pytest.mark.parametrize("text, match", [
    ('layer { name: "a" type: "ReLU" bottom: "nowhere" top: "b" }', "not produced by any earlier layer"),
    ('layer { name: "a" type: "ReLU" ', "not a valid Caffe prototxt"),
    ('layer { name: "a" type: 3 }', "not a valid Caffe prototxt"),
    ('layer { name: "p" pooling_param { pool: MEDIAN } }', "not a valid Caffe prototxt"),
    ('input: "x" input_shape { dim: 1 dim: 3 dim: 4 dim: 4 }\nlayer { name: "c" type: "Convolution" '
     'bottom: "x" top: "c" convolution_param { num_output: 4 kernel_size: 1 group: 2 } }', "group 2 must divide"),
    ('input: "x" input_shape { dim: 1 dim: 3 dim: 4 dim: 4 }\nlayer { name: "c" type: "Convolution" '
     'bottom: "x" top: "c" convolution_param { num_output: 4 kernel_size: 9 } }', "leaves no output"),
    ('input: "x" input_shape { dim: 1 dim: 3 dim: 4 dim: 4 }\nlayer { name: "c" type: "Concat" '
     'bottom: "x" bottom: "y" top: "c" }', "not produced"),
    ('input: "x" input_dim: 1 input_dim: 3', "4 per input"),
])
def test_bad_nets_are_format_errors(text, match):
    with pytest.raises(FormatError, match=match):
        cn.infer(cn.load_net(text))


def test_phase_filtering():
    text = ('input: "x" input_shape { dim: 1 dim: 3 dim: 4 dim: 4 }\n'
            'layer { name: "train_only" type: "Convolution" bottom: "x" top: "y" include { phase: TRAIN } '
            'convolution_param { num_output: 2 kernel_size: 1 } }\n'
            'layer { name: "test_only" type: "Convolution" bottom: "x" top: "y" include { phase: TEST } '
            'convolution_param { num_output: 5 kernel_size: 1 } }\n'
            'layer { name: "not_test" type: "Convolution" bottom: "x" top: "z" exclude { phase: TEST } '
            'convolution_param { num_output: 7 kernel_size: 1 } }')
    s = cn.infer(cn.load_net(text))
    assert list(s.params) == ["test_only"] and s.blobs["y"] == (1, 5, 4, 4)
