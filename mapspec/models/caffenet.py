"""CaffeNet (AlexNet with Caffe's two-group convolutions and LRN): a Caffe prototxt and Keras models.

One configuration, :class:`Config`, drives the Caffe net definition
(:func:`caffe_prototxt`) and the two Keras models of ``specs/caffenet``:

* :func:`keras_caffenet_split`: each ``group: 2`` convolution as two Conv2D layers
  (``conv2_1``, ``conv2_2``) on the two halves of the input channels, concatenated
  (the classic workaround of seed 003);
* :func:`keras_caffenet_grouped`: one Conv2D with ``groups=2`` (Keras 3).

Caffe pads symmetrically, so each padded convolution is ZeroPadding2D + a 'valid'
Conv2D; the pooling sizes of CaffeNet divide exactly, so Caffe's ceil rounding and
Keras's floor agree.  LRN (across channels, k=1) is the Keras layer :class:`CaffeLRN`.
Keras works in NHWC: ``Flatten`` orders the first fully connected layer's input as
H, W, C where Caffe's InnerProduct reads C, H, W, which the specs reorder.
``*_tiny`` variants (99x99 input, few channels) keep tests fast with the same layer
names, groups and a 2x2 feature map before ``fc6``.
"""

from __future__ import annotations

import os
from typing import NamedTuple


class Config(NamedTuple):
    size: int = 227
    conv: tuple = (96, 256, 384, 384, 256)
    fc: tuple = (4096, 4096, 1000)


FULL = Config()
TINY = Config(size=99, conv=(16, 32, 48, 48, 32), fc=(64, 64, 10))

# (name, kernel, stride, pad, group, followed by pool, followed by LRN)
CONVS = [("conv1", 11, 4, 0, 1, True, True), ("conv2", 5, 1, 2, 2, True, True), ("conv3", 3, 1, 1, 1, False, False),
         ("conv4", 3, 1, 1, 2, False, False), ("conv5", 3, 1, 1, 2, True, False)]
LRN = {"local_size": 5, "alpha": 1e-4, "beta": 0.75, "k": 1.0}


def _layer(name, type_, bottoms, top, body=""):
    lines = ["layer {", f'  name: "{name}"', f'  type: "{type_}"'] + [f'  bottom: "{b}"' for b in bottoms]
    lines.append(f'  top: "{top}"')
    lines += ["  " + l for l in body.strip().splitlines()] if body else []
    return "\n".join(lines + ["}"])


def caffe_prototxt(cfg: Config = FULL) -> str:
    out = ['name: "CaffeNet"', _layer("data", "Input", [], "data",
                                       f"input_param {{ shape {{ dim: 1 dim: 3 dim: {cfg.size} dim: {cfg.size} }} }}")]
    x = "data"
    for i, (name, k, s, p, g, pool, lrn) in enumerate(CONVS):
        body = f"convolution_param {{\n  num_output: {cfg.conv[i]}\n  kernel_size: {k}\n  stride: {s}"
        body += (f"\n  pad: {p}" if p else "") + (f"\n  group: {g}" if g > 1 else "") + "\n}"
        out.append(_layer(name, "Convolution", [x], name, body))
        out.append(_layer(f"relu{i + 1}", "ReLU", [name], name))
        x = name
        if pool:
            pn = f"pool{i + 1}"
            out.append(_layer(pn, "Pooling", [x], pn, "pooling_param {\n  pool: MAX\n  kernel_size: 3\n  stride: 2\n}"))
            x = pn
        if lrn:
            nn_ = f"norm{i + 1}"
            out.append(_layer(nn_, "LRN", [x], nn_, f"lrn_param {{\n  local_size: {LRN['local_size']}\n  alpha: "
                                                   f"{LRN['alpha']!r}\n  beta: {LRN['beta']!r}\n}}"))
            x = nn_
    for j, n in enumerate(cfg.fc):
        name = f"fc{6 + j}"
        out.append(_layer(name, "InnerProduct", [x], name, f"inner_product_param {{\n  num_output: {n}\n}}"))
        x = name
        if j < len(cfg.fc) - 1:
            out.append(_layer(f"relu{6 + j}", "ReLU", [x], x))
            out.append(_layer(f"drop{6 + j}", "Dropout", [x], x, "dropout_param {\n  dropout_ratio: 0.5\n}"))
    return "\n".join(out) + "\n"


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    return keras


def _lrn_class():
    keras = _keras()
    ops = keras.ops

    @keras.saving.register_keras_serializable(package="mapspec")
    class CaffeLRN(keras.layers.Layer):
        """Caffe's LRN across channels (NHWC): x / (k + alpha/n * sum of squares over n channels)^beta."""

        def __init__(self, local_size=5, alpha=1e-4, beta=0.75, k=1.0, **kw):
            super().__init__(**kw)
            self.local_size, self.alpha, self.beta, self.k = local_size, alpha, beta, k

        def call(self, x):
            half = (self.local_size - 1) // 2
            sq = ops.pad(ops.square(x), [[0, 0], [0, 0], [0, 0], [half, self.local_size - 1 - half]])
            c = ops.shape(x)[-1]
            total = sq[..., 0:c]
            for i in range(1, self.local_size):
                total = total + sq[..., i:i + c]
            return x / ops.power(self.k + self.alpha / self.local_size * total, self.beta)

        def get_config(self):
            return {**super().get_config(), "local_size": self.local_size, "alpha": self.alpha, "beta": self.beta,
                    "k": self.k}

    return CaffeLRN


def _build(cfg: Config, split: bool):
    keras = _keras()
    L = keras.layers
    lrn = _lrn_class()
    inp = keras.Input((cfg.size, cfg.size, 3), name="data")
    x = inp
    for i, (name, k, s, p, g, pool, has_lrn) in enumerate(CONVS):
        if p:
            x = L.ZeroPadding2D(p, name=f"{name}_pad")(x)
        if g > 1 and split:
            cin = x.shape[-1]
            halves = []
            for part in range(g):
                lo, hi = part * cin // g, (part + 1) * cin // g
                sl = L.Lambda(lambda t, lo=lo, hi=hi: t[..., lo:hi], name=f"{name}_in{part + 1}")(x)
                halves.append(L.Conv2D(cfg.conv[i] // g, k, strides=s, name=f"{name}_{part + 1}")(sl))
            x = L.Concatenate(name=f"{name}_merge")(halves)
        else:
            x = L.Conv2D(cfg.conv[i], k, strides=s, groups=g, name=name)(x)
        x = L.ReLU(name=f"relu{i + 1}")(x)
        if pool:
            x = L.MaxPooling2D(3, 2, name=f"pool{i + 1}")(x)
        if has_lrn:
            x = lrn(**LRN, name=f"norm{i + 1}")(x)
    x = L.Flatten(name="flatten")(x)
    for j, n in enumerate(cfg.fc):
        x = L.Dense(n, activation="relu" if j < len(cfg.fc) - 1 else None, name=f"fc{6 + j}")(x)
    return keras.Model(inp, x, name="caffenet")


def keras_caffenet_split():
    return _build(FULL, split=True)


def keras_caffenet_grouped():
    return _build(FULL, split=False)


def keras_caffenet_split_tiny():
    return _build(TINY, split=True)


def keras_caffenet_grouped_tiny():
    return _build(TINY, split=False)
