"""Spec language 1.1 through the engine: stack, element coverage, shape(), config vars, ignore conflicts, each bounds."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import mapspec
from mapspec import cli
from mapspec.errors import ErrorList, MapspecError
from mapspec.formats import module


def write(tmp_path, text, name="spec.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def experts(n_layers=2, n_experts=4, rows=3, cols=2):
    """Per-expert weights, distinct values everywhere."""
    out = {}
    k = 0
    for i in range(n_layers):
        for e in range(n_experts):
            out[f"layers.{i}.experts.{e}.w1"] = np.arange(k, k + rows * cols, dtype=np.float32).reshape(rows, cols)
            k += rows * cols
    return out


def save(tmp_path, tensors, name="src.npz"):
    p = tmp_path / name
    module("npz").save(p, tensors)
    return str(p)


def load(path):
    with mapspec.open_checkpoint(path) as r:
        return {n: np.array(r.read(n)) for n in r.infos()}


STACK = """
mapspec: 1.1
rules:
  - from: "layers.<i>.experts.<e>.w1"
    to: "layers.{i}.w1"
    stack: {over: e, axis: 0}
"""

UNSTACK = """
mapspec: 1.1
rules:
  - from: "layers.<i>.w1"
    to: "layers.{i}.experts.{e}.w1"
    each: {e: {range: [0, "{n_experts}"]}}
    apply: [{take: ["{e}"]}, {squeeze: [0]}]
vars: {n_experts: 4}
"""


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


CONFIG_SPEC = """
mapspec: 1.1
config:
  file: [params.json, config.json]
  vars: {heads: [n_heads, num_attention_heads], vocab: model.vocab}
vars: {vocab: 7}
rules:
  - from: "wq"
    to: "q"
    apply: [{reshape: ["{heads}", -1]}]
"""


def test_config_vars_come_from_the_file_beside_the_checkpoint(tmp_path):
    src = save(tmp_path, {"wq": np.arange(12, dtype=np.float32)})
    spec = write(tmp_path, CONFIG_SPEC)
    with pytest.raises(MapspecError, match=r"no config file \(params.json, config.json\) beside the source, so no "
                                           r"value for heads \(from n_heads or num_attention_heads\)"):
        mapspec.plan(spec, src)
    assert mapspec.plan(spec, src, vars={"heads": 3}).check().steps[0].out_meta.shape == (3, 4)  # --var suffices
    (tmp_path / "config.json").write_text(json.dumps({"num_attention_heads": 4}))
    p = mapspec.plan(spec, src).check()
    assert p.steps[0].out_meta.shape == (4, 3) and p.spec.vars["vocab"] == 7
    (tmp_path / "params.json").write_text(json.dumps({"n_heads": 6, "model": {"vocab": 9}}))
    p = mapspec.plan(spec, src).check()
    assert p.steps[0].out_meta.shape == (6, 2) and p.spec.vars["vocab"] == 9
    other = tmp_path / "other.yaml"
    other.write_text("n_heads: 3\n")
    assert mapspec.plan(spec, src, vars_file=str(other)).check().steps[0].out_meta.shape == (3, 4)
    assert mapspec.plan(spec, src, vars={"heads": 2}).check().steps[0].out_meta.shape == (2, 6)
    out = tmp_path / "o.npz"
    assert cli.run(["apply", spec, "-s", src, "-o", str(out), "--vars-file", str(other)]) == 0
    assert load(out)["q"].shape == (3, 4)


def test_vars_file_without_config_section_sets_vars(tmp_path):
    spec = write(tmp_path, CONFIG_SPEC.replace("config:\n  file: [params.json, config.json]\n  vars: {heads: [n_heads, "
                                               "num_attention_heads], vocab: model.vocab}\n", "").replace(
        "vars: {vocab: 7}", "vars: {vocab: 7, heads: 1}"))
    src = save(tmp_path, {"wq": np.arange(12, dtype=np.float32)})
    f = tmp_path / "v.json"
    f.write_text(json.dumps({"heads": 3}))
    assert mapspec.plan(spec, src, vars_file=str(f)).check().steps[0].out_meta.shape == (3, 4)
    f.write_text(json.dumps({"hedas": 3}))
    with pytest.raises(MapspecError, match="'hedas' is not a var of"):
        mapspec.plan(spec, src, vars_file=str(f))


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


def test_plan_lists_stacked_sources(tmp_path):
    import io

    out = io.StringIO()
    assert cli.run(["plan", write(tmp_path, STACK), "-s", save(tmp_path, experts())], stdout=out) == 0
    assert "layers.0.experts.0.w1 (+3 stacked)" in out.getvalue()


def test_config_file_that_is_not_a_regular_file_or_missing(tmp_path):
    import os

    src = save(tmp_path, {"wq": np.arange(12, dtype=np.float32)})
    spec = write(tmp_path, CONFIG_SPEC)
    with pytest.raises(MapspecError, match="nope.json: no such config file"):
        mapspec.plan(spec, src, vars_file=str(tmp_path / "nope.json"))
    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)
    with pytest.raises(MapspecError, match="config.json: the config file is not a regular file"):
        mapspec.plan(spec, src, vars_file=str(fifo))
    big = tmp_path / "big.json"
    big.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(MapspecError, match="not a JSON/YAML config"):
        mapspec.plan(spec, src, vars_file=str(big))


def test_stacked_parts_must_agree_and_axis_must_fit(tmp_path):
    src = experts(n_layers=1, n_experts=2)
    src["layers.0.experts.1.w1"] = np.zeros((3, 3), np.float32)
    with pytest.raises(MapspecError, match=r"stack over 'e': 'layers.0.experts.1.w1' gives 'layers.0.w1' 3x3 float32 "
                                           r"but 'layers.0.experts.0.w1' gives 'layers.0.w1' 3x2 float32; stacked "
                                           r"parts must agree"):
        mapspec.plan(write(tmp_path, STACK), save(tmp_path, src)).check()
    with pytest.raises(MapspecError, match="stack axis 3 out of range for a 3-dimensional result"):
        mapspec.plan(write(tmp_path, STACK.replace("axis: 0", "axis: 3")), save(tmp_path, experts(), "b.npz")).check()


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


@pytest.mark.parametrize("feature,text", [
    ("'stack'", 'rules: [{from: "e<e>", to: w, stack: {over: e}}]'),
    ("a 'config:' section", "config: {file: c.json, vars: {n: n}}\nrules: []"),
    ("an optional or alternative name part", 'rules: [{from: "<?a.>w", to: w}]'),
    ("shape() in an expression", 'rules: [{from: w, to: w, apply: [{reshape: ["{shape()[0]}", -1]}]}]'),
    ("the transform 'rope_permute'", "rules: [{from: w, to: w, apply: [{rope_permute: {heads: 2, to: hf}}]}]"),
    ("relax 'unused-elements'", "relax: [unused-elements]\nrules: []"),
])
def test_a_1_1_feature_needs_mapspec_1_1(tmp_path, feature, text):
    with pytest.raises(MapspecError, match=re.escape(feature) + ".* is spec language 1.1: declare .mapspec: 1.1."):
        mapspec.load_spec(write(tmp_path, "mapspec: 1\n" + text + "\n"))
    mapspec.load_spec(write(tmp_path, "mapspec: 1.1\n" + text + "\n", "ok.yaml"))
