"""A DenseNet whose module names and state_dict keys are torchvision's.

torchvision has no CPU-only wheel on these machines, so mapspec ships this
definition: the same architecture (DenseNet-BC, "Densely Connected Convolutional
Networks", Huang et al. 2017) with the same parameter names
(``features.conv0``, ``features.denseblockB.denselayerL.norm1/conv1/norm2/conv2``,
``features.transitionT.norm/conv``, ``features.norm5``, ``classifier``), so that a
state dict for it loads into ``torchvision.models.densenet121()`` and back with
``strict=True``.  ``memory_efficient`` checkpointing is left out: it changes
nothing at inference.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

CONFIGS = {
    "densenet121": (32, (6, 12, 24, 16), 64),
    "densenet161": (48, (6, 12, 36, 24), 96),
    "densenet169": (32, (6, 12, 32, 32), 64),
    "densenet201": (32, (6, 12, 48, 32), 64),
}


class DenseLayer(nn.Module):
    def __init__(self, in_channels: int, growth_rate: int, bn_size: int):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, bn_size * growth_rate, kernel_size=1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, kernel_size=3, padding=1, bias=False)

    def forward(self, features: list) -> torch.Tensor:
        x = torch.cat(features, 1)
        x = self.conv1(self.relu1(self.norm1(x)))
        return self.conv2(self.relu2(self.norm2(x)))


class DenseBlock(nn.ModuleDict):
    def __init__(self, num_layers: int, in_channels: int, growth_rate: int, bn_size: int):
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}", DenseLayer(in_channels + i * growth_rate, growth_rate, bn_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.add_module("norm", nn.BatchNorm2d(in_channels))
        self.add_module("relu", nn.ReLU(inplace=True))
        self.add_module("conv", nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False))
        self.add_module("pool", nn.AvgPool2d(kernel_size=2, stride=2))


class DenseNet(nn.Module):
    def __init__(self, growth_rate: int = 32, block_config=(6, 12, 24, 16), num_init_features: int = 64,
                 bn_size: int = 4, num_classes: int = 1000, final_norm: str = "norm5"):
        super().__init__()
        layers = OrderedDict([
            ("conv0", nn.Conv2d(3, num_init_features, kernel_size=7, stride=2, padding=3, bias=False)),
            ("norm0", nn.BatchNorm2d(num_init_features)),
            ("relu0", nn.ReLU(inplace=True)),
            ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
        ])
        channels = num_init_features
        for i, n in enumerate(block_config):
            layers[f"denseblock{i + 1}"] = DenseBlock(n, channels, growth_rate, bn_size)
            channels += n * growth_rate
            if i != len(block_config) - 1:
                layers[f"transition{i + 1}"] = Transition(channels, channels // 2)
                channels //= 2
        layers[final_norm] = nn.BatchNorm2d(channels)
        self.features = nn.Sequential(layers)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.features(x))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)


def _factory(name: str, final_norm: str = "norm5"):
    def make(num_classes: int = 1000) -> DenseNet:
        growth, blocks, init = CONFIGS[name]
        return DenseNet(growth, blocks, init, num_classes=num_classes, final_norm=final_norm)

    make.__name__ = name if final_norm == "norm5" else f"efficient_{name}"
    make.__doc__ = (f"torchvision-compatible {name} (random weights; load a state dict into it)." if
                    final_norm == "norm5" else
                    f"{name} with the names of gpleiss' memory-efficient DenseNet (features.norm_final); "
                    f"checkpointing changes nothing at inference and is left out.")
    return make


densenet121 = _factory("densenet121")
densenet161 = _factory("densenet161")
densenet169 = _factory("densenet169")
densenet201 = _factory("densenet201")

efficient_densenet121 = _factory("densenet121", "norm_final")
efficient_densenet169 = _factory("densenet169", "norm_final")
efficient_densenet201 = _factory("densenet201", "norm_final")
efficient_densenet161 = _factory("densenet161", "norm_final")
