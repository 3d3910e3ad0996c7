"""MobileFaceNet (insightface's MXNet ``fmobilefacenet``) as a PyTorch module and as a Caffe prototxt.

One architecture table, :data:`UNITS`, drives both: the torch module
(:func:`mobilefacenet`, target of ``specs/mobilefacenet/mxnet-to-torch``) and the
Caffe net definition (:func:`caffe_prototxt`, shipped as
``specs/mobilefacenet/mobilefacenet.prototxt`` for ``mxnet-to-caffe``).

Torch parameter names follow the MXNet op names: ``conv_1.conv.weight``,
``conv_1.bn.*``, ``conv_1.prelu.weight``, ``dconv_23.sep.conv.weight``,
``res_3.0.dw.bn.running_var``, ..., ``pre_fc1.weight``, ``fc1.*``.  The torch
BatchNorm layers keep torch's default eps (1e-5); the spec absorbs MXNet's eps
(1e-3, and 2e-5 for ``fc1``) into the running variance.  Caffe layers carry the
MXNet names (``conv_1_conv2d``, ``conv_1_batchnorm`` + ``conv_1_batchnorm_scale``,
``conv_1_relu`` (PReLU), ``pre_fc1`` (InnerProduct), ``fc1`` + ``fc1_scale``), as
MXNet2Caffe names them, and keep MXNet's eps in ``batch_norm_param``.

Both take raw RGB pixels (0..255), NCHW 1x3x112x112, and normalise them as the MXNet
graph does (``(x - 127.5) * 0.0078125``): a ``Power`` layer in Caffe.
"""

from __future__ import annotations

from typing import NamedTuple

MEAN = 127.5
SCALE = 0.0078125


class Unit(NamedTuple):
    name: str  # MXNet prefix, e.g. conv_1, dconv_23_conv_sep, res_3_block0_conv_dw
    cin: int
    cout: int
    kernel: int
    stride: int
    pad: int
    groups: int
    act: bool  # PReLU after the BatchNorm


def _depthwise(prefix: str, cin: int, mid: int, cout: int, stride: int) -> list:
    return [
        Unit(f"{prefix}_conv_sep", cin, mid, 1, 1, 0, 1, True),
        Unit(f"{prefix}_conv_dw", mid, mid, 3, stride, 1, mid, True),
        Unit(f"{prefix}_conv_proj", mid, cout, 1, 1, 0, 1, False),
    ]


# (prefix, in, mid, out, stride, residual blocks after it)
STAGES = [("dconv_23", 64, 128, 64, 2, ("res_3", 4, 128)),
          ("dconv_34", 64, 256, 128, 2, ("res_4", 6, 256)),
          ("dconv_45", 128, 512, 128, 2, ("res_5", 2, 256))]


def units() -> list:
    """Every conv+BN(+PReLU) unit in graph order, with residual markers as ('add', block prefix)."""
    out: list = [Unit("conv_1", 3, 64, 3, 2, 1, 1, True), Unit("conv_2_dw", 64, 64, 3, 1, 1, 64, True)]
    for prefix, cin, mid, cout, stride, (res, n, res_mid) in STAGES:
        out += _depthwise(prefix, cin, mid, cout, stride)
        for b in range(n):
            out += _depthwise(f"{res}_block{b}", cout, res_mid, cout, 1)
            out.append(("add", f"{res}_block{b}"))
    out += [Unit("conv_6sep", 128, 512, 1, 1, 0, 1, True), Unit("conv_6dw7_7", 512, 512, 7, 1, 0, 512, False)]
    return out


EMBEDDING = 128
FC1_EPS = 2e-5
BN_EPS = 1e-3


# -- PyTorch ---------------------------------------------------------------------------------

