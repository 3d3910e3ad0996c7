"""mul, div, add, sub: by a number, a source layer's attribute, or another tensor.

A tensor operand is broadcast along ``axis`` when given (a per-channel vector of
length ``shape[axis]``), otherwise by numpy's rules, and the result must keep the
input's shape.  The result keeps the input's dtype (half-precision inputs are
computed in float32).  ``div`` refuses a zero divisor unless ``zero`` says what a
division by zero gives: ``zero: 0`` is Caffe's BatchNorm convention for a zero
moving-average factor.
"""

from __future__ import annotations

import numpy as np

from .. import dtypes, numeric
import math

from .inverse import Inverse, InverseContext, Lossy, NotInvertible, same_axis
from .registry import Arg, Meta, TransformError, norm_axis, transform


def _operand_shape(x_shape, by_shape, axis) -> tuple:
    """Shape the operand takes to broadcast against ``x_shape``."""
    by_numel = 1
    for d in by_shape:
        by_numel *= int(d)
    if axis is not None:
        ax = norm_axis(axis, len(x_shape))
        if by_numel not in (1, x_shape[ax]):
            raise TransformError(f"operand of shape {tuple(by_shape)} ({by_numel} values) cannot broadcast along "
                                 f"axis {axis} of size {x_shape[ax]} (input shape {tuple(x_shape)})")
        shape = [1] * len(x_shape)
        shape[ax] = by_numel
        return tuple(shape) if by_numel != 1 else ()
    if by_numel == 1:
        return ()
    try:
        out = np.broadcast_shapes(tuple(x_shape), tuple(by_shape))
    except ValueError:
        out = None
    if out != tuple(x_shape):
        raise TransformError(f"operand of shape {tuple(by_shape)} does not broadcast to the input shape "
                             f"{tuple(x_shape)}; give 'axis' to apply a per-channel vector along one axis")
    return tuple(by_shape)


def _compute_dtype(x: np.ndarray) -> np.dtype:
    kind = dtypes.DTYPES[dtypes.name_of(x.dtype)].kind
    if kind == "float":
        return x.dtype if x.dtype.itemsize >= 4 else np.dtype(np.float32)
    return x.dtype


def _prepare(x: np.ndarray, by, axis, allow: frozenset = frozenset()):
    if isinstance(by, np.ndarray):
        b = by.reshape(_operand_shape(x.shape, by.shape, axis))
    else:
        b = by
    ct = _compute_dtype(x)
    if ct.kind in "iub":
        bad = (isinstance(b, float) and not float(b).is_integer()) or (
            isinstance(b, np.ndarray) and b.dtype.kind == "f")
        if bad:
            raise TransformError(f"arithmetic on an integer tensor ({x.dtype}) with a non-integer operand; "
                                 f"cast the tensor to a float dtype first")
        if isinstance(b, np.ndarray):
            b = numeric.cast(b, ct, allow)  # an int64 operand that does not fit an int8 tensor is refused
        else:
            b = numeric.scalar(b, ct, allow)
    elif not isinstance(b, np.ndarray):
        b = numeric.scalar(b, ct, allow)  # 1e300 by a float32: overflow, refused unless allowed
    return np.asarray(x, dtype=ct) if x.dtype != ct else x, (
        b.astype(ct) if isinstance(b, np.ndarray) else b), ct


def _finish(out: np.ndarray, x: np.ndarray, allow: frozenset = frozenset()) -> np.ndarray:
    """Back to the input's dtype (half precision was computed in float32): overflow to inf is refused."""
    return out if out.dtype == x.dtype else numeric.cast(out, x.dtype, allow)


def _apply(op: str, ufunc, x: np.ndarray, by, axis, allow: frozenset) -> np.ndarray:
    a, b, _ = _prepare(x, by, axis, allow)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):  # judged below, not warned about
        out = ufunc(a, b)
    numeric.int_arith(op, a, b, out, allow)
    if op == "mul":  # add/sub cannot underflow (gradual underflow); their cast back to half precision can
        numeric.check_underflow(out, [a, b], allow, "product")
    return _finish(out, x, allow)


def mul(x: np.ndarray, by, axis=None, allow: frozenset = frozenset()) -> np.ndarray:
    return _apply("mul", np.multiply, x, by, axis, allow)


def add(x: np.ndarray, by, axis=None, allow: frozenset = frozenset()) -> np.ndarray:
    return _apply("add", np.add, x, by, axis, allow)


def sub(x: np.ndarray, by, axis=None, allow: frozenset = frozenset()) -> np.ndarray:
    return _apply("sub", np.subtract, x, by, axis, allow)


