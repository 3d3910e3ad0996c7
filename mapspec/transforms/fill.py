"""fill: replace every value with a constant, keeping shape and dtype.

``when`` makes it conditional, typically on a source attribute: MXNet's
``fix_gamma=True`` means the stored gamma is ignored and 1 is used, so
``fill: {value: 1, when: {attr: fix_gamma, of: fc1}}`` carries that convention over.
"""

from __future__ import annotations

import numpy as np

from .. import numeric
from .inverse import Inverse, InverseContext, Lossy, same_axis
from .registry import Arg, Meta, transform


def fill(x: np.ndarray, value: float, when: bool = True, allow: frozenset = frozenset()) -> np.ndarray:
    """``value`` must be exact in the tensor's dtype (no NaN/1e30/2.7 into an integer, see
    :mod:`mapspec.numeric`); a scalar broadcast until written."""
    if not when:
        return x
    return np.full(x.shape, numeric.scalar(value, x.dtype, allow), dtype=x.dtype)


def inverse(ctx: InverseContext) -> Inverse:
    """Nothing to undo where ``when`` was false for every tensor (known from a source file); else values are lost."""
    if ctx.steps and "when" in ctx.args and all(s[2].get("when") is False for s in ctx.steps):
        return Inverse([], axis=same_axis)
    raise Lossy(f"fill replaces every value by {ctx.args.get('value')!r}: the originals are not in the target")


@transform("fill", kernel=fill, args={"value": Arg("number", required=True), "when": Arg("bool", default=True)},
           short="value", inverse=inverse)
def infer(meta: Meta, value: float, when: bool = True) -> Meta:
    """Every value becomes ``value`` (only if ``when`` is true)."""
    return meta
