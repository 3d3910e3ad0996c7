"""Naming what a plan found: bounded "closest names" hints and capped listings of tensor names."""

from __future__ import annotations

import difflib
from typing import Callable

from ..errors import escape


MAX_LISTED = 20


MAX_SUGGESTIONS = 50  # findings of one plan that get "closest names" hints
MAX_SUGGEST = 2000  # names compared per suggestion (difflib is quadratic in the name length)
MAX_SUGGEST_LEN = 400  # longer texts are not compared at all


def _closest(text: str, names: list[str], n: int = 3, cutoff: float = 0.5) -> list[str]:
    """The names most similar to ``text`` (ties in name order), with bounded work: at most
    ``MAX_SUGGEST`` names of at most ``MAX_SUGGEST_LEN`` characters are compared (those sharing
    ``text``'s first characters first, then an even sample of the rest)."""
    if len(text) > MAX_SUGGEST_LEN:
        return []
    if len(names) > MAX_SUGGEST:
        head = text[:3]
        near = [x for x in names if x.startswith(head)] if head else []
        rest = names[::max(1, len(names) // MAX_SUGGEST)]
        names = list(dict.fromkeys(near[:MAX_SUGGEST // 2] + rest))[:MAX_SUGGEST]
    names = [x for x in names if len(x) <= MAX_SUGGEST_LEN]
    m = difflib.SequenceMatcher()
    m.set_seq2(text)
    scored = []
    for name in names:
        m.set_seq1(name)
        if m.real_quick_ratio() >= cutoff and m.quick_ratio() >= cutoff:
            r = m.ratio()
            if r >= cutoff:
                scored.append((-r, name))
    return [name for _, name in sorted(scored)[:n]]


def _listing(names: list[str], describe: Callable[[str], str]) -> str:
    shown = [f"  {escape(describe(n))}" for n in names[:MAX_LISTED]]
    if len(names) > MAX_LISTED:
        shown.append(f"  ... and {len(names) - MAX_LISTED} more")
    return "\n".join(shown)

