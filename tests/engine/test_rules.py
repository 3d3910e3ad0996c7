"""Per-rule helpers of the planner (mapspec/engine/rules.py): each expansion bounded before it is made,
shape() of a named tensor in expressions."""

from __future__ import annotations

import numpy as np
import pytest

import mapspec
from mapspec import cli
from mapspec.errors import MapspecError

from language_util import save, write


def test_shape_of_a_named_tensor_in_expressions(tmp_path):
    spec = """
mapspec: 1.1
rules:
  - from: "emb"
    to: "emb"
    apply: [{reshape: ["{shape('emb')[1]}", -1]}]
  - to: "n_vocab"
    value: 0
    shape: ["{shape('emb')[0]}"]
    dtype: int64
"""
    src = save(tmp_path, {"emb": np.arange(12, dtype=np.float32).reshape(4, 3)})
    p = mapspec.plan(write(tmp_path, spec), src).check()
    assert [s.out_meta.shape for s in p.steps] == [(3, 4), (4,)]
    bad = spec.replace("shape('emb')[1]", "shape('emd')[1]")
    with pytest.raises(MapspecError, match=r"shape\('emd'\): no such source tensor \(closest: 'emb'\)"):
        mapspec.plan(write(tmp_path, bad), src).check()
    assert cli.run(["validate", write(tmp_path, spec)]) == 0


def test_each_range_is_counted_before_it_is_materialised(tmp_path):
    spec = """
mapspec: 1.1
rules:
  - from: "w"
    to: "w{k}"
    each: {k: {range: [0, "{n}"]}}
vars: {n: 4611686018427387904}
"""
    src = save(tmp_path, {"w": np.zeros(2, np.float32)})
    with pytest.raises(MapspecError, match="'each' expands to 4611686018427387904 outputs, more than 100000"):
        mapspec.plan(write(tmp_path, spec), src).check()
    static = spec.replace('"{n}"', "100000001")
    with pytest.raises(MapspecError, match="'each' expands to 100000001 outputs, more than 100000"):
        mapspec.load_spec(write(tmp_path, static))