def div(x: np.ndarray, by, axis=None, zero=None, allow: frozenset = frozenset()) -> np.ndarray:
    a, b, ct = _prepare(x, by, axis, allow)
    zeros = np.asarray(b) == 0
    if zeros.any():
        if zero is None:
            n = int(zeros.sum())
            raise TransformError(f"division by zero: the divisor has {n} zero value{'s' if n > 1 else ''}; "
                                 f"add 'zero: 0' to div to give 0 there (Caffe's convention for a zero "
                                 f"BatchNorm factor), or fix the source")
        safe = np.where(zeros, 1, b).astype(ct) if isinstance(b, np.ndarray) else ct.type(1)
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            out = np.divide(a, safe) if ct.kind == "f" else np.floor_divide(a, safe)
        numeric.int_arith("div", a, safe, out, allow)
        numeric.check_underflow(out, [a], allow, "quotient")
        out = np.where(np.broadcast_to(zeros, out.shape), numeric.scalar(zero, ct, allow), out)
    else:
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            out = np.divide(a, b) if ct.kind == "f" else np.floor_divide(a, b)
        numeric.int_arith("div", a, b, out, allow)
        numeric.check_underflow(out, [a], allow, "quotient")
    return _finish(np.asarray(out, dtype=ct), x, allow)


def _infer(meta: Meta, by, axis=None, zero=None) -> Meta:
    if isinstance(by, Meta):
        _operand_shape(meta.shape, by.shape, axis)
    elif axis is not None:
        norm_axis(axis, len(meta.shape))
    if dtypes.DTYPES[meta.dtype].kind == "bool":
        raise TransformError("arithmetic on a bool tensor; cast it first")
    return meta


_UNDO = {"mul": "div", "div": "mul", "add": "sub", "sub": "add"}


def _inverse(name: str):
    def inverse(ctx: InverseContext) -> Inverse:
        """The opposite operation by the same number: exact for mul/div by a power of two, rounding otherwise."""
        by = ctx.args.get("by")
        if isinstance(by, dict) and "attr" in by:
            by = ctx.bound("by")  # the same attribute value for every tensor: written as a number
        if isinstance(by, dict) and by.get("optional") and ctx.steps and \
                all(_is_identity(s[2].get("by"), name) for s in ctx.steps):
            return Inverse([], axis=same_axis)  # the source lacks the tensor: the forward left the values alone
        if isinstance(by, bool) or not isinstance(by, (int, float)):
            args = {"by": by, **({"axis": ctx.args["axis"]} if ctx.args.get("axis") is not None else {})}
            raise Lossy(f"{name} by the tensor {by!r}: the reverse would need that tensor, unchanged, in the target "
                        f"to {_UNDO[name]} by", ref="by", approx=Inverse([(_UNDO[name], args)], axis=same_axis))
        if by == 0 and name in ("mul", "div"):
            raise Lossy(f"{name} by 0 leaves no values to restore")
        exact = by == 0 if name in ("add", "sub") else math.frexp(float(by))[0] in (0.5, -0.5)
        args = {"by": by}
        if ctx.args.get("axis") is not None:
            args["axis"] = ctx.args["axis"]
        inverse = Inverse([(_UNDO[name], args)], axis=same_axis)
        if not exact:
            raise Lossy(f"{name} by {by!r} then {_UNDO[name]} by {by!r} may round: not bit-exact", approx=inverse)
        return inverse
    return inverse


# An optional tensor operand the source lacks ({ref: "conv1[1]", optional: true}: a convolution without a
# bias) stands for the operation's identity: the rule then leaves the values as they are.
IDENTITY = {"add": 0, "sub": 0, "mul": 1, "div": 1}


def _is_identity(bound, name: str) -> bool:
    """Whether a bound operand is the identity an absent optional reference binds to (not a tensor)."""
    return isinstance(bound, (int, float)) and not isinstance(bound, bool) and bound == IDENTITY[name]


def _args(name: str) -> dict:
    return {
        "by": Arg("operand", required=True, absent=IDENTITY[name],
                  doc=f"a number, {{attr: ..., of: ...}}, or a tensor reference (an optional one the source lacks: "
                      f"{IDENTITY[name]})"),
        "axis": Arg("int", default=None, doc="broadcast a per-channel operand along this axis"),
    }


for _name, _kernel, _doc in (("mul", mul, "Multiply by ``by``."), ("add", add, "Add ``by``."),
                             ("sub", sub, "Subtract ``by``.")):
    def _make(doc):
        def infer(meta: Meta, by, axis=None) -> Meta:
            return _infer(meta, by, axis)
        infer.__doc__ = doc
        return infer
    transform(_name, kernel=_kernel, args=_args(_name), short="by", inverse=_inverse(_name))(_make(_doc))


@transform("div", kernel=div, args={**_args("div"), "zero": Arg("number", default=None,
                                                               doc="result where the divisor is 0 (else an error)")},
           short="by", inverse=_inverse("div"))
def infer_div(meta: Meta, by, axis=None, zero=None) -> Meta:
    """Divide by ``by``; a zero divisor is an error unless ``zero`` gives the result for it."""
    return _infer(meta, by, axis)
