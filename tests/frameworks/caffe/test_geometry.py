"""One rule per Caffe layer fact: the template reader and the executor read a net the same way.

Each case here is one where the reader (formats/caffe_layers) and the executor (frameworks/caffe/ops)
used to carry their own copy of a rule and disagreed; now both call mapspec.frameworks.caffe.geometry.
"""

from __future__ import annotations

import numpy as np
import pytest

from mapspec.errors import FormatError, MapspecError
from mapspec.formats import prototxt as pt
from mapspec.frameworks.caffe import net as cn
from mapspec.frameworks.caffe import schema
from mapspec.frameworks.caffe.geometry import ShapeError, conv_geometry, pool_geometry, pooled_size

torch = pytest.importorskip("torch")
from mapspec.frameworks.caffe.executor import CaffeExecutor  # noqa: E402

HEAD = 'input: "x" input_shape { dim: 1 dim: 2 dim: 6 dim: 6 }\n'


def pool_net(params: str) -> str:
    return HEAD + ('layer { name: "p" type: "Pooling" bottom: "x" top: "p" pooling_param { pool: MAX kernel_size: 3 '
                   f'stride: 2 {params} }} }}')


def reader_height(text: str) -> int:
    return pt.open(text).shapes().blobs["p"][2]


def executor_height(text: str) -> int:
    x = np.arange(72, dtype=np.float32).reshape(1, 2, 6, 6)
    return CaffeExecutor(text, {}).run({"x": x})["p"].shape[2]


# 6 + 0 - 3 = 3 over stride 2: 1.5, so FLOOR gives 1 + 1 = 2 rows and CEIL 2 + 1 = 3 (pooling_layer.cpp)
@pytest.mark.parametrize("params, rows", [
    ("", 3),  # BVLC's default round_mode CEIL
    ("round_mode: FLOOR", 2),
    ("round_mode: CEIL", 3),
    ("ceil_mode: false", 2),  # the forks' field
    ("ceil_mode: true", 3),
    ("round_mode: FLOOR ceil_mode: false", 2),  # both given, same meaning
    ("round_mode: CEIL ceil_mode: true", 3),
])
def test_pooling_rounding_one_rule(params, rows):
    text = pool_net(params)
    assert reader_height(text) == rows
    assert executor_height(text) == rows


@pytest.mark.parametrize("params", ["round_mode: CEIL ceil_mode: false", "round_mode: FLOOR ceil_mode: true"])
def test_pooling_rounding_conflict_refused_by_reader_and_executor(params):
    """The twins disagreed here: the reader let ceil_mode win, the executor refused the layer."""
    text = pool_net(params)
    with pytest.raises(FormatError, match=r"layer 0 'p' \(Pooling\): round_mode and ceil_mode disagree"):
        reader_height(text)
    with pytest.raises(MapspecError, match=r"layer 'p' \(Pooling\): round_mode and ceil_mode disagree"):
        executor_height(text)


@pytest.mark.parametrize("layer, match", [
    # The reader let the legacy field win; Caffe (and the executor) refuse both at once.
    ('layer { name: "s" type: "Slice" bottom: "x" top: "a" top: "b" slice_param { axis: 1 slice_dim: 1 } }',
     "either axis or slice_dim"),
    ('layer { name: "c" type: "Concat" bottom: "x" bottom: "x" top: "c" concat_param { axis: 1 concat_dim: 1 } }',
     "either axis or concat_dim"),
])
def test_legacy_axis_and_axis_refused_by_both(layer, match):
    text = HEAD + layer
    with pytest.raises(FormatError, match=match):
        cn.infer(cn.load_net(text))
    with pytest.raises(MapspecError, match=match):
        CaffeExecutor(text, {}).run({"x": np.zeros((1, 2, 6, 6), np.float32)})


def test_reader_and_executor_agree_on_conv_and_pool_shapes():
    """Shapes the reader infers are the shapes the executor produces, through padded/dilated/strided
    convolutions and a padded ceil-rounded pooling whose last window is clipped (Caffe's pad correction)."""
    text = ('input: "x" input_shape { dim: 1 dim: 2 dim: 13 dim: 11 }\n'
            'layer { name: "c" type: "Convolution" bottom: "x" top: "c" convolution_param { num_output: 4 '
            'kernel_h: 3 kernel_w: 2 stride: 2 pad_h: 2 dilation: 2 } }\n'
            'layer { name: "d" type: "Deconvolution" bottom: "c" top: "d" convolution_param { num_output: 2 '
            'kernel_size: 3 stride: 2 pad: 1 } }\n'
            'layer { name: "p" type: "Pooling" bottom: "d" top: "p" pooling_param { pool: AVE kernel_size: 3 '
            'stride: 2 pad: 1 } }\n')
    shapes = cn.infer(cn.load_net(text))
    rng = np.random.default_rng(0)
    weights = {f"{n}[{k}]": rng.standard_normal(s).astype(np.float32) for n, ss in shapes.params.items()
               for k, s in enumerate(ss)}
    out = CaffeExecutor(text, weights).run({"x": np.zeros((1, 2, 13, 11), np.float32)}, outputs=["c", "d", "p"])
    assert {k: v.shape for k, v in out.items()} == {k: shapes.blobs[k] for k in ("c", "d", "p")}
    # by hand (base_conv_layer.cpp, deconv_layer.cpp, pooling_layer.cpp):
    # c: H (13 + 4 - 5) // 2 + 1 = 7, W (11 + 0 - 3) // 2 + 1 = 5; d: 2 * (7 - 1) + 3 - 2 = 13, 2 * 4 + 1 = 9
    # p: ceil((13 + 2 - 3) / 2) + 1 = 7 (last window starts at 12 < 13 + 1), ceil((9 + 2 - 3) / 2) + 1 = 5
    assert shapes.blobs["c"] == (1, 4, 7, 5) and shapes.blobs["d"] == (1, 2, 13, 9)
    assert shapes.blobs["p"] == (1, 2, 7, 5)


def test_geometry_functions_by_hand():
    conv = schema.message_class("ConvolutionParameter")(kernel_size=[3], stride=[2], pad=[1])
    assert tuple(conv_geometry(conv)) == ((3, 3), (2, 2), (1, 1), (1, 1))
    assert conv_geometry(conv, 3).kernel == (3, 3, 3)
    with pytest.raises(ShapeError, match="either kernel_size or kernel_h/w"):
        conv_geometry(schema.message_class("ConvolutionParameter")(kernel_size=[3], kernel_h=3, kernel_w=3))
    pool = schema.message_class("PoolingParameter")(global_pooling=True)
    assert pool_geometry(pool).kernel is None and pool_geometry(pool, (7, 5)).kernel == (7, 5)
    # pad correction: 5 + 2 - 2 = 5 over 2 -> ceil 3, + 1 = 4; the 4th window would start at 6 >= 5 + 1
    assert pooled_size(5, 2, 2, 1, ceil=True) == 3
    with pytest.raises(ShapeError, match="smaller than the pooling window"):
        pooled_size(2, 5, 1, 0, ceil=False)

