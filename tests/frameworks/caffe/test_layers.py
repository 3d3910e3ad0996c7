"""Shape rules of single Caffe layers against hand-computed Caffe arithmetic, and prototxt loading details.

Every expected shape below is worked out by hand from the formula in the named Caffe source
(comments show the arithmetic), not by calling the code under test.
"""

from __future__ import annotations

import pytest

from mapspec.errors import FormatError
from mapspec.formats import prototxt as pt
from mapspec.frameworks.caffe import net as cn
from mapspec.frameworks.caffe import schema


def one_layer(input_shape, layer: str, tops=("y",)):
    """(top shapes, param shapes) of one layer fed by input blob ``x`` of ``input_shape``."""
    dims = " ".join(f"dim: {d}" for d in input_shape)
    text = f'input: "x" input_shape {{ {dims} }}\nlayer {{ name: "L" bottom: "x" {layer} }}'
    s = cn.infer(cn.load_net(text))
    return [s.blobs[t] for t in tops], s.params.get("L", [])


@pytest.mark.parametrize("shape, layer, tops, params", [
    # conv_layer.cpp compute_output_shape: (in + 2*pad - (dil*(k-1)+1)) / stride + 1
    ((1, 2, 5, 6, 7), 'type: "Convolution" top: "y" convolution_param { num_output: 4 kernel_size: 3 pad: 1 '
     'stride: 2 }', [(1, 4, 3, 3, 4)], [(4, 2, 3, 3, 3), (4,)]),  # (5+2-3)//2+1=3, (6-1)//2+1=3, (7-1)//2+1=4
    ((1, 3, 7, 7), 'type: "Convolution" top: "y" convolution_param { num_output: 2 kernel_size: 3 dilation: 2 '
     'bias_term: false }', [(1, 2, 3, 3)], [(2, 3, 3, 3)]),  # extent 5: 7-5+1 = 3
    ((1, 4, 6, 8), 'type: "Convolution" top: "y" convolution_param { num_output: 6 kernel_size: 3 kernel_size: 1 '
     'stride: 1 stride: 2 group: 2 }', [(1, 6, 4, 4)], [(6, 2, 3, 1), (6,)]),  # h 6-3+1=4; w (8-1)//2+1=4
    ((2, 3, 4), 'type: "Convolution" top: "y" convolution_param { num_output: 5 kernel_size: 2 axis: 1 }',
     [(2, 5, 3)], [(5, 3, 2), (5,)]),  # 1-D: 4-2+1 = 3
    # deconv_layer.cpp: stride*(in-1) + dil*(k-1)+1 - 2*pad
    ((1, 4, 3, 3), 'type: "Deconvolution" top: "y" convolution_param { num_output: 2 kernel_size: 3 stride: 2 '
     'pad: 1 dilation: 2 }', [(1, 2, 7, 7)], [(4, 2, 3, 3), (2,)]),  # 2*2 + 5 - 2 = 7
    # inner_product_layer.cpp: K = count(axis), top = shape[:axis] + [N]
    ((2, 3, 4, 5), 'type: "InnerProduct" top: "y" inner_product_param { num_output: 7 axis: 2 }',
     [(2, 3, 7)], [(7, 20), (7,)]),
    ((2, 3, 4, 5), 'type: "InnerProduct" top: "y" inner_product_param { num_output: 7 axis: -1 bias_term: false '
     'transpose: true }', [(2, 3, 4, 7)], [(5, 7)]),
    # embed_layer.cpp: weight (input_dim, num_output), top = bottom shape + [num_output]
    ((2, 5), 'type: "Embed" top: "y" embed_param { num_output: 7 input_dim: 10 }', [(2, 5, 7)], [(10, 7), (7,)]),
    ((3,), 'type: "Embed" top: "y" embed_param { num_output: 4 input_dim: 9 bias_term: false }', [(3, 4)],
     [(9, 4)]),
    # scale_layer.cpp / bias_layer.cpp, one bottom: shape[axis : axis + num_axes]
    ((2, 3, 4, 5), 'type: "Scale" top: "y" scale_param { num_axes: -1 bias_term: true }', [(2, 3, 4, 5)],
     [(3, 4, 5), (3, 4, 5)]),
    ((2, 3, 4, 5), 'type: "Scale" top: "y" scale_param { num_axes: 0 }', [(2, 3, 4, 5)], [()]),
    ((2, 3, 4, 5), 'type: "Scale" top: "y" scale_param { axis: -1 }', [(2, 3, 4, 5)], [(5,)]),
    ((2, 3, 4, 5), 'type: "Scale" top: "y" scale_param { axis: 0 num_axes: 2 }', [(2, 3, 4, 5)], [(2, 3)]),
    ((2, 3, 4, 5), 'type: "Bias" top: "y" bias_param { axis: 2 num_axes: 2 }', [(2, 3, 4, 5)], [(4, 5)]),
    # prelu_layer.cpp: channel_shared -> a 0-axis blob, else (C,)
    ((2, 3, 4, 5), 'type: "PReLU" top: "y" prelu_param { channel_shared: true }', [(2, 3, 4, 5)], [()]),
    ((2, 3, 4, 5), 'type: "PReLU" top: "y"', [(2, 3, 4, 5)], [(3,)]),
    # batch_norm_layer.cpp: mean (C), variance (C), moving-average factor (1)
    ((2, 3, 4, 5), 'type: "BatchNorm" top: "y"', [(2, 3, 4, 5)], [(3,), (3,), (1,)]),
    ((6,), 'type: "BatchNorm" top: "y"', [(6,)], [(1,), (1,), (1,)]),  # 1-axis input: channels_ = 1
    # pooling_layer.cpp with kernel_h/w, stride_h/w, pad_h/w: H ceil((7+2-3)/2)+1 = 4 (3*2=6 < 7+1 kept);
    # W ceil((9+0-2)/3)+1 = 4, then clipped because the layer has padding (on H): 3*3 = 9 >= 9+0 -> 3
    ((1, 2, 7, 9), 'type: "Pooling" top: "y" pooling_param { kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 3 '
     'pad_h: 1 pad_w: 0 }', [(1, 2, 4, 3)], []),
    # the same W without any padding keeps its 4
    ((1, 2, 7, 9), 'type: "Pooling" top: "y" pooling_param { kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 3 }',
     [(1, 2, 3, 4)], []),  # H: ceil(4/2)+1 = 3
    ((1, 2, 7, 9), 'type: "Pooling" top: "y" top: "mask" pooling_param { kernel_size: 3 stride: 2 pool: MAX }',
     [(1, 2, 3, 4), (1, 2, 3, 4)], []),  # ceil(4/2)+1 = 3, ceil(6/2)+1 = 4; the mask top is alike
    # concat_layer.cpp: concat_dim (legacy) wins when set
    ((2, 3, 4), 'type: "Concat" bottom: "x" top: "y" concat_param { concat_dim: 2 }', [(2, 3, 8)], []),
    ((2, 3, 4), 'type: "Concat" bottom: "x" top: "y" concat_param { axis: -3 }', [(4, 3, 4)], []),
    # slice_layer.cpp
    ((2, 6, 4), 'type: "Slice" top: "a" top: "b" top: "c" slice_param { slice_dim: 1 }',
     [(2, 2, 4), (2, 2, 4), (2, 2, 4)], []),
    ((2, 6, 4), 'type: "Slice" top: "a" top: "b" slice_param { axis: -1 slice_point: 3 }',
     [(2, 6, 3), (2, 6, 1)], []),
    # flatten_layer.cpp: axes axis..end_axis merged
    ((2, 3, 4, 5), 'type: "Flatten" top: "y" flatten_param { axis: 1 end_axis: 2 }', [(2, 12, 5)], []),
    ((2, 3, 4, 5), 'type: "Flatten" top: "y" flatten_param { axis: 0 }', [(120,)], []),
    # reshape_layer.cpp: axis/num_axes select the replaced span; 0 copies, -1 infers
    ((2, 8), 'type: "Reshape" top: "y" reshape_param { shape { dim: 2 dim: 4 } axis: 1 }', [(2, 2, 4)], []),
    ((2, 8), 'type: "Reshape" top: "y" reshape_param { shape { dim: 1 } axis: 1 num_axes: 0 }', [(2, 1, 8)], []),
    ((2, 8), 'type: "Reshape" top: "y" reshape_param { shape { dim: 0 dim: -1 dim: 2 } }', [(2, 4, 2)], []),
    ((2, 8), 'type: "Reshape" top: "y" reshape_param { shape { dim: 2 dim: 4 } axis: -2 }', [(2, 2, 4)], []),
    # element-wise and same-shape layers
    ((2, 3), 'type: "Eltwise" bottom: "x" top: "y" eltwise_param { operation: MAX coeff: 2 coeff: 3 }',
     [(2, 3)], []),  # Caffe allows (and ignores) coefficients with MAX
    ((1, 3, 4, 4), 'type: "LRN" top: "y" lrn_param { local_size: 3 norm_region: WITHIN_CHANNEL }',
     [(1, 3, 4, 4)], []),
    ((2, 3), 'type: "Softmax" top: "y" softmax_param { axis: -1 }', [(2, 3)], []),
    ((2, 3), 'type: "Power" top: "y" power_param { power: 2 }', [(2, 3)], []),
    ((2, 3), 'type: "Split" top: "a" top: "b"', [(2, 3), (2, 3)], []),
])
def test_layer_shapes(shape, layer, tops, params):
    names = [t.split('"')[1] for t in layer.split("top: ")[1:]]
    got_tops, got_params = one_layer(shape, layer, tuple(names))
    assert got_tops == tops
    assert got_params == params


