"""Loading a spec (mapspec/language/load.py): includes, every shipped spec loads, 1.1 features need 1.1."""

from __future__ import annotations

import re

import numpy as np
import pytest

import mapspec
from mapspec.errors import MapspecError, SpecError
from mapspec.formats import module

from engine_util import SPEC, write_spec
from language_util import write


def test_include_appends_rules_after_own(tmp_path):
    write_spec(tmp_path, """\
mapspec: 1
vars: {n: 7}
rules:
  - from: "<x:word>"
    to: "inc.{x}"
""", "base.yaml")
    spec = write_spec(tmp_path, """\
mapspec: 1
include: [base.yaml]
rules:
  - from: "a"
    to: "own.a{n}"
""")
    src = tmp_path / "s.npz"
    module("npz").save(src, {"a": np.ones(1, np.float32), "b": np.ones(1, np.float32)})
    p = mapspec.plan(spec, str(src))
    assert p.ok, p.errors
    assert [s.target for s in p.steps] == ["own.a7", "inc.b"]
    assert [s.rule.index for s in p.steps] == [1, 2]


def test_include_cycle_is_an_error(tmp_path):
    write_spec(tmp_path, "mapspec: 1\ninclude: [b.yaml]\nrules: []\n", "a.yaml")
    write_spec(tmp_path, "mapspec: 1\ninclude: [a.yaml]\nrules: []\n", "b.yaml")
    with pytest.raises(SpecError, match="includes itself"):
        mapspec.load_spec(str(tmp_path / "a.yaml"))


def test_shipped_specs_validate():
    from mapspec.resources import shipped_specs

    specs = shipped_specs()
    assert SPEC in specs
    for name, path in specs.items():
        mapspec.load_spec(str(path))


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
