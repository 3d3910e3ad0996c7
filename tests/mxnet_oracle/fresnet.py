"""fresnet.py OUT-symbol.json OUT.params UNITS WIDTHS SEED: an insightface ResNet (fresnet) built by MXNet.

The layer pattern of deepinsight/insightface recognition/arcface_mxnet/symbol/fresnet.py
(written here from its description, not copied): raw pixels -> ``_minus_scalar`` 127.5 ->
``_mul_scalar`` 0.0078125 -> conv0 3x3 -> bn0 -> PReLU relu0; per stage, units of
BN -> Conv3x3 -> BN -> PReLU -> Conv3x3(stride) -> BN plus a shortcut (the input, or Conv1x1 +
BN where the width or stride changes); the 'E' head: BN bn1 -> Dropout(0.4) -> FullyConnected
pre_fc1 -> BN fc1 with fix_gamma=True.  Every BN but fc1 has fix_gamma=False, eps 2e-5.
UNITS "3,4,14,3" (ResNet-50), WIDTHS "64,64,128,256,512" (conv0, then the stages).  Random
weights (He-scaled convolutions, random BN statistics, gamma, beta and PReLU slopes) from SEED,
saved with MXNet's writer as arg:/aux: arrays.
"""
import sys

import numpy as np
import mxnet as mx

out_sym, out_params = sys.argv[1], sys.argv[2]
units = [int(u) for u in sys.argv[3].split(",")]
widths = [int(w) for w in sys.argv[4].split(",")]
rng = np.random.default_rng(int(sys.argv[5]))
EPS = 2e-5


def bn(x, name, fix_gamma=False):
    return mx.sym.BatchNorm(x, fix_gamma=fix_gamma, eps=EPS, momentum=0.9, name=name)


def conv(x, nf, k, stride, name):
    return mx.sym.Convolution(x, num_filter=nf, kernel=(k, k), stride=(stride, stride), pad=(k // 2, k // 2),
                              no_bias=True, name=name)


def unit(x, nf, stride, same, name):
    y = bn(x, name + "_bn1")
    y = conv(y, nf, 3, 1, name + "_conv1")
    y = bn(y, name + "_bn2")
    y = mx.sym.LeakyReLU(y, act_type="prelu", name=name + "_relu1")
    y = conv(y, nf, 3, stride, name + "_conv2")
    y = bn(y, name + "_bn3")
    short = x if same else bn(conv(x, nf, 1, stride, name + "_conv1sc"), name + "_sc")
    return y + short


data = mx.sym.Variable("data")
x = (data - 127.5) * 0.0078125
x = conv(x, widths[0], 3, 1, "conv0")
x = mx.sym.LeakyReLU(bn(x, "bn0"), act_type="prelu", name="relu0")
for i, n in enumerate(units):
    x = unit(x, widths[i + 1], 2, False, f"stage{i + 1}_unit1")
    for j in range(2, n + 1):
        x = unit(x, widths[i + 1], 1, True, f"stage{i + 1}_unit{j}")
x = mx.sym.Dropout(bn(x, "bn1"), p=0.4)
x = mx.sym.FullyConnected(x, num_hidden=128, name="pre_fc1")
sym = bn(x, "fc1", fix_gamma=True)
sym.save(out_sym)

arg_shapes, _, aux_shapes = sym.infer_shape(data=(1, 3, 112, 112))
arrays = {}
for name, shape in zip(sym.list_arguments(), arg_shapes):
    if name == "data":
        continue
    if name.endswith("_weight"):
        v = rng.normal(0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
    elif name.endswith("_gamma"):
        v = rng.uniform(0.05, 0.5, shape) if "_relu" in name else rng.uniform(0.5, 1.5, shape)
    else:  # beta, bias
        v = rng.normal(0, 0.1, shape)
    arrays["arg:" + name] = mx.nd.array(v.astype(np.float32))
for name, shape in zip(sym.list_auxiliary_states(), aux_shapes):
    v = rng.normal(0, 0.1, shape) if name.endswith("_mean") else rng.uniform(0.5, 1.5, shape)
    arrays["aux:" + name] = mx.nd.array(v.astype(np.float32))
mx.nd.save(out_params, arrays)
