"""First-match order of the reverse rules: narrower patterns first, overlapping optional alternatives left out."""

from __future__ import annotations

from ..language.pattern import Pattern
from .names import _matches, _samples
from .rules import _Out


def _covers(b: Pattern, a: Pattern) -> bool:
    """Every sample of ``a`` is matched by ``b``."""
    return all(_matches(b, s) for s in _samples(a))


def _overlap(a: Pattern, b: Pattern) -> bool:
    return any(_matches(b, s) for s in _samples(a)) or any(_matches(a, s) for s in _samples(b))


def order(outs: list[_Out], notes: list[str]) -> list[_Out]:
    """First-match order for the reverse: a narrower pattern goes before a wider one; optional
    alternatives that overlap a required rule are left out (the reverse writes one layout)."""
    required = [o for o in outs if not o.optional]
    kept = []
    for o in outs:
        clash = next((r for r in required if r is not o and _overlap(o.pattern, r.pattern)), None) \
            if o.optional else None
        if clash is not None:
            note = (f"{o.origin}: an optional alternative; its reverse names overlap those of {clash.origin}, "
                    f"so the reverse writes that layout instead")
            if note not in notes:
                notes[:] = [n for n in notes if not n.startswith(f"{o.origin}: its require")] + [note]
            continue
        kept.append(o)
    placed: list[_Out] = []
    for o in kept:
        pos = len(placed)
        for j, other in enumerate(placed):
            if _covers(other.pattern, o.pattern) and not _covers(o.pattern, other.pattern):
                pos = j
                break
        placed.insert(pos, o)
    return placed
