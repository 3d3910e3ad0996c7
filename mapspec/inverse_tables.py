"""Reversing a lookup table in a target name, for ``mapspec invert``.

A forward rule may write a capture through a finite table of its vars: ``res<s><b:word>_branch2a``
-> ``layer{s-1}.{block[b]}.conv1`` with ``block: {a: 0, b: 1, ...}``.  The reverse reads the number
back and needs the key it came from: that is well defined only when no two keys give the same value
(the table is one-to-one), and then the reverse spec holds the inverse table, ``block_inverse: {0: a,
1: b, ...}``, and writes ``{block_inverse[_b]}`` where the forward wrote the capture.  A table that
gives one value for two keys is refused, naming the table and the two keys: the reverse could not
tell which one a name came from.
"""

from __future__ import annotations

from typing import Optional

from .errors import MapspecError
from .language import expr as E

SUFFIX = "_inverse"
_NOT_IN_PATTERNS = set("<>|{}[]:?")


class TableError(MapspecError, ValueError):
    """The table cannot be read backwards (the message says why)."""


def lookup(node, unknown: str, fixed: dict) -> Optional[str]:
    """The table's name if ``node`` is ``{table[unknown]}`` over a table of ``fixed``, else None."""
    if isinstance(node, E.Index) and isinstance(node.index, E.Name) and node.index.name == unknown \
            and isinstance(node.target, E.Name) and isinstance(fixed.get(node.target.name), dict):
        return node.target.name
    return None


def inverse(name: str, table: dict, fixed: dict) -> dict:
    """value -> key of a one-to-one table (values as the names hold them: text); TableError otherwise."""
    if name + SUFFIX in fixed:
        raise TableError(f"the reverse would name the inverse of table {name!r} {name + SUFFIX!r}, a var the "
                         f"spec already has")
    out: dict = {}
    for key, value in table.items():
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise TableError(f"table {name!r} maps {key!r} to {value!r}, which a name cannot hold")
        text = str(value)
        if not text or _NOT_IN_PATTERNS & set(text):
            raise TableError(f"table {name!r} maps {key!r} to {text!r}, which a pattern cannot match")
        if text in out:
            raise TableError(f"table {name!r} is not one-to-one: {out[text]!r} and {key!r} both give {text!r}, so "
                             f"the reverse cannot tell which one a name came from")
        out[text] = key
    if not out:
        raise TableError(f"table {name!r} is empty")
    return {(int(v) if v.isdigit() and str(int(v)) == v else v): k for v, k in out.items()}


def placeholder(name: str, inverted: dict) -> str:
    """``<name:v1|v2|...>``: exactly the forward table's values (the keys of its inverse)."""
    return f"<{name}:{'|'.join(str(v) for v in inverted)}>"


def solution(table_name: str, capture: str):
    """The forward capture, recovered in the reverse: ``{table_inverse[capture]}``."""
    return E.Index(E.Name(table_name + SUFFIX, 0), E.Name(capture, 0), 0)


def used(spec_vars: dict, text: str) -> dict:
    """The inverse tables a reverse spec's rules (``text``) read: name -> table."""
    out = {}
    for name, table in spec_vars.items():
        if isinstance(table, dict) and f"{name}{SUFFIX}[" in text:
            out[name + SUFFIX] = inverse(name, table, {})
    return out
