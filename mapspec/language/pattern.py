"""Name patterns with placeholders: ``conv<i>_<j>/x1/bn[0]``.

Placeholders:

``<name>`` or ``<name:int>``
    a non-negative integer written without leading zeros (``0``, ``7``, ``12``), so
    that ``{name}`` in a target reproduces the text exactly;
``<name:word>``
    ``[A-Za-z0-9_]+``;
``<name:path>``
    any non-empty text (it may contain ``/``, ``.``, ``[`` ...).

Optional and alternative parts (spec language 1.1), captured by nothing:

``<?text>``
    ``text`` or nothing (``<?transformer.>h.<i>.attn.c_attn.weight``);
``<one|two|>``
    one of the listed texts (an empty one means "or nothing");
``<name:one|two>``
    one of the listed texts, captured as ``name`` (text) for use in ``to``.

Everything else is literal: a ``.`` is a dot and ``[0]`` is the text ``[0]``.
Matching is anchored on the whole name.  A name placeholder used twice must capture
the same text both times.  When a name can be read in more than one way the match is
*ambiguous* and :func:`Pattern.match` raises :class:`AmbiguousMatch` listing two
readings, instead of guessing.

Matching never backtracks: it walks the pattern's tokens once, keeping the set of
name positions each token can end at as a bit mask, together with the positions
reached in two or more ways (so counting readings, capped at two, costs no more than
matching).  A pattern without repeated placeholders costs O(tokens x name length) big-
integer operations; each repeated placeholder multiplies that by the number of
distinct texts its first occurrence can take.
"""

from __future__ import annotations

import re
from typing import NamedTuple, Optional, Union
from ..errors import MapspecError

KINDS = {
    "int": r"0|[1-9][0-9]*",
    "word": r"[A-Za-z0-9_]+",
    "path": r".+",
}

_DIGITS = frozenset("0123456789")
_WORD = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")

_PLACEHOLDER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z_]+))?")


class Placeholder(NamedTuple):
    name: str
    kind: str


class Choice(NamedTuple):
    """Alternative literal texts (``<?x>`` is ``Choice(('x', ''))``), captured as ``name`` if it has one."""

    options: tuple
    name: Optional[str] = None


Token = Union[str, Placeholder, Choice]


class PatternSyntaxError(MapspecError, ValueError):
    def __init__(self, message: str, column: int):
        super().__init__(message)
        self.column = column


class AmbiguousMatch(MapspecError, ValueError):
    def __init__(self, name: str, first: dict, second: dict):
        self.name = name
        self.readings = (first, second)
        super().__init__(f"{name!r} matches in more than one way: {_show(first)} or {_show(second)}")


def _show(captures: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in captures.items()) or "(no captures)"


def _bits(mask: int):
    """Positions of the set bits of ``mask``, lowest first."""
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


class _Name:
    """One name with lazily computed facts the matcher needs (occurrences, class runs)."""

    def __init__(self, text: str):
        self.text = text
        self.n = len(text)
        self.full = (1 << (self.n + 1)) - 1
        self._occ: dict[str, int] = {}
        self._runs: dict[str, list] = {}

    def occ(self, lit: str) -> int:
        """Mask of the positions where ``lit`` starts."""
        m = self._occ.get(lit)
        if m is None:
            if not lit:
                m = self.full
            else:
                m, i = 0, self.text.find(lit)
                while i >= 0:
                    m |= 1 << i
                    i = self.text.find(lit, i + 1)
            self._occ[lit] = m
        return m

    def runs(self, kind: str) -> list:
        """For each position, how many characters a placeholder of ``kind`` starting there may take (at most)."""
        r = self._runs.get(kind)
        if r is None:
            chars = _WORD if kind == "word" else _DIGITS
            r = [0] * (self.n + 1)
            for i in range(self.n - 1, -1, -1):
                r[i] = r[i + 1] + 1 if self.text[i] in chars else 0
            if kind == "int":  # no leading zeros: a 0 is a whole integer
                r = [min(v, 1) if i < self.n and self.text[i] == "0" else v for i, v in enumerate(r)]
            self._runs[kind] = r
        return r


def _step(tok: Token, nm: _Name, one: int, two: int) -> tuple[int, int]:
    """Positions reachable after ``tok`` from positions ``one`` (>= 1 reading) / ``two`` (>= 2 readings)."""
    if isinstance(tok, str):
        occ, k = nm.occ(tok), len(tok)
        return (one & occ) << k, (two & occ) << k
    n1 = n2 = 0
    if isinstance(tok, Choice):
        for opt in tok.options:
            occ, k = nm.occ(opt), len(opt)
            s1, s2 = (one & occ) << k, (two & occ) << k
            n2 |= s2 | (n1 & s1)
            n1 |= s1
        return n1, n2
    if tok.kind == "path":  # any non-empty text: every later position, counted by the starts below it
        if not one:
            return 0, 0
        low = one & -one
        n1 = nm.full & ~((low << 1) - 1)
        rest = one ^ low
        if rest:
            low2 = rest & -rest
            n2 = nm.full & ~((low2 << 1) - 1)
        if two:
            low_two = two & -two
            n2 |= nm.full & ~((low_two << 1) - 1)
        return n1, n2
    runs = nm.runs(tok.kind)
    for p in _bits(one):
        r = runs[p] if p < nm.n else 0
        if not r:
            continue
        reach = ((1 << r) - 1) << (p + 1)
        n2 |= (n1 & reach) | (reach if (two >> p) & 1 else 0)
        n1 |= reach
    return n1, n2


