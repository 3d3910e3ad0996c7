"""stack (mapspec/stacking.py, spec language 1.1) through the engine: matches joined along a new axis, in
capture order; gaps, duplicates and disagreeing parts are errors."""

from __future__ import annotations

import numpy as np
import pytest

import mapspec
from mapspec import cli
from mapspec.errors import MapspecError

from language_util import STACK, UNSTACK, experts, load, save, write


def test_stack_joins_matches_in_order_of_the_capture(tmp_path):
    src = experts()
    out = tmp_path / "out.npz"
    mapspec.apply(write(tmp_path, STACK), save(tmp_path, src), str(out))
    got = load(out)
    assert sorted(got) == ["layers.0.w1", "layers.1.w1"]
    for i in range(2):
        want = np.stack([src[f"layers.{i}.experts.{e}.w1"] for e in range(4)])
        np.testing.assert_array_equal(got[f"layers.{i}.w1"], want)


def test_stack_on_another_axis_and_with_transforms(tmp_path):
    spec = STACK.replace("axis: 0", "axis: -1") + "    apply: [{transpose: [1, 0]}]\n"
    src = experts()
    out = tmp_path / "out.npz"
    mapspec.apply(write(tmp_path, spec), save(tmp_path, src), str(out))
    got = load(out)["layers.1.w1"]
    assert got.shape == (2, 3, 4)
    for e in range(4):
        np.testing.assert_array_equal(got[..., e], src[f"layers.1.experts.{e}.w1"].T)


def test_stack_round_trip_with_size_from_the_data(tmp_path):
    src = experts(n_experts=5)
    fused = tmp_path / "fused.npz"
    mapspec.apply(write(tmp_path, STACK), save(tmp_path, src), str(fused))
    back = tmp_path / "back.npz"
    spec = UNSTACK.replace('"{n_experts}"', '"{shape()[0]}"')
    mapspec.apply(write(tmp_path, spec, "un.yaml"), str(fused), str(back))
    got = load(back)
    assert got.keys() == src.keys()
    for k in src:
        assert got[k].tobytes() == src[k].tobytes() and got[k].dtype == src[k].dtype


@pytest.mark.parametrize("drop,msg", [
    ("layers.0.experts.2.w1", "stack over 'e' for i=0: the matches must number e=0..N-1, but e=2 is missing"),
    ("layers.1.experts.3.w1", "stack over 'e': groups have different numbers of matches (i=0: 4; i=1: 3)"),
])
def test_stack_gaps_and_different_counts_are_errors(tmp_path, drop, msg):
    src = experts()
    del src[drop]
    with pytest.raises(MapspecError) as e:
        mapspec.plan(write(tmp_path, STACK), save(tmp_path, src)).check()
    assert msg in str(e.value)


def test_stack_duplicate_from_optional_part_is_an_error(tmp_path):
    src = experts(n_layers=1, n_experts=2)
    src["model.layers.0.experts.1.w1"] = src["layers.0.experts.1.w1"]
    spec = STACK.replace('"layers.<i>', '"<?model.>layers.<i>')
    with pytest.raises(MapspecError, match=r"e=1 is matched twice \('layers.0.experts.1.w1', "
                                           r"'model.layers.0.experts.1.w1'\)"):
        mapspec.plan(write(tmp_path, spec), save(tmp_path, src)).check()


def test_stack_over_must_be_an_int_capture_not_in_to(tmp_path):
    bad = STACK.replace("stack: {over: e", "stack: {over: k")
    with pytest.raises(MapspecError, match=r"stack over 'k': 'k' must be an integer capture of 'from'"):
        mapspec.load_spec(write(tmp_path, bad))
    bad = STACK.replace('to: "layers.{i}.w1"', 'to: "layers.{i}.{e}.w1"')
    with pytest.raises(MapspecError, match=r"'to' uses \{e\}, so every match would be its own output"):
        mapspec.load_spec(write(tmp_path, bad))


def test_plan_lists_stacked_sources(tmp_path):
    import io

    out = io.StringIO()
    assert cli.run(["plan", write(tmp_path, STACK), "-s", save(tmp_path, experts())], stdout=out) == 0
    assert "layers.0.experts.0.w1 (+3 stacked)" in out.getvalue()


def test_stacked_parts_must_agree_and_axis_must_fit(tmp_path):
    src = experts(n_layers=1, n_experts=2)
    src["layers.0.experts.1.w1"] = np.zeros((3, 3), np.float32)
    with pytest.raises(MapspecError, match=r"stack over 'e': 'layers.0.experts.1.w1' gives 'layers.0.w1' 3x3 float32 "
                                           r"but 'layers.0.experts.0.w1' gives 'layers.0.w1' 3x2 float32; stacked "
                                           r"parts must agree"):
        mapspec.plan(write(tmp_path, STACK), save(tmp_path, src)).check()
    with pytest.raises(MapspecError, match="stack axis 3 out of range for a 3-dimensional result"):
        mapspec.plan(write(tmp_path, STACK.replace("axis: 0", "axis: 3")), save(tmp_path, experts(), "b.npz")).check()
