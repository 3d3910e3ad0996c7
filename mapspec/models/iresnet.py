"""insightface's iresnet (arcface_torch ``backbones/iresnet.py``) as a PyTorch module: the target of
``specs/insightface/mxnet-to-iresnet``.

Laid out as arcface_torch lays it out, so its state dicts load there unchanged: the stem ``conv1`` (3x3,
stride 1) -> ``bn1`` -> ``prelu``; ``layer1..4`` of ``IBasicBlock`` units (``bn1`` -> ``conv1`` 3x3 ->
``bn2`` -> ``prelu`` -> ``conv2`` 3x3 with the stage's stride 2 -> ``bn3``, plus ``downsample`` =
``conv1x1`` + BatchNorm in each stage's first unit), widths 64/128/256/512; the head ``bn2`` -> flatten ->
``dropout`` -> ``fc`` (512*7*7 -> the embedding) -> ``features`` (BatchNorm1d, weight fixed at 1).  Every
BatchNorm has eps 1e-5.  The input is what arcface_torch feeds it: RGB 112x112 already normalised,
``(x / 255 - 0.5) / 0.5``; the model does not normalise (insightface's MXNet graphs do, inside).

Hyper-parameters (typed in :mod:`mapspec.models.registry`): ``depth`` (18, 34, 50, 100: units per stage from
:data:`UNITS`) and ``num_features`` (the embedding size), arcface_torch's defaults 50 and 512.
"""

from __future__ import annotations

from ..errors import MapspecError

UNITS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3)}
WIDTHS = (64, 128, 256, 512)
EPS = 1e-5


def iresnet(depth: int = 50, num_features: int = 512):
    """arcface_torch's iresnet of ``depth`` (18, 34, 50, 100) with an embedding of ``num_features``."""
    if depth not in UNITS:
        raise MapspecError(f"iresnet depth {depth} is not one of {', '.join(map(str, UNITS))}")
    return _build(UNITS[depth], int(num_features))


def _build(units: tuple, num_features: int):
    import torch
    from torch import nn

    def conv(cin, cout, k, stride=1):
        return nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)

    class IBasicBlock(nn.Module):
        def __init__(self, cin, cout, stride, downsample):
            super().__init__()
            self.bn1 = nn.BatchNorm2d(cin, eps=EPS)
            self.conv1 = conv(cin, cout, 3)
            self.bn2 = nn.BatchNorm2d(cout, eps=EPS)
            self.prelu = nn.PReLU(cout)
            self.conv2 = conv(cout, cout, 3, stride)
            self.bn3 = nn.BatchNorm2d(cout, eps=EPS)
            self.downsample = downsample

        def forward(self, x):
            y = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
            return y + (self.downsample(x) if self.downsample is not None else x)

    class IResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = conv(3, WIDTHS[0], 3)
            self.bn1 = nn.BatchNorm2d(WIDTHS[0], eps=EPS)
            self.prelu = nn.PReLU(WIDTHS[0])
            cin = WIDTHS[0]
            for s, (n, width) in enumerate(zip(units, WIDTHS), start=1):
                down = nn.Sequential(nn.Conv2d(cin, width, 1, 2, bias=False), nn.BatchNorm2d(width, eps=EPS))
                blocks = [IBasicBlock(cin, width, 2, down)] + [IBasicBlock(width, width, 1, None) for _ in range(n - 1)]
                setattr(self, f"layer{s}", nn.Sequential(*blocks))
                cin = width
            self.bn2 = nn.BatchNorm2d(cin, eps=EPS)
            self.dropout = nn.Dropout(p=0)
            self.fc = nn.Linear(cin * 7 * 7, num_features)
            self.features = nn.BatchNorm1d(num_features, eps=EPS)
            nn.init.constant_(self.features.weight, 1.0)
            self.features.weight.requires_grad = False

        def forward(self, x):
            x = self.prelu(self.bn1(self.conv1(x)))
            for s in range(1, 5):
                x = getattr(self, f"layer{s}")(x)
            x = self.dropout(torch.flatten(self.bn2(x), 1))
            return self.features(self.fc(x))

    return IResNet().train(False)  # inference mode (nn.Module.eval)
