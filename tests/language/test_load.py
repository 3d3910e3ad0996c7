"""Loading a spec (mapspec/language/load.py): includes, and every shipped spec loads."""

from __future__ import annotations

import numpy as np
import pytest

import mapspec
from mapspec.errors import SpecError
from mapspec.formats import module

from engine_util import SPEC, write_spec


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
