"""A tiny Caffe net with two parallel convolutions of the same shape, for tests that need two sibling
branches a spec could swap without any shape noticing.

    data -> tower_left  (Convolution 3x3, CH channels) --\\
    data -> tower_right (Convolution 3x3, CH channels) ---> fuse (Concat, or Eltwise SUM) -> head (1x1 conv)

``write(folder, join="concat", seed=0)`` writes ``two_tower.prototxt`` and seeded weights
``two_tower.caffemodel`` and returns both paths; ``prototxt(join)`` is the net's text.

The same idea with a stem, a fully connected head and a torch twin (``mapspec draft``'s tests and
benchmark):

    data -> stem (conv 3->4, 3x3) -> ReLU -> first tower (conv 4->4, 3x3) --\\
                                          -> second tower (conv 4->4, 3x3) --> Concat(first, second) -> fc (-> 5)

``caffe_files(folder, first, second, bn=False, order=None)`` writes it (``bn``: each tower's
convolution followed by BatchNorm + Scale; ``order``: the order the towers are listed in).
``torch_module(first, second, torch_order)`` is the net in torch: ``first``/``second`` are the
attributes fed first/second into the concat, registered in ``torch_order``, so that its state dict
lists them in that order while computing the same function; ``caffe_output``/``torch_output`` run
each side (the Caffe side with mapspec's Caffe executor) for a ``cosine`` between them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CH = 4
SIZE = 8
JOINS = {"concat": 'type: "Concat"',
         "sum": 'type: "Eltwise" eltwise_param { operation: SUM }'}


def prototxt(join: str = "concat") -> str:
    def tower(n):
        return (f'layer {{ name: "{n}" type: "Convolution" bottom: "data" top: "{n}" '
                f'convolution_param {{ num_output: {CH} kernel_size: 3 pad: 1 }} }}\n')
    return (f'name: "two_tower"\ninput: "data"\ninput_shape {{ dim: 1 dim: 3 dim: {SIZE} dim: {SIZE} }}\n'
            + tower("tower_left") + tower("tower_right")
            + f'layer {{ name: "fuse" {JOINS[join]} bottom: "tower_left" bottom: "tower_right" top: "fuse" }}\n'
            + 'layer { name: "head" type: "Convolution" bottom: "fuse" top: "head" '
              'convolution_param { num_output: 3 kernel_size: 1 } }\n')


def write(folder, join: str = "concat", seed: int = 0) -> tuple[Path, Path]:
    from mapspec.models.seeded import write_caffemodel

    folder = Path(folder)
    proto, model = folder / "two_tower.prototxt", folder / "two_tower.caffemodel"
    proto.write_text(prototxt(join))
    write_caffemodel(str(proto), str(model), seed=seed)
    return proto, model


HW = 6


def caffe_prototxt(first: str = "tower_left", second: str = "tower_right", bn: bool = False, order=None) -> str:
    """The net; ``bn``: each tower's convolution (without a bias) followed by BatchNorm + Scale; ``order``: the
    order the towers are listed in (default: first, second)."""
    def conv(name, bottom, n, norm=False):
        text = (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}"\n'
                f'  convolution_param {{ num_output: {n} kernel_size: 3 pad: 1 '
                f'bias_term: {str(not norm).lower()} }} }}\n')
        if norm:
            text += (f'layer {{ name: "{name}_bn" type: "BatchNorm" bottom: "{name}" top: "{name}" }}\n'
                     f'layer {{ name: "{name}_scale" type: "Scale" bottom: "{name}" top: "{name}" '
                     f'scale_param {{ bias_term: true }} }}\n')
        return text

    return ('name: "TwoTower"\n'
            f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 1 dim: 3 dim: {HW} '
            f'dim: {HW} }} }} }}\n'
            + conv("stem", "data", 4)
            + 'layer { name: "stem_relu" type: "ReLU" bottom: "stem" top: "stem" }\n'
            + "".join(conv(t, "stem", 4, bn) for t in (order or (first, second)))
            + f'layer {{ name: "concat" type: "Concat" bottom: "{first}" bottom: "{second}" top: "concat" }}\n'
            'layer { name: "fc" type: "InnerProduct" bottom: "concat" top: "fc" '
            'inner_product_param { num_output: 5 } }\n')


def caffe_files(d: Path, first: str = "tower_left", second: str = "tower_right", seed: int = 7, **kw) -> tuple:
    """(prototxt, caffemodel) in ``d``: seeded weights, every tensor different (``kw``: :func:`prototxt`'s)."""
    from mapspec.models.seeded import write_caffemodel

    d.mkdir(parents=True, exist_ok=True)
    proto = d / "two_tower.prototxt"
    proto.write_text(caffe_prototxt(first, second, **kw))
    model = d / "two_tower.caffemodel"
    write_caffemodel(str(proto), str(model), seed=seed)
    return proto, model


def torch_module(first: str = "left", second: str = "right", torch_order: tuple = ("right", "left")):
    """The net in torch: ``first``/``second`` are the attributes fed first/second into the concat, registered
    in ``torch_order`` (names among first and second)."""
    import torch
    from torch import nn

    class TwoTower(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3, padding=1)
            for name in torch_order:
                setattr(self, name, nn.Conv2d(4, 4, 3, padding=1))
            self.fc = nn.Linear(8 * HW * HW, 5)

        def forward(self, x):
            x = torch.relu(self.stem(x))
            return self.fc(torch.cat([getattr(self, first)(x), getattr(self, second)(x)], 1).flatten(1))

    return TwoTower()


def torch_template(path: Path, **kw) -> Path:
    """A freshly initialised state dict of :func:`torch_module`, as a user gives a template."""
    import torch

    torch.manual_seed(0)
    torch.save(torch_module(**kw).state_dict(), path)
    return path


def caffe_output(proto: Path, weights: dict, x: np.ndarray) -> np.ndarray:
    from mapspec.frameworks.caffe.executor import CaffeExecutor

    return CaffeExecutor(str(proto), weights).run({"data": x}, outputs=["fc"])["fc"]


def torch_output(state: dict, x: np.ndarray, **kw) -> np.ndarray:
    import torch

    m = torch_module(**kw)
    m.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})
    with torch.no_grad():
        return m(torch.from_numpy(x)).numpy()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
