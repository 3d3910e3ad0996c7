"""First line of validation: the JSON Schema (draft 2020-12) in ``schemas/``.

jsonschema's messages are precise but written for JSON Schema experts; each error is
translated into a sentence about the spec and located at the offending YAML node.
"""

from __future__ import annotations

import difflib
import json
from functools import lru_cache
from typing import TYPE_CHECKING, Iterator, Optional

from ..errors import Location, SpecError
from ..resources import schema_path
from . import quickschema
from .yamlsafe import LocDict, LocList

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError


@lru_cache(maxsize=1)
def schema() -> dict:
    with open(schema_path(), encoding="utf-8") as f:
        return json.load(f)


@lru_cache(maxsize=1)
def _validator():
    # The shipped schema is checked against the metaschema by the tests (tests/language/test_schema.py), not
    # on every run: that check alone took 0.1-0.26 s of each command's start.  jsonschema itself is
    # imported only for a document :mod:`.quickschema` does not pass (its import is 40-80 ms).
    import jsonschema

    return jsonschema.Draft202012Validator(schema())


def _locate(doc, path) -> tuple[Location, object, object]:
    """Location of the node at ``path`` (and the node and its parent)."""
    node, parent = doc, None
    loc = doc.loc if isinstance(doc, (LocDict, LocList)) else Location("<spec>")
    for key in path:
        parent = node
        if isinstance(node, LocDict) and key in node:
            loc = node.loc_of(key)
            node = node[key]
        elif isinstance(node, LocList) and isinstance(key, int) and 0 <= key < len(node):
            loc = node.loc_of(key)
            node = node[key]
        else:
            break
    return loc, node, parent


def rule_label(doc, path) -> str | None:
    """``rule N (from '...')`` for errors inside ``rules[N-1]``."""
    if len(path) >= 2 and path[0] == "rules" and isinstance(path[1], int):
        rules = doc.get("rules") if isinstance(doc, dict) else None
        if isinstance(rules, list) and path[1] < len(rules):
            r = rules[path[1]]
            n = path[1] + 1
            if isinstance(r, dict):
                if isinstance(r.get("name"), str):
                    return f"rule {n} ({r['name']})"
                if isinstance(r.get("from"), str):
                    return f"rule {n} (from {r['from']!r})"
                if isinstance(r.get("to"), str):
                    return f"rule {n} (to {r['to']!r})"
            return f"rule {n}"
    return None


_TYPE_NAMES = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
               "number": "a number", "boolean": "true or false", "null": "null"}


def _what(value) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if value is None:
        return "nothing (null)"
    return type(value).__name__


def _field(path) -> str:
    keys = [k for k in path if isinstance(k, str)]
    return repr(keys[-1]) if keys else "the spec"


def _translate(err: ValidationError, doc) -> Optional[SpecError]:
    path = list(err.absolute_path)
    loc, node, parent = _locate(doc, path)
    label = rule_label(doc, path)
    v = err.validator
    if v == "required":
        missing = [r for r in err.validator_value if not (isinstance(node, dict) and r in node)]
        allowed = list(err.schema.get("properties", {}))
        extra = [k for k in node if k not in allowed] if isinstance(node, dict) else []
        if missing and any(difflib.get_close_matches(str(k), [missing[0]], n=1) for k in extra):
            return None  # a misspelt key: the 'unknown key ... did you mean' error says it better
        what = "a rule" if label else _field(path)
        msg = f"{what} needs the key {missing[0]!r}" if missing else err.message
        if missing and missing[0] == "value" and label:
            msg = "a rule without 'from' is a constant and needs 'value' (with 'dtype' and 'shape')"
    elif v == "additionalProperties":
        allowed = list(err.schema.get("properties", {}))
        extra = [k for k in node if k not in allowed] if isinstance(node, dict) else []
        key = extra[0] if extra else "?"
        if isinstance(node, LocDict) and key in node:
            loc = node.key_loc(key)
        hint = difflib.get_close_matches(str(key), allowed, n=1)
        msg = f"unknown key {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else
                                        f"; allowed keys: {', '.join(allowed)}")
    elif v == "type":
        want = err.validator_value
        want = [want] if isinstance(want, str) else list(want)
        msg = f"{_field(path)} must be {' or '.join(_TYPE_NAMES.get(w, w) for w in want)}, not {_what(node)}"
    elif v == "const":
        msg = f"{_field(path)} must be {err.validator_value!r}, not {node!r}"
        if path == ["mapspec"]:
            msg = f"unsupported spec language version {node!r}; this mapspec reads version 1"
    elif v == "enum" and path == ["mapspec"]:
        msg = f"unsupported spec language version {node!r}; this mapspec reads versions 1 and 1.1"
    elif v == "enum":
        hint = difflib.get_close_matches(str(node), [str(e) for e in err.validator_value], n=1)
        msg = (f"{node!r} is not one of {', '.join(map(str, err.validator_value))}"
               + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    elif v == "not" and label and isinstance(node, dict) and node.get("drop") is True:
        msg = "a drop rule discards what 'from' matches: it takes no 'to', 'apply', 'also', 'each' or 'value'"
    elif v == "not" and label:
        msg = "a rule with 'from' maps a source tensor; 'value', 'shape' and 'dtype' belong to constant rules " \
              "without 'from' (use a 'cast' transform to change the dtype)"
    elif v in ("minProperties", "maxProperties") and len(path) >= 2 and path[-2] == "apply":
        msg = "a transform is a mapping with exactly one key, its name: {transpose: [1, 0]}"
    elif v == "minLength":
        msg = f"{_field(path)} must not be empty"
    elif v in ("minItems", "maxItems"):
        msg = f"{_field(path)}: {err.message}"
    elif v == "propertyNames" or (v == "pattern" and err.validator_value.startswith("^[A-Za-z_]")):
        msg = f"{node!r} is not a valid name (letters, digits and _, not starting with a digit)"
    elif v in ("anyOf", "oneOf"):
        from jsonschema.exceptions import best_match

        sub = best_match(err.context) if err.context else None
        if sub is not None:
            inner = _translate(sub, doc)
            if inner is not None:
                return inner
        msg = err.message
    else:
        msg = err.message
    if not isinstance(msg, str):
        msg = str(msg)
    return SpecError(msg, loc, label)


def check(doc) -> Iterator[SpecError]:
    """Yield every schema error, in document order."""
    if quickschema.valid(doc, schema()):
        return
    translated = []
    seen = set()
    for err in _validator().iter_errors(doc):
        spec_err = _translate(err, doc)
        if spec_err is None:
            continue
        key = str(spec_err)
        if key not in seen:
            seen.add(key)
            translated.append(spec_err)
    translated.sort(key=lambda e: (e.line, e.col, str(e)))
    yield from translated


def failing_rules(errors: list[SpecError], doc) -> set[int]:
    """Indexes of rules that have schema errors (their semantic checks are skipped)."""
    out = set()
    rules = doc.get("rules") if isinstance(doc, dict) else None
    if not isinstance(rules, list):
        return out
    for e in errors:
        if e.rule and e.rule.startswith("rule "):
            try:
                out.add(int(e.rule.split()[1]) - 1)
            except ValueError:
                pass
    return out
