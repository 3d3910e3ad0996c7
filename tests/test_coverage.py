"""Element coverage (mapspec/coverage.py, spec language 1.1) through the engine: the parts of a source tensor
the rules take cover it exactly once; ignored names matched by a rule are errors."""

from __future__ import annotations

import numpy as np
import pytest

import mapspec
from mapspec import cli
from mapspec.errors import ErrorList, MapspecError

from language_util import UNSTACK, save, write


def test_unstacking_fewer_experts_than_the_data_is_an_element_coverage_error(tmp_path):
    # The case: --var n_experts=4 on an 8-expert checkpoint used to write 41 tensors and lose 4..7.
    fused = {f"layers.{i}.w1": np.arange(8 * 6, dtype=np.float32).reshape(8, 3, 2) + 100 * i for i in range(2)}
    src = save(tmp_path, fused)
    out = tmp_path / "out.npz"
    rc = cli.run(["apply", write(tmp_path, UNSTACK), "-s", src, "-o", str(out)])
    assert rc == 1 and not out.exists()
    with pytest.raises(ErrorList) as e:
        mapspec.plan(write(tmp_path, UNSTACK), src).check()
    assert [str(x).split(": ", 1)[1] for x in e.value.errors] == [
        "rows 4..7 of 'layers.0.w1' along axis 0 are not used by any rule (its 8 rows must all be taken; relax "
        "unused-elements if dropping them is intended)",
        "rows 4..7 of 'layers.1.w1' along axis 0 are not used by any rule (its 8 rows must all be taken; relax "
        "unused-elements if dropping them is intended)"]
    p = mapspec.plan(write(tmp_path, UNSTACK), src, relax=("unused-elements",))
    assert p.ok and len(p.warnings) == 2


def test_overlapping_parts_are_errors(tmp_path):
    spec = """
mapspec: 1.1
rules:
  - from: "qkv"
    to: "q"
    apply: [{slice: {start: 0, stop: 4}}]
    also:
      - to: "k"
        apply: [{slice: {start: 3, stop: 6}}]
"""
    src = save(tmp_path, {"qkv": np.arange(12, dtype=np.float32).reshape(6, 2)})
    with pytest.raises(MapspecError) as e:
        mapspec.plan(write(tmp_path, spec), src).check()
    assert "row 3 of 'qkv' along axis 0 is used by more than one output ('q', 'k')" in str(e.value)


def test_split_in_three_covers_a_fused_tensor(tmp_path):
    spec = """
mapspec: 1.1
rules:
  - from: "qkv"
    to: "part{p}"
    each: {p: {range: [0, 3]}}
    apply: [{split: {parts: 3, take: "{p}"}}]
"""
    src = save(tmp_path, {"qkv": np.arange(12, dtype=np.float32).reshape(6, 2)})
    assert mapspec.plan(write(tmp_path, spec), src).ok
    two = spec.replace("range: [0, 3]", "range: [0, 2]")
    with pytest.raises(MapspecError, match=r"rows 4..5 of 'qkv' along axis 0 are not used"):
        mapspec.plan(write(tmp_path, two), src).check()


def test_ignored_name_matched_by_a_rule_is_an_error(tmp_path):
    spec = """
mapspec: 1.1
rules:
  - from: "<n:path>.weight"
    to: "{n}.w"
  - from: "<n:path>"
    to: "{n}"
ignore: ["<l:word>.rotary.inv_freq"]
"""
    src = save(tmp_path, {"a.weight": np.zeros(2, np.float32), "a.rotary.inv_freq": np.zeros(2, np.float32)})
    with pytest.raises(MapspecError) as e:
        mapspec.plan(write(tmp_path, spec), src).check()
    assert "1 source tensor is listed under 'ignore:' but also matched by a rule" in str(e.value)
    assert "a.rotary.inv_freq (by rule 2 (from '<n:path>'))" in str(e.value)
    relaxed = spec + "relax: [ignored-and-matched]\n"
    p = mapspec.plan(write(tmp_path, relaxed), src)
    assert p.ok and "ignored-and-matched" in p.warnings[0]


