"""Kaiming He's Caffe ResNet-50/101/152 layout and torchvision's, as real files (any width, seeded weights).

Caffe (``ResNet-50-deploy.prototxt``'s names): ``conv1`` with a bias, ``bn_conv1`` + ``scale_conv1``,
``pool1``, blocks ``res<s><b>_branch1`` (the shortcut, first in each stage) and
``res<s><b>_branch2a/2b/2c`` each with ``bn...``/``scale...``, stages 2-5 with 3, 4, 6, 3 blocks
lettered a, b, c, ... (ResNet-101/152 name the blocks of stages 3 and 4 ``a``, ``b1``, ``b2``, ...: ``res4b22``);
the stride in ``branch1`` and ``branch2a``.  torchvision: ``conv1`` (no bias),
``bn1``, ``layer1..4.<n>.conv1/bn1/conv2/bn2/conv3/bn3`` then ``downsample.0/1``, ``fc``.
``torch_module`` computes what the Caffe net computes (its stride and pooling), so a converted state
dict can be run against the Caffe executor.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

BLOCKS = (3, 4, 6, 3)
DEPTHS = {50: (BLOCKS, ()), 101: ((3, 4, 23, 3), (3, 4)), 152: ((3, 8, 36, 3), (3, 4))}  # blocks, numbered stages


def block_name(stage: int, b: int, numbered=()) -> str:
    """Kaiming's name of block ``b`` (from 0) of stage ``stage`` (2..5): ``a``, ``b``, ... or ``a``, ``b1``, ..."""
    return "a" if b == 0 else f"b{b}" if stage in numbered else chr(ord("a") + b)


def prototxt(width: int = 64, classes: int = 1000, hw: int = 64, depth: int = 50) -> str:
    blocks, numbered = DEPTHS[depth]
    out = [f'name: "ResNet-{depth}"',
           f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 1 dim: 3 dim: {hw} '
           f'dim: {hw} }} }} }}']

    def conv(name, bottom, n, k, s=1, p=0, bias=False):
        out.append(f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" convolution_param '
                   f'{{ num_output: {n} kernel_size: {k} stride: {s} pad: {p} bias_term: {str(bias).lower()} }} }}')

    def bn(suffix, blob, relu=None):
        out.append(f'layer {{ name: "bn{suffix}" type: "BatchNorm" bottom: "{blob}" top: "{blob}" '
                   f'batch_norm_param {{ use_global_stats: true }} }}')
        out.append(f'layer {{ name: "scale{suffix}" type: "Scale" bottom: "{blob}" top: "{blob}" '
                   f'scale_param {{ bias_term: true }} }}')
        if relu:
            out.append(f'layer {{ name: "{relu}" type: "ReLU" bottom: "{blob}" top: "{blob}" }}')

    conv("conv1", "data", width, 7, 2, 3, bias=True)
    bn("_conv1", "conv1", "conv1_relu")
    out.append('layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX '
               'kernel_size: 3 stride: 2 } }')
    bottom, inplanes = "pool1", width
    for s, n in enumerate(blocks, start=2):
        planes = width * 2 ** (s - 2)
        for b in range(n):
            name = f"res{s}{block_name(s, b, numbered)}"
            stride = 2 if b == 0 and s > 2 else 1
            if b == 0:
                conv(f"{name}_branch1", bottom, planes * 4, 1, stride)
                bn(f"{name[3:]}_branch1", f"{name}_branch1")
                short = f"{name}_branch1"
            else:
                short = bottom
            conv(f"{name}_branch2a", bottom, planes, 1, stride)
            bn(f"{name[3:]}_branch2a", f"{name}_branch2a", f"{name}_branch2a_relu")
            conv(f"{name}_branch2b", f"{name}_branch2a", planes, 3, 1, 1)
            bn(f"{name[3:]}_branch2b", f"{name}_branch2b", f"{name}_branch2b_relu")
            conv(f"{name}_branch2c", f"{name}_branch2b", planes * 4, 1)
            bn(f"{name[3:]}_branch2c", f"{name}_branch2c")
            out.append(f'layer {{ name: "{name}" type: "Eltwise" bottom: "{short}" bottom: "{name}_branch2c" '
                       f'top: "{name}" }}')
            out.append(f'layer {{ name: "{name}_relu" type: "ReLU" bottom: "{name}" top: "{name}" }}')
            bottom, inplanes = name, planes * 4
    out.append(f'layer {{ name: "pool5" type: "Pooling" bottom: "{bottom}" top: "pool5" pooling_param {{ pool: AVE '
               f'global_pooling: true }} }}')
    out.append(f'layer {{ name: "fc{classes}" type: "InnerProduct" bottom: "pool5" top: "fc{classes}" '
               f'inner_product_param {{ num_output: {classes} }} }}')
    return "\n".join(out) + "\n"


def caffe_files(d: Path, width: int = 64, classes: int = 1000, hw: int = 64, seed: int = 50,
                depth: int = 50) -> tuple:
    from mapspec.models.seeded import write_caffemodel

    d.mkdir(parents=True, exist_ok=True)
    proto = d / f"ResNet-{depth}-deploy.prototxt"
    proto.write_text(prototxt(width, classes, hw, depth))
    model = d / f"ResNet-{depth}-model.caffemodel"
    write_caffemodel(str(proto), str(model), seed=seed)
    return proto, model


def torch_module(width: int = 64, classes: int = 1000, depth: int = 50):
    """torchvision's ResNet-50/101/152 layout (state dict names, shapes and order), computing as the Caffe net does."""
    import torch
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, inplanes, planes, stride, down):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 1, stride, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes * 4)) if down else None

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = torch.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            return torch.relu(y + (self.downsample(x) if self.downsample is not None else x))

    class ResNet50(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            inplanes = width
            for s, n in enumerate(DEPTHS[depth][0], start=1):
                planes = width * 2 ** (s - 1)
                blocks = []
                for b in range(n):
                    blocks.append(Bottleneck(inplanes, planes, 2 if b == 0 and s > 1 else 1, b == 0))
                    inplanes = planes * 4
                setattr(self, f"layer{s}", nn.Sequential(*blocks))
            self.fc = nn.Linear(inplanes, classes)

        def forward(self, x):
            x = torch.relu(self.bn1(self.conv1(x)))
            x = nn.functional.max_pool2d(x, 3, 2, ceil_mode=True)  # Caffe's pool1 rounds up
            for s in range(1, 5):
                x = getattr(self, f"layer{s}")(x)
            return self.fc(x.mean((2, 3)))

    return ResNet50().eval()


def torch_template(path: Path, width: int = 64, classes: int = 1000, depth: int = 50) -> Path:
    import torch

    torch.manual_seed(0)
    torch.save(torch_module(width, classes, depth).state_dict(), path)
    return path


def caffe_output(proto: Path, weights, x: np.ndarray, classes: int = 1000) -> np.ndarray:
    from mapspec.frameworks.caffe.executor import CaffeExecutor

    return CaffeExecutor(str(proto), weights).run({"data": x}, outputs=[f"fc{classes}"])[f"fc{classes}"]


def torch_output(state: dict, x: np.ndarray, width: int = 64, classes: int = 1000, depth: int = 50) -> np.ndarray:
    import torch

    m = torch_module(width, classes, depth)
    m.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})
    with torch.no_grad():
        return m(torch.from_numpy(x)).numpy()
