"""Per-rule helpers of the planner: ``each`` expansion, constants, and shapes an array can have."""

from __future__ import annotations

import itertools

import numpy as np

from .. import dtypes, numeric
from ..errors import Location
from ..formats import TensorInfo
from ..language.args import Binder
from ..language.expr import ExprError, Template
from ..language.rules import MAX_EACH
from ..language.model import Rule
from ..language.pattern import AmbiguousMatch
from ..transforms import Meta
from .steps import _shape_text


def _each_envs(rule: Rule, env: dict, fail) -> list[dict]:
    if not rule.each:
        return [env]
    axes = []
    total = 1
    for var, spec_v in rule.each.items():
        loc = rule.each.loc_of(var) if hasattr(rule.each, "loc_of") else rule.loc
        if isinstance(spec_v, dict):
            binder = Binder(env, lambda n: False, lambda n: {}, fail)
            bounds = [binder.int_value(v, loc, f"each {var} range") for v in spec_v["range"]]
            if len(bounds) == 3 and bounds[2] == 0:
                raise fail(f"each {var}: range {bounds} has step 0", loc)
            values = range(*bounds)  # counted before anything is materialised
            if not values:
                raise fail(f"each {var}: range {bounds} is empty", loc)
        else:
            values = []
            for v in spec_v:
                if isinstance(v, str) and v.startswith("{") and v.endswith("}"):
                    try:
                        v = Template(v).value(env)
                    except ExprError as e:
                        raise fail(f"each {var}: {e}", loc) from None
                values.append(v)
        total *= len(values)
        if total > MAX_EACH:
            raise fail(f"'each' expands to {total} outputs, more than {MAX_EACH}", rule.each_loc or rule.loc)
        axes.append([(var, v) for v in values])
    envs = []
    for combo in itertools.product(*axes):
        e = dict(env)
        e.update(combo)
        envs.append(e)
    return envs



def _ambiguous(pattern, name) -> bool:
    try:
        pattern.match(name)
        return False
    except AmbiguousMatch:
        return True


_INTP_MAX = 2 ** 63 - 1


def _nbytes(meta: Meta) -> int:
    return TensorInfo("", meta.shape, meta.dtype).nbytes


def _possible(meta: Meta, fail, loc: Location, what: str) -> None:
    """A shape numpy can describe (at most 64 dimensions, no overflowing product even when empty)."""
    if len(meta.shape) > 64:
        raise fail(f"{what} gives {len(meta.shape)} dimensions; at most 64 are possible", loc)
    n = 1
    for d in meta.shape:
        n *= max(int(d), 1)
    if n > _INTP_MAX:
        raise fail(f"{what} gives shape {_shape_text(meta.shape)}, which no array can have (its size overflows "
                   f"64 bits)", loc)


def _constant_array(rule: Rule, shape: tuple, fail) -> np.ndarray:
    """The constant as a read-only array: a scalar is broadcast (a view, nothing allocated at plan)."""
    dt = dtypes.to_numpy(rule.dtype)
    value = numeric.literal(rule.value, dt, lambda msg: fail(f"'value': {msg}", rule.loc),
                            allow=rule.allow)
    if value.shape == tuple(shape):
        return value
    if value.ndim == 0:
        return np.broadcast_to(value, shape)
    raise fail(f"'value' has shape {value.shape} but the rule's shape is {tuple(shape)}", rule.loc)

