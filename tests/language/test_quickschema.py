"""mapspec/language/quickschema.py against jsonschema itself (the oracle): it may say "valid" only
where jsonschema finds no error, and it must say so for every shipped spec (or it saves nothing).

Documents: every shipped spec, every spec of the bad-spec catalogue and the benchmarks, and
Hypothesis mutations of them (a node replaced by a random JSON value, a key dropped, a key added).
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mapspec.errors import MapspecError
from mapspec.language import quickschema, yamlsafe
from mapspec.language.schema import schema

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "specs").rglob("*.yaml"))
OTHERS = sorted((ROOT / "tests" / "language" / "bad_specs").glob("*.yaml")) + sorted(
    (ROOT / "benchmarks" / "specs").glob("*.yaml"))


def _load(path):
    try:
        return yamlsafe.load_file(path)
    except MapspecError:
        return None  # not YAML mapspec reads (bad_yaml.yaml): never reaches the schema


def _js_valid(doc) -> bool:
    return jsonschema.Draft202012Validator(schema()).is_valid(doc)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_spec_passes_without_jsonschema(path):
    doc = _load(path)
    assert _js_valid(doc)
    assert quickschema.valid(doc, schema())


@pytest.mark.parametrize("path", OTHERS, ids=lambda p: str(p.relative_to(ROOT)))
def test_catalogue_and_benchmark_specs_agree_with_jsonschema(path):
    doc = _load(path)
    if doc is None:
        pytest.skip("not YAML")
    assert quickschema.valid(doc, schema()) == _js_valid(doc)


_DOCS = [d for d in (_load(p) for p in SHIPPED + OTHERS) if d is not None]

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(-2, 2, allow_nan=False) | st.sampled_from(
        ["", "x", "a.b", "float32", "transpose", "safetensors", "1", "<i>", "{i}", "torch"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["from", "to", "apply", "format", "name", "rules", "x", "drop", "value", "dtype",
                         "shape", "transpose", "cast", "mapspec", "source", "target"]), inner, max_size=3),
    max_leaves=8)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _plain(node):
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_specs_agree_with_jsonschema(data):
    doc = _plain(data.draw(st.sampled_from(_DOCS)))
    doc = copy.deepcopy(doc)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = list(_paths(doc))
        path = data.draw(st.sampled_from(paths))
        action = data.draw(st.sampled_from(["replace", "drop", "add"]))
        if not path:
            continue
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        key = path[-1]
        if action == "replace":
            parent[key] = data.draw(_json)
        elif action == "drop":
            del parent[key]
        elif isinstance(parent[key], dict):
            parent[key][data.draw(st.sampled_from(["x", "to", "apply", "value", "allow", "when"]))] = data.draw(_json)
        elif isinstance(parent[key], list):
            parent[key].append(data.draw(_json))
    assert quickschema.valid(doc, schema()) == _js_valid(doc)


@pytest.mark.parametrize("doc, schema_, want", [
    (True, {"type": "integer"}, False),          # a boolean is no number in JSON
    (1.0, {"type": "integer"}, True),            # but 1.0 is an integer
    ([1, 1.0], {"uniqueItems": True}, False),    # equal as JSON
    ([1, True], {"uniqueItems": True}, True),    # not equal as JSON
    ("é", {"maxLength": 1}, True),               # code points
    ("xab", {"pattern": "ab"}, True),            # searched, not matched
    ({"a": 1}, {"propertyNames": {"pattern": "^b"}}, False),
    ({1: 2}, {"type": "object", "additionalProperties": {"type": "integer"}}, True),  # YAML's {2: 6}
    ({1: 2}, {"propertyNames": {"minLength": 1}}, False),  # a non-string key against a name rule: jsonschema
    (1, {"format": "uri"}, False),               # an unknown keyword: jsonschema decides
    (1, {"$ref": "http://example.com/s"}, False),  # a remote reference: jsonschema decides
])
def test_json_schema_semantics_and_doubt(doc, schema_, want):
    assert quickschema.valid(doc, schema_) is want
    if want:  # "yes" must be jsonschema's answer too
        assert jsonschema.Draft202012Validator(schema_).is_valid(doc)


def test_apply_of_a_valid_spec_never_imports_jsonschema(tmp_path):
    spec = ROOT / "benchmarks" / "specs" / "safetensors-rename-only.yaml"
    code = ("import sys; from mapspec.language.load import load_spec; load_spec(sys.argv[1]); "
            "print('jsonschema' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(spec)], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# -- random schemas of the keywords quickschema knows, random documents: its "yes" is jsonschema's --

_KEYS = ["a", "b", "ab", "x1"]
_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2) | st.sampled_from([0.0, 1.0, 1.5, -0.5])
    | st.sampled_from(["", "a", "ab", "b1", "é"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(_KEYS), inner, max_size=3),
    max_leaves=6)
_small = st.integers(0, 3)
_leaf = st.one_of(
    st.builds(lambda t: {"type": t}, st.sampled_from(["object", "array", "string", "integer", "number", "boolean",
                                                      "null"]) | st.lists(st.sampled_from(["string", "integer",
                                                                                           "null"]), min_size=1)),
    st.builds(lambda n: {"minLength": n}, _small), st.builds(lambda n: {"maxLength": n}, _small),
    st.builds(lambda p: {"pattern": p}, st.sampled_from(["a", "^a", "b$", "^[a-z]+$"])),
    st.builds(lambda n: {"minimum": n}, st.integers(-1, 1)), st.builds(lambda n: {"maximum": n}, st.integers(-1, 1)),
    st.builds(lambda n: {"exclusiveMinimum": n}, st.integers(-1, 1)),
    st.builds(lambda n: {"exclusiveMaximum": n}, st.integers(-1, 1)),
    st.builds(lambda v: {"enum": v}, st.lists(_values, min_size=1, max_size=3)),
    st.builds(lambda v: {"const": v}, _values),
    st.builds(lambda n: {"minItems": n}, _small), st.builds(lambda n: {"maxItems": n}, _small),
    st.just({"uniqueItems": True}), st.just({"uniqueItems": False}),
    st.builds(lambda r: {"required": r}, st.lists(st.sampled_from(_KEYS), max_size=2, unique=True)),
    st.builds(lambda n: {"minProperties": n}, _small), st.builds(lambda n: {"maxProperties": n}, _small),
    st.just(True), st.just(False),
)


def _compound(inner):
    return st.one_of(
        st.builds(lambda s: {"not": s}, inner),
        st.builds(lambda s: {"anyOf": s}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda s: {"allOf": s}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda s: {"oneOf": s}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda i, t, e: {"if": i, "then": t, "else": e}, inner, inner, inner),
        st.builds(lambda i, t: {"if": i, "then": t}, inner, inner),
        st.builds(lambda s: {"items": s}, inner),
        st.builds(lambda p: {"properties": p}, st.dictionaries(st.sampled_from(_KEYS), inner, max_size=2)),
        st.builds(lambda s: {"additionalProperties": s}, inner),
        st.builds(lambda p, a: {"properties": p, "additionalProperties": a},
                  st.dictionaries(st.sampled_from(_KEYS), inner, max_size=2), inner),
        st.builds(lambda s: {"propertyNames": s}, inner),
        st.builds(lambda p: {"patternProperties": p}, st.dictionaries(st.sampled_from(["^a", "1$", "b"]), inner,
                                                                      max_size=2)),
        st.builds(lambda a, b: {**a, **b} if isinstance(a, dict) and isinstance(b, dict) else a, inner, inner),
    )


_schemas = st.recursive(_leaf, _compound, max_leaves=6)


@pytest.mark.slow  # 3000 random schemas: ~7 s
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_schemas, _values)
def test_random_schemas_agree_with_jsonschema(schema_, doc):
    fast = quickschema.valid(doc, schema_)
    assert fast == jsonschema.Draft202012Validator(schema_).is_valid(doc), (schema_, doc)