@pytest.mark.parametrize("shape, layer, match", [
    ((1, 2, 7, 7), 'type: "Pooling" top: "y" pooling_param { kernel_size: 3 pad_h: 1 }', "pad_h and pad_w"),
    ((1, 2, 7, 7), 'type: "Pooling" top: "y" pooling_param { kernel_size: 3 pad: 1 pad_h: 1 pad_w: 1 }',
     "either pad or"),
    ((1, 2, 7, 7), 'type: "Pooling" top: "y" pooling_param { kernel_size: 3 stride_w: 2 }', "either stride or"),
    ((1, 2, 7, 7), 'type: "Pooling" top: "y" pooling_param { kernel_size: 3 pad: 1 pool: STOCHASTIC }',
     "only for MAX and AVE"),
    ((1, 2, 7, 7), 'type: "Pooling" top: "y" pooling_param { kernel_size: 3 pad: 3 }', "smaller than the kernel"),
    ((1, 2, 7, 7), 'type: "Pooling" top: "y" pooling_param { kernel_h: 3 }', "needs kernel_size"),
    ((1, 2, 7, 7), 'type: "Convolution" top: "y" convolution_param { num_output: 2 kernel_size: 3 stride: 2 '
     'stride_h: 1 stride_w: 1 }', "either stride or"),
    ((1, 2, 7, 7), 'type: "Convolution" top: "y" convolution_param { num_output: 2 kernel_size: 3 pad: 1 '
     'pad_h: 1 }', "either pad or"),
    ((1, 2, 5, 6, 7), 'type: "Convolution" top: "y" convolution_param { num_output: 2 kernel_h: 3 kernel_w: 3 }',
     "only for 2-D"),
    ((1, 2, 7, 7), 'type: "Convolution" top: "y" convolution_param { num_output: 2 kernel_size: 3 kernel_size: 3 '
     'kernel_size: 3 }', "once per spatial axis"),
    ((1, 2, 7, 7), 'type: "Convolution" top: "y" convolution_param { kernel_size: 3 }', "num_output must be"),
    ((2, 3), 'type: "Eltwise" bottom: "x" top: "y" eltwise_param { operation: PROD coeff: 1 coeff: 2 }',
     "not allowed with operation PROD"),
    ((2, 3), 'type: "Eltwise" bottom: "x" top: "y" eltwise_param { coeff: 1 }', "1 coeff for 2 inputs"),
    ((2, 3, 4, 5), 'type: "Scale" top: "y" scale_param { axis: 2 num_axes: 3 }', "spans axes"),
    ((2, 3, 4, 5), 'type: "InnerProduct" top: "y" inner_product_param { num_output: 2 axis: 4 }', "out of range"),
    ((2, 6, 4), 'type: "Slice" top: "a" top: "b" slice_param { slice_point: 2 slice_point: 4 }',
     "2 slice_point"),
    ((2, 8), 'type: "Reshape" top: "y" reshape_param { shape { dim: 3 dim: -1 } }', "cannot reshape"),
    ((2, 3), 'type: "LRN" top: "y"', "4-D input"),
    ((1, 3, 4, 4), 'type: "LRN" top: "y" lrn_param { local_size: 4 }', "odd values for local_size"),
    ((2, 3), 'type: "PReLU" top: "y" bottom: "x"', "takes 1 input, got 2"),
])
def test_layer_errors_name_the_layer(shape, layer, match):
    with pytest.raises(FormatError, match=r"layer 0 'L' .*" + match):
        one_layer(shape, layer, ())


