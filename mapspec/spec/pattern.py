"""Name patterns with placeholders: ``conv<i>_<j>/x1/bn[0]``.

Placeholders:

``<name>`` or ``<name:int>``
    a non-negative integer written without leading zeros (``0``, ``7``, ``12``), so
    that ``{name}`` in a target reproduces the text exactly;
``<name:word>``
    ``[A-Za-z0-9_]+``;
``<name:path>``
    any non-empty text (it may contain ``/``, ``.``, ``[`` ...).

Everything else is literal: a ``.`` is a dot and ``[0]`` is the text ``[0]``.
Matching is anchored on the whole name.  A name placeholder used twice must capture
the same text both times.  When a name can be split between placeholders in more
than one way the match is *ambiguous* and :func:`Pattern.match` raises
:class:`AmbiguousMatch` listing two readings, instead of guessing.
"""

from __future__ import annotations

import re
from typing import NamedTuple, Optional, Union

KINDS = {
    "int": r"0|[1-9][0-9]*",
    "word": r"[A-Za-z0-9_]+",
    "path": r".+",
}

_PLACEHOLDER = re.compile(r"<([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z_]+))?>")


class Placeholder(NamedTuple):
    name: str
    kind: str


Token = Union[str, Placeholder]


class PatternSyntaxError(ValueError):
    def __init__(self, message: str, column: int):
        super().__init__(message)
        self.column = column


class AmbiguousMatch(ValueError):
    def __init__(self, name: str, first: dict, second: dict):
        self.name = name
        self.readings = (first, second)
        super().__init__(f"{name!r} matches in more than one way: {_show(first)} or {_show(second)}")


def _show(captures: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in captures.items()) or "(no captures)"


class Pattern:
    """A compiled name pattern."""

    def __init__(self, text: str):
        self.text = text
        self.tokens: list[Token] = []
        pos = 0
        for m in _PLACEHOLDER.finditer(text):
            if m.start() > pos:
                self._literal(text[pos:m.start()], pos)
            kind = m.group(2) or "int"
            if kind not in KINDS:
                raise PatternSyntaxError(f"unknown placeholder kind {kind!r} in <{m.group(1)}:{kind}> "
                                         f"(known: {', '.join(KINDS)})", m.start())
            self.tokens.append(Placeholder(m.group(1), kind))
            pos = m.end()
        if pos < len(text):
            self._literal(text[pos:], pos)
        if not text:
            raise PatternSyntaxError("empty pattern", 0)
        self.captures: dict[str, str] = {}
        for t in self.tokens:
            if isinstance(t, Placeholder):
                prev = self.captures.setdefault(t.name, t.kind)
                if prev != t.kind:
                    raise PatternSyntaxError(f"placeholder <{t.name}> is used as both {prev} and {t.kind}", 0)
        parts = []
        seen: set[str] = set()
        for t in self.tokens:
            if isinstance(t, str):
                parts.append(re.escape(t))
            elif t.name in seen:
                parts.append(f"(?P={t.name})")
            else:
                seen.add(t.name)
                parts.append(f"(?P<{t.name}>{KINDS[t.kind]})")
        self._regex = re.compile("".join(parts), re.DOTALL)
        self.is_literal = not self.captures

    def _literal(self, chunk: str, pos: int) -> None:
        for bad in ("<", ">"):
            i = chunk.find(bad)
            if i >= 0:
                raise PatternSyntaxError(
                    f"stray {bad!r} at column {pos + i + 1}: a placeholder is <name>, <name:word> or <name:path>",
                    pos + i)
        self.tokens.append(chunk)

    def match(self, name: str) -> Optional[dict]:
        """Captures (int placeholders as int) if ``name`` matches, else None; AmbiguousMatch if not unique."""
        m = self._regex.fullmatch(name)
        if m is None:
            return None
        if self._may_be_ambiguous():
            readings = self._enumerate(name, limit=2)
            if len(readings) > 1:
                raise AmbiguousMatch(name, self._typed(readings[0]), self._typed(readings[1]))
        return self._typed(m.groupdict())

    def _typed(self, raw: dict) -> dict:
        return {k: (int(v) if self.captures[k] == "int" else v) for k, v in raw.items()}

    def _may_be_ambiguous(self) -> bool:
        # A single placeholder, or placeholders separated by literals that their classes cannot
        # contain, match one way only; anything else is checked by enumeration.
        ph = [t for t in self.tokens if isinstance(t, Placeholder)]
        return len(ph) > 1

    def _enumerate(self, name: str, limit: int) -> list[dict]:
        """All distinct capture assignments (up to ``limit``), by backtracking over token positions."""
        results: list[dict] = []
        compiled = [(t, re.compile(KINDS[t.kind], re.DOTALL)) if isinstance(t, Placeholder) else (t, None)
                    for t in self.tokens]
        n = len(name)
        dead: set[tuple] = set()

        def go(i: int, pos: int, caps: dict) -> None:
            if len(results) >= limit:
                return
            if i == len(compiled):
                if pos == n and caps not in results:
                    results.append(dict(caps))
                return
            key = (i, pos, tuple(sorted(caps.items())))
            if key in dead:
                return
            before = len(results)
            tok, rx = compiled[i]
            if rx is None:
                if name.startswith(tok, pos):
                    go(i + 1, pos + len(tok), caps)
            elif tok.name in caps:
                v = caps[tok.name]
                if name.startswith(v, pos):
                    go(i + 1, pos + len(v), caps)
            else:
                for end in range(pos + 1, n + 1):
                    piece = name[pos:end]
                    if rx.fullmatch(piece):
                        caps[tok.name] = piece
                        go(i + 1, end, caps)
                        del caps[tok.name]
                        if len(results) >= limit:
                            return
            if len(results) == before:
                dead.add(key)

        go(0, 0, {})
        return results

    def literal_hint(self) -> str:
        """The pattern with placeholders blanked, for 'closest names' suggestions."""
        return "".join(t if isinstance(t, str) else "" for t in self.tokens)

    def __repr__(self) -> str:
        return f"Pattern({self.text!r})"
