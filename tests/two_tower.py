"""A tiny Caffe net with two parallel convolutions of the same shape, for tests that need two sibling
branches a spec could swap without any shape noticing.

    data -> tower_left  (Convolution 3x3, CH channels) --\\
    data -> tower_right (Convolution 3x3, CH channels) ---> fuse (Concat, or Eltwise SUM) -> head (1x1 conv)

``write(folder, join="concat", seed=0)`` writes ``two_tower.prototxt`` and seeded weights
``two_tower.caffemodel`` and returns both paths; ``prototxt(join)`` is the net's text.
"""

from __future__ import annotations

from pathlib import Path

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
