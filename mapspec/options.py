"""Command-line values as a person types them: ``KEY=VALUE`` pairs and typed values.

A value is read as YAML (``6``, ``1e-5``, ``true``, ``[1, 3, 224, 224]``, ``{data: [1, 3, 8, 8]}``)
after two spellings people use on a command line are made YAML: a bare comma list
(``1,3,112,112``) and a tuple (``(1, 3, 112, 112)``) both become a list.  Anything that is
not valid YAML is an error naming the flag and the value, never a Python traceback.
"""

from __future__ import annotations

import re
from typing import Iterable, Optional

import yaml

from .errors import SpecError, UsageError
from .language.yamlsafe import load_value

MAX_VALUE_CHARS = 65536
# YAML 1.1 reads 1e-5 (no dot) as text; on a command line it is a number.
_DIMS = re.compile(r"\d+(\s*x\s*\d+)+")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _numbers(value):
    if isinstance(value, str) and _FLOAT.fullmatch(value):
        return float(value)
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    return value


def _as_yaml(text: str) -> str:
    t = text.strip()
    if t.startswith("(") and t.endswith(")"):
        return "[" + t[1:-1] + "]"
    if "," in t and t[:1] not in "[{\"'":
        return "[" + t + "]"
    return t


def parse_value(text: str, flag: str = "value") -> object:
    """``text`` as a typed value; ``flag`` (e.g. ``--template-option input_shape``) names it in errors."""
    if len(text) > MAX_VALUE_CHARS:
        raise UsageError(f"{flag}: the value is {len(text)} characters long; the limit is {MAX_VALUE_CHARS}")
    try:
        return _numbers(load_value(_as_yaml(text))) if text.strip() else ""
    except SpecError as e:  # an integer of thousands of digits
        raise UsageError(f"{flag}: {e.bare}") from None
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or "not a value mapspec can read"
        raise UsageError(f"{flag}: cannot read {text!r} ({problem}); write a number, a word, a list "
                         f"(1,3,224,224 or [1,3,224,224] or (1, 3, 224, 224)) or a mapping ({{data: [1,3,8,8]}})") \
            from None


def parse_pair(text: str, flag: str) -> tuple[str, object]:
    """``KEY=VALUE`` given to ``flag`` -> (key, typed value)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError(f"{flag} {text!r}: expected KEY=VALUE (e.g. {flag} input_shape=1,3,224,224)")
    if key.endswith("shape") and _DIMS.fullmatch(raw.strip()):  # input_shape=1x3x224x224
        return key, parse_shape(raw, f"{flag} {key}")
    return key, parse_value(raw, f"{flag} {key}")


def parse_pairs(pairs: Optional[Iterable[str]], flag: str) -> dict:
    """Every ``KEY=VALUE`` of a repeated flag; a key given twice is an error."""
    out: dict = {}
    for text in pairs or ():
        key, value = parse_pair(text, flag)
        if key in out:
            raise UsageError(f"{flag} {key}: given twice")
        out[key] = value
    return out


def parse_shape(text: str, flag: str = "--input-shape") -> list:
    """A shape: ``1,3,224,224``, ``1x3x224x224``, ``[1, 3, 224, 224]`` or ``(1, 3, 224, 224)``."""
    t = text.strip()
    if "x" in t and not t.startswith(("[", "(")):
        t = t.replace("x", ",")
    value = parse_value(t, flag)
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                              for v in value):
        raise UsageError(f"{flag}: {text!r} is not a shape; write non-negative integers, e.g. 1,3,224,224")
    return value
