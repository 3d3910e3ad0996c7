"""The inverse protocol: how a transform says what undoes it (``mapspec invert``).

A transform module passes ``inverse=`` to :func:`~mapspec.transforms.registry.transform`: a
function ``inverse(ctx: InverseContext) -> Inverse`` beside its kernel, so that what undoes
a transform lives where the transform does.  It returns the transforms of the reverse chain,
or raises :class:`Lossy` (information is lost: ``--lossy`` accepts it, with an approximate
inverse where there is one) or :class:`NotInvertible` with the reason.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import numpy as np
from ..errors import MapspecError


class NotInvertible(MapspecError, ValueError):
    """No inverse can be written for this use of the transform; the message says why."""


class Lossy(NotInvertible):
    """The transform loses information (the message says what); ``--lossy`` accepts that.

    ``approx``: an :class:`Inverse` that gets close (a cast back, the opposite arithmetic): with
    ``--lossy`` the reverse uses it and says the values are inexact; without one the rule's
    source tensors are missing from the reverse output.  ``ref``: the argument naming a tensor
    the transform computed with (``div: {by: "conv1/bn[2]"}``), whose fate invert reports.
    """

    def __init__(self, message: str, approx: "Optional[Inverse]" = None, ref: Optional[str] = None):
        super().__init__(message)
        self.approx = approx
        self.ref = ref  # arithmetic by a referenced tensor: the argument that names it (invert says its fate)


class Inverse(NamedTuple):
    """How to undo one transform.

    ``calls``: the transforms of the reverse chain, ``[(name, raw args)]``, in order.
    ``axis``: where an axis of this transform's input ends up in its output (None: it cannot
    be followed); used to gather the parts of a ``split`` that later transforms moved.
    ``gather``: for a transform that keeps one part of its input (``split``): ``{"axis": a,
    "parts": n, "take": raw}``; the reverse concatenates the parts the rule's ``each`` made.
    ``parts``: for a transform that joins referenced tensors (``concat``): ``{"axis": a,
    "refs": [(raw ref, start, stop)]}``; ``calls`` slice the input's own part back out and the
    reverse writes each referenced part as an output of its own.
    """

    calls: list = []
    axis: Optional[Callable[[int], Optional[int]]] = None
    gather: Optional[dict] = None
    parts: Optional[dict] = None  # concat: {"axis": a, "refs": [(raw ref, start, stop)]}


def same_axis(a: int) -> int:
    return a


class InverseContext:
    """What an inverse may know about one transform of one rule.

    ``args``: the raw arguments as written in the spec (templates unrendered).  ``steps``:
    when ``invert`` was given a source file, one ``(in_meta, out_meta, bound_args, arg_metas)``
    per tensor the rule converted (``arg_metas``: a referenced tensor's Meta in place of its
    reference); otherwise None.  Inverses that depend on facts only a source can tell (the
    shape before a reshape, the dtype before a cast) use the helpers below, which raise
    :class:`NotInvertible` naming what is missing.
    """

    def __init__(self, name: str, args: dict, steps: Optional[list]):
        self.name = name
        self.args = args
        self.steps = steps

    def _need(self, what: str) -> list:
        if not self.steps:
            raise NotInvertible(f"{self.name}: the reverse needs {what}, which only a source file can tell "
                                f"(give invert --source FILE)")
        return self.steps

    def in_shape(self) -> list:
        """The input shape common to every step, with -1 for the one dimension that varies."""
        shapes = {tuple(s[0].shape) for s in self._need("the shape before it")}
        ranks = {len(s) for s in shapes}
        if len(ranks) != 1:
            raise NotInvertible(f"{self.name}: its inputs have different ranks ({sorted(shapes)[:3]}), so one "
                                f"reverse reshape cannot restore them")
        rank = ranks.pop()
        out = []
        for i in range(rank):
            dims = {s[i] for s in shapes}
            out.append(dims.pop() if len(dims) == 1 else -1)
        if out.count(-1) > 1:
            raise NotInvertible(f"{self.name}: its inputs differ in more than one dimension "
                                f"(e.g. {sorted(shapes)[:2]}), so one reverse reshape cannot restore them")
        return out

    def in_dtype(self) -> str:
        dts = {s[0].dtype for s in self._need("the dtype before it")}
        if len(dts) != 1:
            raise NotInvertible(f"{self.name}: its inputs have different dtypes ({', '.join(sorted(dts))})")
        return dts.pop()

    def in_ndim(self) -> int:
        return len(self.in_shape())

    def bound(self, key: str):
        """The bound value of an argument, the same for every step."""
        vals = [s[2].get(key) for s in self._need(f"the value of {key!r}")]
        first = vals[0]
        if any(not _same(v, first) for v in vals[1:]):
            raise NotInvertible(f"{self.name}: {key!r} differs between tensors ({first!r}, ...), so one reverse "
                                f"rule cannot undo it")
        return first

    def static_ints(self, key: str, default=None) -> Optional[list]:
        """A list (or one) of plain integers as written, else the bound value."""
        v = self.args.get(key, default)
        if isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            return list(v)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        if v is None:
            return None
        return self.bound(key)


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return False
    return type(a) is type(b) and a == b
