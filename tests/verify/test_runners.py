"""The runner registry: every registered runner is a module with build(side); the schema holds no list of
runners (the registry is the only one); the tolerances live in one place."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from mapspec.verify import ATOL, COSINE, RUNNERS, Side, make_runner

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(RUNNERS))
def test_each_runner_is_a_module_with_build(name):
    try:
        mod = importlib.import_module(RUNNERS[name].module)
    except ModuleNotFoundError as e:
        pytest.skip(f"{name} needs {e.name}")
    assert callable(mod.build)


def test_schema_leaves_runner_names_to_the_registry():
    schema = json.loads((ROOT / "schemas" / "mapspec-1.schema.json").read_text())
    assert "enum" not in schema["$defs"]["runner"]["properties"]["run"]


def test_unknown_runner_is_an_error():
    with pytest.raises(Exception) as e:
        make_runner(Side(name="source", kind="tf", weights="x"))
    assert "unknown runner 'tf'; known runners: caffe, mxnet" in str(e.value)


def test_tolerances_are_defined_once():
    assert (ATOL, COSINE) == (1e-4, 0.99999)
    for path in (ROOT / "mapspec").rglob("*.py"):
        if path.name != "metrics.py":
            text = path.read_text()
            assert "0.99999" not in text, path