def _back(tok: Token, nm: _Name, reach: int) -> int:
    """Positions from which ``tok`` ends at a position in ``reach``."""
    if isinstance(tok, str):
        return (reach >> len(tok)) & nm.occ(tok)
    if isinstance(tok, Choice):
        out = 0
        for opt in tok.options:
            out |= (reach >> len(opt)) & nm.occ(opt)
        return out
    if not reach:
        return 0
    if tok.kind == "path":
        return (1 << (reach.bit_length() - 1)) - 1
    runs = nm.runs(tok.kind)
    return sum(1 << p for p in range(nm.n) if runs[p] and (reach >> (p + 1)) & ((1 << runs[p]) - 1))


def _can_take(tok: Token, nm: _Name, p: int, q: int) -> bool:
    if isinstance(tok, str):
        return q - p == len(tok) and nm.text.startswith(tok, p)
    if isinstance(tok, Choice):
        return any(q - p == len(o) and nm.text.startswith(o, p) for o in tok.options)
    if q <= p:
        return False
    return tok.kind == "path" or nm.runs(tok.kind)[p] >= q - p


def _readings(tokens: list, nm: _Name) -> tuple[int, Optional[list]]:
    """(number of readings capped at 2, the token spans of the reading if there is exactly one)."""
    one, two = 1, 0
    fwd = []
    for tok in tokens:
        fwd.append(one)
        one, two = _step(tok, nm, one, two)
        if not one:
            return 0, None
    end = 1 << nm.n
    if not one & end:
        return 0, None
    if two & end:
        return 2, None
    spans = []
    q = nm.n
    for tok, before in zip(reversed(tokens), reversed(fwd)):
        for p in _bits(before & ((1 << (q + 1)) - 1)):
            if _can_take(tok, nm, p, q):
                break
        else:  # pragma: no cover - a reading exists, so some start leads here
            raise AssertionError("pattern matcher lost its reading")
        spans.append((p, q))
        q = p
    spans.reverse()
    return 1, spans


