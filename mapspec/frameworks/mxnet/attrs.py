"""MXNet attribute strings: a literal parser (never ``eval``) and the typed kinds an op declares.

Operator attributes are strings in a symbol file (``"(3, 3)"``, ``"True"``, ``"2e-05"``);
:func:`parse_literal` reads any of them, and :data:`KINDS` parses one as the type an op
declares for it (:class:`Param`, used by the op table in :mod:`mapspec.frameworks.mxnet.ops`).
"""

from __future__ import annotations

import re
from typing import Any, Callable, NamedTuple
from ...errors import MapspecError

MAX_NDIM = 32
MAX_INT_CHARS = 100


_INT = re.compile(r"[+-]?\d+[lL]?\Z")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\Z|[+-]?(inf|nan)\Z", re.IGNORECASE)
_WORDS = {"true": True, "false": False, "none": None}


def _scalar(text: str):
    """int, float, bool or None for a scalar literal; the stripped string otherwise."""
    t = text.strip()
    low = t.lower()
    if low in _WORDS:
        return _WORDS[low]
    if _INT.match(t):  # more digits than any attribute needs stays text (int() refuses 4300 with a traceback)
        return int(t.rstrip("lL")) if len(t) <= MAX_INT_CHARS else t
    if _FLOAT.match(t):
        return float(t)
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
        return t[1:-1]
    return t


def parse_literal(text: str):
    """Parse an MXNet attribute string without ``eval``.

    ``"True"`` -> True, ``"None"`` -> None, ``"64"`` -> 64, ``"2e-05"`` -> 2e-05,
    ``"(3, 3)"``/``"[3, 3]"``/``"(2L,)"`` -> (3, 3)/(3, 3)/(2,), a flat tuple of
    scalars; anything else (``"relu"``, nested structures) is returned as the string.
    """
    t = text.strip()
    if len(t) >= 2 and (t[0], t[-1]) in (("(", ")"), ("[", "]")):
        inner = t[1:-1].strip()
        if not inner:
            return ()
        parts = inner.split(",")
        if parts[-1].strip() == "":
            parts = parts[:-1]
        items = [_scalar(p) for p in parts]
        if all(i is None or isinstance(i, (bool, int, float)) for i in items) and all(p.strip() for p in parts):
            return tuple(items)
        return t
    return _scalar(t)


class BadValue(MapspecError):
    """An attribute string that does not parse as the declared type."""


def _as_int(text: str) -> int:
    v = parse_literal(text)
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadValue("an integer")
    return v


def _as_float(text: str) -> float:
    v = parse_literal(text)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise BadValue("a number")
    return float(v)


def _as_bool(text: str) -> bool:
    v = parse_literal(text)
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    raise BadValue("a boolean (True/False/1/0)")


def as_shape(text: str) -> tuple:
    v = parse_literal(text)
    if isinstance(v, int) and not isinstance(v, bool):
        v = (v,)
    if v is None:
        return ()
    if not isinstance(v, tuple) or not all(isinstance(d, int) and not isinstance(d, bool) for d in v):
        raise BadValue("a tuple of integers such as (3, 3)")
    if len(v) > MAX_NDIM:
        raise BadValue(f"a tuple of at most {MAX_NDIM} integers")
    return v


def _as_str(text: str) -> str:
    v = _scalar(text)
    return v if isinstance(v, str) else text.strip()


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse_or_none(text: str):
        return None if text.strip().lower() in ("none", "") else parse(text)
    return parse_or_none


# Declared attribute kinds -> parser.  Every kind has an "or None" twin ("int?").
KINDS: dict[str, Callable[[str], Any]] = {"int": _as_int, "float": _as_float, "bool": _as_bool,
                                          "shape": as_shape, "str": _as_str}
KINDS.update({k + "?": _optional(f) for k, f in list(KINDS.items())})


class Param(NamedTuple):
    """A declared attribute: its kind (a key of :data:`KINDS`) and MXNet's default."""

    kind: str  # a key of KINDS
    default: Any  # MXNet's default; REQUIRED if the attribute must be given


REQUIRED = object()  # the default of an attribute an op cannot do without


__all__ = ["parse_literal", "KINDS", "Param", "REQUIRED", "BadValue", "as_shape", "MAX_NDIM"]
