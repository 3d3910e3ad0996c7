"""``stack: {over: e, axis: 0}``: matches that differ only in ``e`` become one output (spec language 1.1).

The engine groups a rule's matches by every capture but ``e``; here each group is put in
order of ``e``, whose values must be exactly 0..N-1 (the same N in every group), and the
stacked output's shape is worked out from the parts' own (transformed) shapes.
"""

from __future__ import annotations

from collections import Counter
from typing import Optional

from .coverage import spans_text


def order(over: str, groups: dict) -> tuple[list[str], list]:
    """Sort each group's members ``(value, name, env)`` by value; (error messages, keys of good groups)."""
    errors, counts = [], {}
    for key, members in groups.items():
        members.sort(key=lambda m: m[0])
        values = [m[0] for m in members]
        if values == list(range(len(values))):
            counts[key] = len(values)
            continue
        seen = Counter(values)
        dup = [v for v, c in seen.items() if c > 1]
        missing = [v for v in range(values[-1]) if v not in seen]
        if dup:
            why = f"{over}={dup[0]} is matched twice ({', '.join(repr(m[1]) for m in members if m[0] == dup[0])})"
        else:
            why = f"{over}={spans_text(missing)} {'is' if len(missing) == 1 else 'are'} missing"
        where = " for " + ", ".join(f"{k}={v}" for k, v in key) if key else ""
        errors.append(f"stack over {over!r}{where}: the matches must number {over}=0..N-1, but {why}")
    if len(set(counts.values())) > 1:
        shown = "; ".join(f"{', '.join(f'{k}={v}' for k, v in key) or '-'}: {n}" for key, n in list(counts.items())[:20])
        errors.append(f"stack over {over!r}: groups have different numbers of matches ({shown})")
        return errors, []
    return errors, list(counts)


def stacked_shape(over: str, parts: list, axis: int) -> tuple[Optional[tuple], int, str]:
    """(shape, normalised axis, '') of stacking the parts' outputs, or (None, 0, why not)."""
    first = parts[0]
    for p in parts[1:]:
        if p.out_meta != first.out_meta or p.target != first.target:
            return None, 0, (f"stack over {over!r}: {p.source!r} gives {p.target!r} {_text(p.out_meta)} but "
                             f"{first.source!r} gives {first.target!r} {_text(first.out_meta)}; stacked parts must "
                             f"agree")
    ndim = len(first.out_meta.shape) + 1
    if not -ndim <= axis < ndim:
        return None, 0, f"stack axis {axis} out of range for a {ndim}-dimensional result"
    shape = list(first.out_meta.shape)
    shape.insert(axis % ndim, len(parts))
    return tuple(shape), axis % ndim, ""


def _text(meta) -> str:
    return ("x".join(map(str, meta.shape)) or "scalar") + f" {meta.dtype}"