class Pattern:
    """A compiled name pattern."""

    def __init__(self, text: str):
        self.text = text
        self.tokens: list[Token] = []
        if not text:
            raise PatternSyntaxError("empty pattern", 0)
        pos = 0
        while pos < len(text):
            lt = text.find("<", pos)
            if lt < 0:
                self._literal(text[pos:], pos)
                break
            if lt > pos:
                self._literal(text[pos:lt], pos)
            gt = text.find(">", lt)
            if gt < 0 or "<" in text[lt + 1:gt]:
                raise PatternSyntaxError(
                    f"stray '<' at column {lt + 1}: a placeholder is <name>, <name:word> or <name:path>; an "
                    f"optional part <?text>, alternatives <a|b>", lt)
            self.tokens.append(self._special(text[lt + 1:gt], lt))
            pos = gt + 1
        self.captures: dict[str, str] = {}
        for t in self.tokens:
            if isinstance(t, Choice) and t.name is not None:
                if t.name in self.captures:
                    raise PatternSyntaxError(f"alternatives <{t.name}:...> reuse the name {t.name!r}", 0)
                self.captures[t.name] = "choice"
            elif isinstance(t, Placeholder):
                prev = self.captures.setdefault(t.name, t.kind)
                if prev != t.kind:
                    if prev == "choice":
                        raise PatternSyntaxError(f"placeholder <{t.name}> reuses the name of alternatives", 0)
                    raise PatternSyntaxError(f"placeholder <{t.name}> is used as both {prev} and {t.kind}", 0)
        self.is_literal = not self.captures and not any(isinstance(t, Choice) for t in self.tokens)
        self.is_10 = not any(isinstance(t, Choice) for t in self.tokens)  # no 1.1 syntax
        self._prefix = self.tokens[0] if isinstance(self.tokens[0], str) else ""
        self._suffix = self.tokens[-1] if isinstance(self.tokens[-1], str) else ""
        self._min_len = sum(len(t) if isinstance(t, str) else min(map(len, t.options)) if isinstance(t, Choice)
                            else 1 for t in self.tokens)

    def _special(self, body: str, col: int) -> Token:
        if body.startswith("?"):
            opt = body[1:]
            if not opt or "|" in opt:
                raise PatternSyntaxError(f"optional part <{body}> at column {col + 1} needs a text without '|' "
                                         f"(<?transformer.>)", col)
            return Choice((opt, ""))
        if "|" in body:
            name = None
            m = re.match(r"([A-Za-z_][A-Za-z0-9_]*):", body)
            if m:
                name, body = m.group(1), body[m.end():]
            options = tuple(dict.fromkeys(body.split("|")))  # a repeated text would read two ways
            if len(options) < 2 or len(options) != len(body.split("|")):
                raise PatternSyntaxError(f"alternatives <{body}> at column {col + 1} list the same text twice", col)
            return Choice(options, name)
        m = _PLACEHOLDER.fullmatch(body)
        if m is None:
            raise PatternSyntaxError(
                f"bad placeholder <{body}> at column {col + 1}: a placeholder is <name>, <name:word> or "
                f"<name:path>; an optional part <?text>, alternatives <a|b>", col)
        kind = m.group(2) or "int"
        if kind not in KINDS:
            raise PatternSyntaxError(f"unknown placeholder kind {kind!r} in <{m.group(1)}:{kind}> "
                                     f"(known: {', '.join(KINDS)})", col)
        return Placeholder(m.group(1), kind)

    def _literal(self, chunk: str, pos: int) -> None:
        i = chunk.find(">")
        if i >= 0:
            raise PatternSyntaxError(
                f"stray '>' at column {pos + i + 1}: a placeholder is <name>, <name:word> or <name:path>", pos + i)
        self.tokens.append(chunk)

    def match(self, name: str) -> Optional[dict]:
        """Captures (int placeholders as int) if ``name`` matches, else None; AmbiguousMatch if not unique."""
        if (len(name) < self._min_len or not name.startswith(self._prefix) or not name.endswith(self._suffix)):
            return None
        if self.is_literal:
            return {} if name == "".join(self.tokens) else None
        found = self._search(self.tokens, _Name(name), {}, limit=2)
        if not found:
            return None
        if len(found) > 1:
            raise AmbiguousMatch(name, self._typed(found[0]), self._typed(found[1]))
        return self._typed(found[0])

    def _search(self, tokens: list, nm: _Name, fixed: dict, limit: int) -> list[dict]:
        """Up to ``limit`` readings (capture dicts; two equal dicts when one text reads two ways)."""
        seen: dict[str, int] = {}
        repeat = None
        for i, t in enumerate(tokens):
            if isinstance(t, Placeholder):
                if t.name in seen:
                    repeat = seen[t.name]
                    break
                seen[t.name] = i
        if repeat is None:
            count, spans = _readings(tokens, nm)
            if count == 0:
                return []
            if count > 1:
                return self._two_readings(tokens, nm, fixed)
            caps = dict(fixed)
            for t, (p, q) in zip(tokens, spans):
                if isinstance(t, Placeholder) or isinstance(t, Choice) and t.name is not None:
                    caps[t.name] = nm.text[p:q]
            return [caps]
        # A repeated placeholder: every text its first occurrence can take, as a literal everywhere
        # (each reading has exactly one such text, so the counts add up).
        rep = tokens[repeat]
        one, two = 1, 0
        for t in tokens[:repeat]:
            one, two = _step(t, nm, one, two)
        after = 1 << nm.n  # where the rest may start, ignoring the repeats' equality (a superset)
        for t in reversed(tokens[repeat + 1:]):
            after = _back(t, nm, after)
        texts = dict.fromkeys(nm.text[p:q] for p in _bits(one)
                              for q in _bits(_step(rep, nm, 1 << p, 0)[0] & after))
        need = sum(1 for t in tokens if t == rep)
        out: list[dict] = []
        for v in texts:
            if nm.text.count(v) < need:
                continue
            sub = [v if t == rep else t for t in tokens]
            out += self._search(sub, nm, {**fixed, rep.name: v}, limit - len(out))
            if len(out) >= limit:
                break
        return out

    def _two_readings(self, tokens: list, nm: _Name, fixed: dict) -> list[dict]:
        """Two readings of an ambiguous name, for the message: walk the tokens left to right, taking only
        steps from which the rest of the pattern still reaches the end of the name."""
        back = [1 << nm.n]
        for tok in reversed(tokens):
            back.append(_back(tok, nm, back[-1]))
        back.reverse()  # back[i]: positions from which tokens[i:] read the rest of the name
        out: list[dict] = []

        def go(i: int, p: int, caps: dict) -> None:
            if i == len(tokens):
                out.append(caps)
                return
            t = tokens[i]
            ends = _step(t, nm, 1 << p, 0)[0] & back[i + 1]
            for q in _bits(ends):
                named = isinstance(t, Placeholder) or isinstance(t, Choice) and t.name is not None
                go(i + 1, q, {**caps, t.name: nm.text[p:q]} if named else caps)
                if len(out) >= 2:
                    return

        go(0, 0, dict(fixed))
        return out if len(out) >= 2 else [dict(fixed), dict(fixed)]

    def _typed(self, raw: dict) -> dict:
        return {k: (int(v) if self.captures[k] == "int" else v) for k, v in raw.items()}

    def __repr__(self) -> str:
        return f"Pattern({self.text!r})"
