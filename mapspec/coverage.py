"""Element coverage: the parts of a source tensor that rules take must cover it exactly once.

A step that starts with selections (``take``, ``slice``, ``split``, each transform's
``SELECTIONS`` entry, with ``squeeze`` of the size-1 axes they leave, after reshapes that
only split axes) uses a *box* of its source: one index set per source axis.  A source used only through boxes is
covered when the boxes do not overlap and their sizes add up to the whole tensor;
otherwise the unused or twice-used rows are named (along the one axis the boxes differ
on, which is the usual case: experts, q/k/v thirds, groups).
"""

from __future__ import annotations

from typing import Optional

from .transforms import SELECTIONS

MAX_BOXES = 1024  # boxes of one tensor compared pairwise (when they differ on several axes); more: not checked
MAX_POINTS = 1 << 20  # a strided selection is expanded to its indices up to this many


def box(in_shape: tuple, calls: list) -> Optional[dict]:
    """{source axis: range or sorted list of indices} that the leading selections keep; None: the whole tensor.

    A reshape that only splits axes into factors (fused q/k/v rows viewed as [heads, 3, head_dim, ...])
    is followed too: a selection on a factor keeps the source rows with those digits."""
    # each source axis is a list of factors [stride, size, chosen indices], most significant first;
    # the current axes point at (source axis, factor)
    factors = {a: [[1, n, range(n)]] for a, n in enumerate(in_shape)}
    axes = [(a, 0) for a in range(len(in_shape))]
    selected = False
    for c in calls:
        name = c.call.name
        shape = tuple(len(factors[a][f][2]) for a, f in axes)
        if name == "squeeze" and selected:
            drop = {x % len(axes) for x in c.args["axes"]}
            axes = [ax for i, ax in enumerate(axes) if i not in drop]
        elif name == "reshape" and not selected:
            axes = _split(factors, axes, shape, c.args["shape"])
            if axes is None:
                return None
        elif name in SELECTIONS:
            axis, idx = SELECTIONS[name](shape, **c.args)
            a, f = axes[axis]
            prev = factors[a][f][2]
            if isinstance(idx, range) and idx.step > 0:
                factors[a][f][2] = prev[idx.start:idx.stop:idx.step]
            elif len(idx) > MAX_POINTS:
                return None  # too many single indices to follow: counted as a use of the whole tensor
            else:
                factors[a][f][2] = sorted({prev[i] for i in idx})
            selected = True
        else:
            break
    out = {}
    for a, fs in factors.items():
        if all(len(chosen) == size for _, size, chosen in fs):
            continue  # the whole axis
        if len(fs) == 1:
            out[a] = fs[0][2]
            continue
        count = 1
        for _, _, chosen in fs:
            count *= len(chosen)
        if count > MAX_POINTS:
            return None
        rows = [0]
        for stride, _, chosen in fs:
            rows = [r + i * stride for r in rows for i in chosen]
        out[a] = sorted(rows)
    return out or None


def _split(factors: dict, axes: list, shape: tuple, new_shape) -> Optional[list]:
    """The current axes after a reshape that splits each of them into consecutive factors (no size-1 or
    empty dimensions); None for any other reshape (a merge, a reordering view)."""
    from .transforms.reshape import resolve_shape

    new = list(resolve_shape(shape, new_shape))
    if any(d <= 1 for d in new) or any(n <= 1 for n in shape):
        return None
    rebuilt: dict = {a: [] for a in factors}
    out, k = [], 0
    for (a, f), n in zip(axes, shape):
        dims, prod = [], 1
        while k < len(new) and prod < n:
            dims.append(new[k])
            prod *= new[k]
            k += 1
        if prod != n:
            return None
        stride = factors[a][f][0]
        split = []
        for d in reversed(dims):
            split.insert(0, [stride, d, range(d)])
            stride *= d
        for fac in split:
            rebuilt[a].append(fac)
            out.append((a, len(rebuilt[a]) - 1))
    if k != len(new):
        return None
    factors.update(rebuilt)
    return out


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
        by_targets: dict = {}  # one finding per set of outputs that share rows
        for span, targets in overlaps:
            by_targets.setdefault(tuple(targets), []).append(span)
        for targets, runs in list(by_targets.items())[:most]:
            if runs[0] is None:
                what = f"elements of {name!r} are"
            else:
                rows, verb = rows_text(runs, most)
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