def test_input_layer_tops_and_override():
    text = ('layer { name: "in" type: "Input" top: "a" top: "b" input_param { shape { dim: 1 dim: 2 } } }\n'
            'layer { name: "cat" type: "Concat" bottom: "a" bottom: "b" top: "c" concat_param { axis: 1 } }')
    s = cn.infer(cn.load_net(text))
    assert (s.blobs["a"], s.blobs["b"], s.blobs["c"]) == ((1, 2), (1, 2), (1, 4))  # one shape for every top
    s = cn.infer(cn.load_net(text), {"b": [1, 5]})
    assert s.blobs["c"] == (1, 7) and s.inputs == {"a": (1, 2), "b": (1, 5)}


def test_input_dim_for_two_inputs_and_input_shape_option():
    text = ('input: "a" input: "b" input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 3 '
            'input_dim: 1 input_dim: 4 input_dim: 3 input_dim: 3\n'
            'layer { name: "cat" type: "Concat" bottom: "a" bottom: "b" top: "c" }')
    assert cn.infer(cn.load_net(text)).blobs["c"] == (1, 6, 3, 3)
    with pytest.raises(Exception, match="one input"):
        pt.open(text, input_shape=[1, 2, 3, 3])


# -- loading ---------------------------------------------------------------------------------------

