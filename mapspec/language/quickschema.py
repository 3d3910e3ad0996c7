"""A fast yes/no for the spec schema: "yes" only where jsonschema finds no error.

Importing jsonschema is the largest single cost of a command's start (``python -X importtime -c
"import jsonschema"``: 41 ms on this project's quiet 2-core VM, 79 ms loaded; the whole start of
``mapspec apply`` is ~0.25 s), while checking a shipped spec here takes well under a millisecond.
So :func:`mapspec.language.schema.check` asks this module first, and only a document it does not
pass goes to jsonschema, whose errors are translated as before.  "No" never means "wrong", only
"ask jsonschema": a keyword this module does not know, a non-string key, a value of a type JSON
has not, a remote ``$ref``, a non-string key (YAML's ``{2: 6}``) where a pattern would read it all
answer "no".  tests/language/test_quickschema.py holds it to
jsonschema's verdict on every shipped spec, the bad-spec catalogue and random mutations of both.

Draft 2020-12 semantics as jsonschema applies them: ``true``/``false`` are not numbers, ``1.0`` is
an integer, ``enum``/``const``/``uniqueItems`` compare as JSON does (``1 == 1.0``, ``true != 1``),
string lengths count code points, ``pattern`` is searched, not matched.
"""

from __future__ import annotations

import re
from functools import lru_cache

# keywords that constrain nothing
_ANNOTATIONS = frozenset({"$schema", "$id", "$defs", "$comment", "title", "description", "default", "examples",
                          "deprecated", "readOnly", "writeOnly"})
_CHECKED = frozenset({
    "$ref", "type", "const", "enum", "not", "allOf", "anyOf", "oneOf", "if", "then", "else",
    "minLength", "maxLength", "pattern", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "minItems", "maxItems", "uniqueItems", "items", "minProperties", "maxProperties", "required",
    "properties", "patternProperties", "additionalProperties", "propertyNames",
})
_UNIQUE_LIMIT = 2000  # longer lists with uniqueItems: jsonschema decides


class _Unsure(Exception):
    """This module cannot vouch for the document: jsonschema decides."""


def valid(doc, schema: dict) -> bool:
    """True only if ``doc`` has no error under ``schema``; False means "ask jsonschema"."""
    try:
        return _ok(doc, schema, schema)
    except (_Unsure, RecursionError, re.error):
        return False


def _ok(x, s, root) -> bool:
    if s is True:
        return True
    if s is False or not isinstance(s, dict):
        return False if s is False else _unsure()
    if not s.keys() <= _CHECKED | _ANNOTATIONS:
        _unsure()
    if "$ref" in s and not _ok(x, _resolve(s["$ref"], root), root):
        return False
    if "type" in s and not _type_ok(x, s["type"]):
        return False
    if "const" in s and not _equal(x, s["const"]):
        return False
    if "enum" in s and not any(_equal(x, e) for e in s["enum"]):
        return False
    if "not" in s and _ok(x, s["not"], root):
        return False
    if "allOf" in s and not all(_ok(x, sub, root) for sub in s["allOf"]):
        return False
    if "anyOf" in s and not any(_ok(x, sub, root) for sub in s["anyOf"]):
        return False
    if "oneOf" in s and sum(1 for sub in s["oneOf"] if _ok(x, sub, root)) != 1:
        return False
    if "if" in s:
        branch = s.get("then") if _ok(x, s["if"], root) else s.get("else")
        if branch is not None and not _ok(x, branch, root):
            return False
    if isinstance(x, str):
        return _string_ok(x, s)
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return _number_ok(x, s)
    if isinstance(x, list):
        return _array_ok(x, s, root)
    if isinstance(x, dict):
        return _object_ok(x, s, root)
    if x is None or isinstance(x, bool):
        return True
    return _unsure()  # a value JSON has not (a date, bytes): jsonschema decides


def _unsure():
    raise _Unsure


@lru_cache(maxsize=256)
def _pointer(ref: str) -> tuple:
    if not ref.startswith("#/") or "~" in ref or "%" in ref:
        _unsure()
    return tuple(ref[2:].split("/"))


def _resolve(ref, root):
    if not isinstance(ref, str):
        _unsure()
    node = root
    for part in _pointer(ref):
        if not isinstance(node, dict) or part not in node:
            _unsure()
        node = node[part]
    return node


def _type_ok(x, want) -> bool:
    if isinstance(want, str):
        return _is(x, want)
    if isinstance(want, list):
        return any(_is(x, w) for w in want)
    return _unsure()


def _is(x, name: str) -> bool:
    if name == "object":
        return isinstance(x, dict)
    if name == "array":
        return isinstance(x, list)
    if name == "string":
        return isinstance(x, str)
    if name == "boolean":
        return isinstance(x, bool)
    if name == "null":
        return x is None
    if name == "number":
        return isinstance(x, (int, float)) and not isinstance(x, bool)
    if name == "integer":
        return (isinstance(x, int) and not isinstance(x, bool)) or (isinstance(x, float) and x.is_integer())
    return _unsure()


def _equal(a, b) -> bool:
    """JSON equality: booleans equal only booleans, numbers compare by value."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, str) or isinstance(b, str) or a is None or b is None:
        return type(a) is type(b) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(p, q) for p, q in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, dict)) or isinstance(b, (list, dict)):
        return False
    return _unsure()


@lru_cache(maxsize=64)
def _regex(pattern: str):
    return re.compile(pattern)


def _string_ok(x: str, s: dict) -> bool:
    n = len(x)
    if "minLength" in s and n < s["minLength"]:
        return False
    if "maxLength" in s and n > s["maxLength"]:
        return False
    return "pattern" not in s or _regex(s["pattern"]).search(x) is not None


def _number_ok(x, s: dict) -> bool:
    return not (("minimum" in s and x < s["minimum"]) or ("maximum" in s and x > s["maximum"])
                or ("exclusiveMinimum" in s and x <= s["exclusiveMinimum"])
                or ("exclusiveMaximum" in s and x >= s["exclusiveMaximum"]))


def _array_ok(x: list, s: dict, root) -> bool:
    if "minItems" in s and len(x) < s["minItems"]:
        return False
    if "maxItems" in s and len(x) > s["maxItems"]:
        return False
    if s.get("uniqueItems") is True:
        if len(x) > _UNIQUE_LIMIT:
            _unsure()
        if any(_equal(x[i], x[j]) for i in range(len(x)) for j in range(i + 1, len(x))):
            return False
    return "items" not in s or all(_ok(v, s["items"], root) for v in x)


def _object_ok(x: dict, s: dict, root) -> bool:
    if ("patternProperties" in s or "propertyNames" in s) and not all(isinstance(k, str) for k in x):
        _unsure()  # a YAML integer key against a pattern: jsonschema decides
    if "minProperties" in s and len(x) < s["minProperties"]:
        return False
    if "maxProperties" in s and len(x) > s["maxProperties"]:
        return False
    if "required" in s and not all(k in x for k in s["required"]):
        return False
    props, patterns = s.get("properties", {}), s.get("patternProperties", {})
    for k, v in x.items():
        covered = False
        if k in props:
            covered = True
            if not _ok(v, props[k], root):
                return False
        for p, sub in patterns.items():
            if _regex(p).search(k):
                covered = True
                if not _ok(v, sub, root):
                    return False
        if not covered and "additionalProperties" in s and not _ok(v, s["additionalProperties"], root):
            return False
        if "propertyNames" in s and not _ok(k, s["propertyNames"], root):
            return False
    return True
