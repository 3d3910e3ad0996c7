"""The transform registry: a dict of plain functions, filled by a decorator.

Each transform lives in its own module with two parts:

* a pure numpy *kernel* ``kernel(x, **args) -> np.ndarray`` that knows nothing of
  specs, and
* registry glue: ``@transform(name, kernel=..., args=...)`` on an *infer* function
  ``infer(meta, **args) -> Meta`` that computes the output shape and dtype from
  metadata alone (this is what ``mapspec plan`` runs) and raises
  :class:`TransformError` when the input cannot fit.

A third, optional part declares the transform's *inverse* (``inverse=``, the protocol in
:mod:`mapspec.transforms.inverse`): what undoes it, for ``mapspec invert``.

Arguments are declared with :class:`Arg` kinds; the spec loader checks and binds
them (expressions evaluated, references resolved to source tensor names, attribute
references read from the source's layer/op attributes).  Registering a name twice
raises.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import numpy as np

from ..errors import TransformError  # noqa: F401 - raised by every transform module through this one
from .inverse import Inverse, InverseContext


class Meta(NamedTuple):
    """Shape and dtype of a tensor flowing through a transform chain."""

    shape: tuple
    dtype: str

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= int(d)
        return n


# Argument kinds:
#   int      an integer, or "{expr}"
#   ints     a list of those
#   number   a number, or an attribute reference {attr: NAME, of: LAYER[, default: X]}
#   operand  a number, an attribute reference, or a tensor reference ("layer[1]" / {ref: ..., optional: true});
#            an optional reference to a tensor the source lacks binds to Arg.absent (arith: the identity)
#   ref      a tensor reference (optional references may be absent in the source: then None)
#   refs     a list of tensor references
#   dtype    a dtype name
#   bool     true/false, or an attribute reference
#   choice   one of Arg.choices
ARG_KINDS = ("int", "ints", "number", "operand", "ref", "refs", "dtype", "bool", "choice")


class Arg(NamedTuple):
    kind: str
    required: bool = False
    default: Any = None
    doc: str = ""
    choices: tuple = ()
    absent: Any = None  # operand: what an optional reference that names no source tensor stands for (None: error)


class TransformDef(NamedTuple):
    name: str
    kernel: Callable[..., np.ndarray]
    infer: Callable[..., Meta]
    args: dict
    short: Optional[str]  # the argument a non-mapping value fills: {reshape: [2, -1]} == {reshape: {shape: [2, -1]}}
    doc: str
    inverse: Optional[Callable[[InverseContext], Inverse]] = None  # see transforms/inverse.py; None: not invertible


TRANSFORMS: dict[str, TransformDef] = {}


def transform(name: str, *, kernel: Callable[..., np.ndarray], args: dict, short: Optional[str] = None,
              inverse: Optional[Callable[[InverseContext], Inverse]] = None):
    """Register ``infer`` (the decorated function), ``kernel`` and ``inverse`` under ``name``."""
    for a in args.values():
        if a.kind not in ARG_KINDS:
            raise ValueError(f"transform {name!r}: unknown argument kind {a.kind!r}")
    if short is not None and short not in args:
        raise ValueError(f"transform {name!r}: shorthand argument {short!r} is not declared")

    def deco(infer: Callable[..., Meta]) -> Callable[..., Meta]:
        if name in TRANSFORMS:
            raise ValueError(f"transform {name!r} is registered twice")
        TRANSFORMS[name] = TransformDef(name, kernel, infer, dict(args), short, (infer.__doc__ or "").strip(),
                                        inverse)
        return infer

    return deco


# -- helpers shared by transforms ---------------------------------------------

def norm_axis(axis: int, ndim: int, what: str = "axis") -> int:
    if not -ndim <= axis < ndim:
        raise TransformError(f"{what} {axis} out of range for a tensor of {ndim} dimension"
                             f"{'' if ndim == 1 else 's'}")
    return axis % ndim


# -- element coverage and static checks (spec language 1.1) ---------------------
#
# Kept beside TRANSFORMS rather than in TransformDef so that a transform declares them only
# when it has them:
#
# * SELECTIONS[name](shape, **args) -> (axis, range): the elements of its input a transform
#   keeps, for transforms that take part of a tensor (take, slice, split); the engine checks
#   that the parts of a source tensor taken by all rules cover it exactly once.
# * STATIC_CHECKS[name](**args): raises TransformError for arguments that are wrong whatever
#   the tensor (a transpose that is no permutation); `validate` runs it on every argument
#   known without data.

SELECTIONS: dict[str, Callable[..., tuple]] = {}
STATIC_CHECKS: dict[str, Callable[..., None]] = {}


def selects(name: str):
    def deco(fn):
        SELECTIONS[name] = fn
        return fn
    return deco


def static_check(name: str):
    def deco(fn):
        STATIC_CHECKS[name] = fn
        return fn
    return deco