def mobilefacenet(normalize: bool = True):
    """The torch MobileFaceNet (random weights; load a converted state dict into it)."""
    import torch
    from torch import nn

    class ConvUnit(nn.Module):
        def __init__(self, u: Unit):
            super().__init__()
            self.conv = nn.Conv2d(u.cin, u.cout, u.kernel, u.stride, u.pad, groups=u.groups, bias=False)
            self.bn = nn.BatchNorm2d(u.cout)
            self.prelu = nn.PReLU(u.cout) if u.act else None

        def forward(self, x):
            x = self.bn(self.conv(x))
            return self.prelu(x) if self.prelu is not None else x

    class DepthWise(nn.Module):
        def __init__(self, sep: Unit, dw: Unit, proj: Unit, residual: bool):
            super().__init__()
            self.sep, self.dw, self.proj = ConvUnit(sep), ConvUnit(dw), ConvUnit(proj)
            self.residual = residual

        def forward(self, x):
            y = self.proj(self.dw(self.sep(x)))
            return x + y if self.residual else y

    class MobileFaceNet(nn.Module):
        def __init__(self):
            super().__init__()
            us = units()
            self.normalize = normalize
            self.conv_1 = ConvUnit(us[0])
            self.conv_2_dw = ConvUnit(us[1])
            i = 2
            for prefix, _, _, _, _, (res, n, _) in STAGES:
                setattr(self, prefix, DepthWise(*us[i:i + 3], residual=False))
                i += 3
                blocks = []
                for _ in range(n):
                    blocks.append(DepthWise(*us[i:i + 3], residual=True))
                    i += 4  # three units and the add marker
                setattr(self, res, nn.ModuleList(blocks))
            self.conv_6sep = ConvUnit(us[i])
            self.conv_6dw7_7 = ConvUnit(us[i + 1])
            self.pre_fc1 = nn.Linear(512, EMBEDDING)
            self.fc1 = nn.BatchNorm1d(EMBEDDING)

        def forward(self, x):
            if self.normalize:
                x = (x - MEAN) * SCALE
            x = self.conv_2_dw(self.conv_1(x))
            for prefix, _, _, _, _, (res, _, _) in STAGES:
                x = getattr(self, prefix)(x)
                for block in getattr(self, res):
                    x = block(x)
            x = self.conv_6dw7_7(self.conv_6sep(x))
            return self.fc1(self.pre_fc1(torch.flatten(x, 1)))

    return MobileFaceNet().train(False)  # inference mode


# -- Caffe -----------------------------------------------------------------------------------

def _layer(name: str, type_: str, bottoms: list, top: str, body: str = "") -> str:
    lines = ["layer {", f'  name: "{name}"', f'  type: "{type_}"']
    lines += [f'  bottom: "{b}"' for b in bottoms]
    lines.append(f'  top: "{top}"')
    if body:
        lines += ["  " + line for line in body.strip().splitlines()]
    lines.append("}")
    return "\n".join(lines)


def _bn(name: str, bottom: str, eps: float) -> list:
    return [
        _layer(name, "BatchNorm", [bottom], name, f"batch_norm_param {{\n  use_global_stats: true\n  eps: {eps!r}\n}}"),
        _layer(f"{name}_scale", "Scale", [name], name, "scale_param {\n  bias_term: true\n}"),
    ]


def caffe_prototxt() -> str:
    """The Caffe MobileFaceNet (names as MXNet2Caffe gives them), normalising raw pixels with a Power layer."""
    out = ['name: "mobilefacenet"',
           _layer("data", "Input", [], "data", "input_param {\n  shape { dim: 1 dim: 3 dim: 112 dim: 112 }\n}"),
           _layer("_mulscalar0", "Power", ["data"], "_mulscalar0",
                  f"power_param {{\n  power: 1\n  scale: {SCALE!r}\n  shift: {-MEAN * SCALE!r}\n}}")]
    x = "_mulscalar0"
    skip = None
    plus = 0
    for u in units():
        if isinstance(u, tuple) and u[0] == "add":
            name = f"_plus{plus}"
            plus += 1
            out.append(_layer(name, "Eltwise", [x, skip], name, "eltwise_param {\n  operation: SUM\n}"))
            x = name
            continue
        if u.name.endswith("_conv_sep"):
            skip = x  # the input of a depthwise unit: what a residual block adds back
        conv = f"{u.name}_conv2d"
        group = f"\n  group: {u.groups}" if u.groups > 1 else ""
        out.append(_layer(conv, "Convolution", [x], conv,
                          f"convolution_param {{\n  num_output: {u.cout}\n  bias_term: false\n  kernel_size: {u.kernel}"
                          f"\n  stride: {u.stride}\n  pad: {u.pad}{group}\n}}"))
        bn = f"{u.name}_batchnorm"
        out += _bn(bn, conv, BN_EPS)
        x = bn
        if u.act:
            relu = f"{u.name}_relu"
            out.append(_layer(relu, "PReLU", [x], relu))
            x = relu
    out.append(_layer("pre_fc1", "InnerProduct", [x], "pre_fc1", f"inner_product_param {{\n  num_output: {EMBEDDING}\n}}"))
    out += _bn("fc1", "pre_fc1", FC1_EPS)
    return "\n".join(out) + "\n"
