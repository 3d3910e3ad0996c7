"""Shared by the engine tests: the DenseNet spec's name, a spec writer and a small spec with its source."""

from __future__ import annotations

import numpy as np

from mapspec.formats import module


SPEC = "densenet/caffe-to-torchvision"


def write_spec(tmp_path, text, name="spec.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


SMALL = """\
mapspec: 1
source: {format: npz}
target: {format: npz}
vars:
  widths: {1: 2, 2: 3}
rules:
  - from: "w<i>"
    to: "layer{i}.weight"
    apply: [{reshape: [-1, "{widths[i]}"]}]
  - from: "b<i>"
    each: {part: [0, 1]}
    to: "layer{i}.half{part}"
    apply: [{split: {parts: 2, take: "{part}"}}]
  - to: "steps"
    value: [[1, 2], [3, 4]]
    dtype: int32
"""


def _small_source(tmp_path):
    src = tmp_path / "s.npz"
    module("npz").save(src, {"w1": np.arange(4, dtype=np.float32), "w2": np.arange(6, dtype=np.float32),
                             "b1": np.arange(4, dtype=np.float64)})
    return src
