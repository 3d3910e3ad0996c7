"""Element coverage: the parts of a source tensor that rules take must cover it exactly once.

A step that starts with selections (``take``, ``slice``, ``split``, each transform's
``SELECTIONS`` entry, with ``squeeze`` of the size-1 axes they leave) uses a *box* of
its source: one index set per source axis.  A source used only through boxes is
covered when the boxes do not overlap and their sizes add up to the whole tensor;
otherwise the unused or twice-used rows are named (along the one axis the boxes differ
on, which is the usual case: experts, q/k/v thirds, groups).
"""

from __future__ import annotations

from typing import Optional

from .transforms import SELECTIONS

MAX_BOXES = 4096  # boxes of one tensor compared pairwise; more are not checked
MAX_POINTS = 1 << 20  # a strided selection is expanded to its indices up to this many


def box(in_shape: tuple, calls: list) -> Optional[dict]:
    """{source axis: range or sorted list of indices} that the leading selections keep; None: the whole tensor."""
    axes = list(range(len(in_shape)))  # current axis -> source axis
    shape = list(in_shape)
    sel: dict = {}
    for c in calls:
        name = c.call.name
        if name == "squeeze" and sel:
            drop = {a % len(axes) for a in c.args["axes"]}
            axes = [a for i, a in enumerate(axes) if i not in drop]
            shape = [d for i, d in enumerate(shape) if i not in drop]
            continue
        fn = SELECTIONS.get(name)
        if fn is None:
            break
        axis, idx = fn(tuple(shape), **c.args)
        src = axes[axis]
        prev = sel.get(src, range(in_shape[src]))
        if isinstance(idx, range) and idx.step > 0:
            sel[src] = prev[idx.start:idx.stop:idx.step]
        elif len(idx) > MAX_POINTS:
            return None  # too many single indices to follow: counted as a use of the whole tensor
        else:
            sel[src] = sorted({prev[i] for i in idx})
        shape[axis] = len(idx)
    return sel or None


def _as_set(idx):
    if isinstance(idx, range) and len(idx) > MAX_POINTS:
        return None
    return set(idx)


def _meet(a, b) -> Optional[bool]:
    """Do two index sets intersect (None: too large to tell)?"""
    if isinstance(a, range) and isinstance(b, range) and a.step == b.step == 1:
        return max(a.start, b.start) < min(a.stop, b.stop)
    sa, sb = _as_set(a), _as_set(b)
    if sa is None or sb is None:
        return None
    return not sa.isdisjoint(sb)


def spans(idx) -> list:
    """Sorted (start, stop) runs of an index set."""
    if isinstance(idx, range) and idx.step == 1:
        return [(idx.start, idx.stop)] if len(idx) else []
    out: list = []
    for i in sorted(set(idx)):
        if out and out[-1][1] == i:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out


def check(shape: tuple, uses: list) -> Optional[tuple]:
    """``uses``: [(target, box)].  Returns (axis or None, unused spans, [(span, targets)] overlaps), with spans
    along ``axis`` when the boxes differ along one axis only (otherwise counts of elements); None if too large."""
    if len(uses) > MAX_BOXES:
        return None
    full = [range(d) for d in shape]
    boxes = [(t, [b.get(a, full[a]) for a in range(len(shape))]) for t, b in uses]
    differing = [a for a in range(len(shape)) if len({tuple(spans(b[a])) for _, b in boxes}) > 1
                 or any(spans(b[a]) != [(0, shape[a])] for _, b in boxes)]
    if len(differing) == 1:  # rows along one axis: a sweep names them
        axis = differing[0]
        events = []
        for t, b in boxes:
            if any(spans(b[a]) != [(0, shape[a])] for a in range(len(shape)) if a != axis):
                break
            if isinstance(b[axis], range) and b[axis].step != 1 and len(b[axis]) > MAX_POINTS:
                return None
            for s, e in spans(b[axis]):
                events += [(s, 1, t), (e, -1, t)]
        else:
            return (axis,) + _sweep(shape[axis], events)
    overlaps = []
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            meets = [_meet(x, y) for x, y in zip(boxes[i][1], boxes[j][1])]
            if None in meets:
                return None
            if all(meets):
                overlaps.append((None, [boxes[i][0], boxes[j][0]]))
    numel = 1
    for d in shape:
        numel *= d
    used = 0
    for _, b in boxes:
        v = 1
        for idx in b:
            v *= len(idx)
        used += v
    return None, ([] if overlaps or used >= numel else [(numel - used, numel)]), overlaps


def _sweep(n: int, events: list) -> tuple:
    events.sort(key=lambda e: (e[0], e[1]))
    gaps: list = []
    overlaps: list = []
    active: dict = {}
    pos = 0
    for at, delta, target in events:
        if at > pos:
            live = [t for t, c in active.items() if c > 0]
            if not live:
                gaps.append((pos, at))
            elif len(live) > 1:
                overlaps.append(((pos, at), live))
            pos = at
        active[target] = active.get(target, 0) + delta
    if pos < n:
        gaps.append((pos, n))
    return gaps, overlaps


def findings(steps: list, shapes: dict, referenced: set, most: int) -> list[tuple[str, str]]:
    """(relaxation, message) for every source tensor whose parts, taken by ``steps``, miss or repeat elements.

    ``steps`` are the plan's steps (a stacked step's parts count one by one); ``shapes``
    the source shapes; tensors in ``referenced`` are used whole."""
    uses: dict[str, list] = {}
    for s in steps:
        for part in s.parts or [s]:
            if part.source is not None:
                uses.setdefault(part.source, []).append((part.target, box(part.in_meta.shape, part.calls)))
    out = []
    for name, used in uses.items():
        if name in referenced or any(b is None for _, b in used):
            continue  # used whole somewhere
        found = check(shapes[name], used)
        if found is None:
            continue
        axis, gaps, overlaps = found
        if gaps and axis is None:
            (unused, numel), = gaps
            out.append(("unused-elements", f"{unused} of the {numel} elements of {name!r} are not used by any rule "
                                           f"(relax unused-elements if dropping them is intended)"))
        elif gaps:
            rows, verb = rows_text(gaps, most)
            out.append(("unused-elements", f"{rows} of {name!r} along axis {axis} {verb} not used by any rule (its "
                                           f"{shapes[name][axis]} rows must all be taken; relax unused-elements "
                                           f"if dropping them is intended)"))
        for span, targets in overlaps[:most]:
            if span is None:
                what = f"elements of {name!r} are"
            else:
                rows, verb = rows_text([span], most)
                what = f"{rows} of {name!r} along axis {axis} {verb}"
            out.append(("overlapping-elements", f"{what} used by more than one output "
                                                f"({', '.join(repr(t) for t in targets[:4])}); relax "
                                                f"overlapping-elements if that is intended"))
    return out


def spans_text(values, most: int = 20) -> str:
    """'4..7', '2', '1, 3..5' for sorted indices or a list of (start, stop) spans."""
    runs = values if values and isinstance(values[0], tuple) else spans(values)
    shown = [f"{a}..{b - 1}" if b - a > 1 else f"{a}" for a, b in runs[:most]]
    return ", ".join(shown) + (f" and {len(runs) - most} more" if len(runs) > most else "")


def rows_text(runs: list, most: int = 20) -> tuple[str, str]:
    """('rows 4..7', 'are') or ('row 3', 'is') for (start, stop) spans."""
    one = len(runs) == 1 and runs[0][1] - runs[0][0] == 1
    return ("row " if one else "rows ") + spans_text(runs, most), "is" if one else "are"
