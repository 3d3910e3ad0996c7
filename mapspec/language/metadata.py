"""``target.metadata`` and generated tensors at plan time: expressions evaluated over the spec's vars.

A metadata key may hold ``{expr}`` holes (``"{arch}.block_count"``).  A metadata entry is a value, an ``{expr}`` text (a lone ``{expr}`` keeps its value's type), or
``{type: T, value: V}``; that mapping may also say ``when:`` (the key is written only if the
conditions over vars hold, see :mod:`mapspec.language.conditions`) and ``generate: {G: {arg: V}}``
instead of ``value`` (the value of generator G, see :mod:`mapspec.language.generators`).

Besides the vars, expressions here see facts of the planned conversion: ``output_params`` (the number
of elements of every output tensor), ``source_folder`` (the name of the folder holding the source), and
for a mixture of experts ``output_expert_params`` / ``output_experts`` (the elements of one expert of
every stacked ``*_exps.*`` tensor, and the experts each stacks: llama.cpp's count behind an MoE's
general.size_label).
"""

from __future__ import annotations

import os
from typing import Optional

from . import generators
from ..errors import Location, MapspecError, SpecError
from . import conditions
from .expr import ExprError, Template
from .yamlsafe import loc_of

ENTRY_KEYS = {"type", "value", "when", "generate"}
BUILTINS = ("output_params", "source_folder", "output_expert_params", "output_experts")


def is_entry(v) -> bool:
    """A ``{type, value}`` / ``{when, generate}`` mapping (not a plain value)."""
    return isinstance(v, dict) and bool(v) and set(v) <= ENTRY_KEYS and ("when" in v or "generate" in v or
                                                                          set(v) == {"type", "value"})


def builtins(steps, source_path: Optional[str]) -> dict:
    params = expert_params = expert_sum = expert_tensors = 0
    for s in steps:
        n = 1
        for d in s.out_meta.shape:
            n *= int(d)
        params += n
        if "_exps." in s.target and len(s.out_meta.shape) >= 3:  # stacked experts (gguf-py's count)
            count = int(s.out_meta.shape[-2 if ".bias" in s.target else -3])
            expert_params, expert_sum, expert_tensors = expert_params + n // count, expert_sum + count, expert_tensors + 1
    folder = source_path if source_path and os.path.isdir(source_path) else os.path.dirname(
        os.path.abspath(source_path or "."))
    return {"output_params": params, "source_folder": os.path.basename(os.path.normpath(folder)),
            "output_expert_params": expert_params,
            "output_experts": expert_sum // expert_tensors if expert_tensors else 0}


def _value(v, env: dict, unset: dict, where: Location):
    if isinstance(v, str):
        try:
            return Template(v).value(env)
        except ExprError as e:
            missing = [n for n, _ in Template(v).names() if n in unset]
            if missing:
                raise SpecError(f"target metadata: needs {missing[0]}, but {unset[missing[0]]}; guard the entry "
                                f"with when: {{var: {missing[0]}, set: true}}", where) from None
            col = where.col + e.column if where.col else 0
            raise SpecError(f"target metadata: {e}", Location(where.file, where.line, col)) from None
    if isinstance(v, list):
        return [_value(x, env, unset, loc_of(v, i, where)) for i, x in enumerate(v)]
    if isinstance(v, dict):
        return {k: _value(x, env, unset, loc_of(v, k, where)) for k, x in v.items()}
    return v


def _key(raw_key: str, env: dict, where: Location) -> str:
    """A metadata key may hold ``{expr}`` holes too (``"{arch}.block_count"``: one spec for a model family)."""
    if "{" not in raw_key:
        return raw_key
    try:
        return Template(raw_key).render(env)
    except ExprError as e:
        raise SpecError(f"target metadata key {raw_key!r}: {e}", where) from None


def generate(raw: dict, env: dict, unset: dict, where: Location, what: str):
    """The result of ``{G: {arg: V}}`` with each argument evaluated over ``env``."""
    (name, args), = raw.items()
    bound = {k: _value(a, env, unset, loc_of(args, k, where)) for k, a in (args or {}).items()}
    try:
        return generators.run(name, bound, what)
    except SpecError:
        raise
    except MapspecError as e:
        raise SpecError(str(e), where) from None


def evaluate(raw: dict, env: dict, unset: dict, default: Location, error) -> dict:
    """``target.metadata`` with every ``{expr}`` evaluated and every ``when`` applied; errors go to ``error``."""
    out = {}
    for raw_key, v in raw.items():
        where = loc_of(raw, raw_key, default)
        try:
            k = _key(raw_key, env, raw.key_loc(raw_key) if hasattr(raw, "key_loc") else where)
            if k in out:
                raise SpecError(f"target metadata: {raw_key!r} gives the key {k!r} a second time", where)
            if not is_entry(v):
                out[k] = _value(v, env, unset, where)
                continue
            if not conditions.holds(v.get("when"), env, unset):
                continue
            value = generate(v["generate"], env, unset, loc_of(v, "generate", where), f"metadata {k!r}") \
                if "generate" in v else _value(v.get("value"), env, unset, loc_of(v, "value", where))
            out[k] = {"type": v["type"], "value": value} if "type" in v else value
        except SpecError as e:
            error(e)
        except MapspecError as e:  # pragma: no cover - generate() locates its errors
            error(SpecError(f"target metadata {k!r}: {e}", where))
    return out