def test_missing_prototxt_paths_say_no_such_file(tmp_path):
    for src in (str(tmp_path / "absent.prototxt"), "C:/models/deploy.prototxt", str(tmp_path / "x.caffemodel")):
        with pytest.raises(FormatError, match="no such file"):
            cn.load_net(src)
    with pytest.raises(FormatError, match="is a directory"):
        cn.load_net(str(tmp_path))
    assert cn.load_net('name: "one line"').name == "one line"


def test_train_val_layers_survive_load_and_dump():
    """Data/loss layer parameters are in the schema, so dump() does not drop them."""
    text = '''name: "tv"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { mirror: true crop_size: 227 mean_value: 104 }
  data_param { source: "train_lmdb" batch_size: 64 backend: LMDB } }
layer { name: "data" type: "ImageData" top: "data" top: "label" include { phase: TEST }
  image_data_param { source: "val.txt" batch_size: 10 new_height: 256 new_width: 256 root_folder: "/img/" } }
layer { name: "py" type: "Python" bottom: "data" top: "p" python_param { module: "m" layer: "L" param_str: "{'a': 1}" } }
layer { name: "mvn" type: "MVN" bottom: "p" top: "q" mvn_param { across_channels: true } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "q" bottom: "label" top: "loss"
  loss_param { ignore_label: 255 normalization: BATCH_SIZE } }
'''
    r = pt.open(text)
    assert r.unknown_fields() == []
    net = cn.load_net(text)
    again = cn.load_net(cn.dump(net))
    assert again == net
    assert again.layer[0].data_param.backend == schema.LayerParameter().data_param.LMDB
    assert again.layer[1].image_data_param.root_folder == "/img/"
    assert again.layer[2].python_param.param_str == "{'a': 1}"
    assert r.attrs("mvn")["type"] == "MVN" and r.attrs("data")["top"] == ["data", "label"]


def test_v1_data_layers_upgrade_with_their_params():
    text = '''layers { name: "d" type: IMAGE_DATA top: "x" image_data_param { source: "list.txt" batch_size: 2 }
  blob_share_mode: PERMISSIVE blobs_lr: 0 }
layers { name: "w" type: WINDOW_DATA top: "y" window_data_param { source: "w.txt" crop_mode: "square" } }'''
    net = cn.load_net(text)
    assert [l.type for l in net.layer] == ["ImageData", "WindowData"]
    assert net.layer[0].image_data_param.source == "list.txt" and net.layer[0].param[0].share_mode == 1
    assert net.layer[0].param[0].lr_mult == 0 and net.layer[1].window_data_param.crop_mode == "square"


def test_pooling_attrs_without_kernel_keep_the_rounding():
    r = pt.open('layer { name: "p" type: "Pooling" pooling_param { ceil_mode: false pool: AVE } }')
    a = r.attrs("p")
    assert (a["round_mode"], a["ceil"], a["pool"]) == ("FLOOR", False, "AVE") and "kernel" not in a


def test_input_layer_without_shape_takes_the_option():
    """An Input layer may leave its shape to run time (input_layer.cpp): the option supplies it."""
    text = ('layer { name: "in" type: "Input" top: "data" }\n'
            'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
            'convolution_param { num_output: 2 kernel_size: 3 } }')
    with pytest.raises(FormatError, match=r"'data' has no shape.*input_shape="):
        pt.open(text).infos()
    r = pt.open(text, input_shape=[1, 3, 5, 5])
    assert {k: v.shape for k, v in r.infos().items()} == {"c[0]": (2, 3, 3, 3), "c[1]": (2,)}
    assert r.shapes().blobs["c"] == (1, 2, 3, 3)