def test_parts_of_parts_count_per_element(tmp_path):
    # fused experts [E, 2I, H] -> per expert w1 (first half) and w3 (second half): boxes on two axes
    spec = """
mapspec: 1.1
rules:
  - from: "gate_up"
    to: "experts.{e}.w1"
    each: {e: {range: [0, "{shape()[0]}"]}}
    apply: [{take: ["{e}"]}, {squeeze: [0]}, {slice: {stop: "{shape()[1] // 2}"}}]
    also:
      - to: "experts.{e}.w3"
        each: {e: {range: [0, "{shape()[0]}"]}}
        apply: [{take: ["{e}"]}, {squeeze: [0]}, {slice: {start: "{shape()[1] // 2}"}}]
"""
    src = save(tmp_path, {"gate_up": np.arange(3 * 4 * 2, dtype=np.float32).reshape(3, 4, 2)})
    assert mapspec.plan(write(tmp_path, spec), src).check()
    half = spec.replace('{slice: {start: "{shape()[1] // 2}"}}', '{slice: {start: 3}}')
    with pytest.raises(MapspecError, match=r"6 of the 24 elements of 'gate_up' are not used by any rule"):
        mapspec.plan(write(tmp_path, half), src).check()
    over = spec.replace('{slice: {start: "{shape()[1] // 2}"}}', '{slice: {start: 1}}')
    with pytest.raises(MapspecError, match=r"elements of 'gate_up' are used by more than one output "
                                           r"\('experts.0.w1', 'experts.0.w3'\)"):
        mapspec.plan(write(tmp_path, over), src).check()


def test_reversed_and_strided_slices_count_their_rows(tmp_path):
    spec = """
mapspec: 1.1
rules:
  - from: "w"
    to: "even"
    apply: [{slice: {step: 2}}]
    also: [{to: "odd_reversed", apply: [{slice: {start: -1, step: -2}}]}]
"""
    src = save(tmp_path, {"w": np.arange(12, dtype=np.float32).reshape(6, 2)})
    assert mapspec.plan(write(tmp_path, spec), src).ok
    short = spec.replace("{start: -1, step: -2}", "{start: -3, step: -2}")
    with pytest.raises(MapspecError, match=r"row 5 of 'w' along axis 0 is not used"):
        mapspec.plan(write(tmp_path, short), src).check()


def test_parts_taken_through_a_splitting_reshape(tmp_path):
    # GPT-NeoX's fused rows are [heads, (q, k, v), head_dim]: taking q and k only leaves every head's v rows
    spec = """
mapspec: 1.1
rules:
  - from: "qkv"
    to: "{names[j]}"
    each: {j: [0, 1]}
    apply: [{reshape: [2, 3, -1, 2]}, {take: {indices: ["{j}"], axis: 1}}, {reshape: [-1, 2]}]
vars: {names: [q, k, v]}
"""
    src = save(tmp_path, {"qkv": np.arange(24, dtype=np.float32).reshape(12, 2)})
    with pytest.raises(MapspecError, match=r"rows 4..5, 10..11 of 'qkv' along axis 0 are not used by any rule"):
        mapspec.plan(write(tmp_path, spec), src).check()
    assert mapspec.plan(write(tmp_path, spec.replace("[0, 1]", "[0, 1, 2]")), src).ok
    twice = """
mapspec: 1.1
rules:
  - from: "qkv"
    to: "{names[j]}"
    each: {j: [0, 1, 2]}
    apply: [{reshape: [2, 3, -1, 2]}, {take: {indices: ["{j}"], axis: 1}}, {reshape: [-1, 2]}]
    also: [{to: again, apply: [{reshape: [2, 3, -1, 2]}, {take: {indices: [0], axis: 1}}]}]
vars: {names: [q, k, v]}
"""
    with pytest.raises(MapspecError, match=r"rows 0..1, 6..7 of 'qkv' along axis 0 are used by more than one output "
                                           r"\('q', 'again'\)"):
        mapspec.plan(write(tmp_path, twice), src).check()
