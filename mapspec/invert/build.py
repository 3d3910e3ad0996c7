"""``invert()``: the forward spec's vars and (with a source) its plan, every rule reversed and ordered, the
reverse's target dtype, and the result rendered."""

from __future__ import annotations

from typing import Optional, Union

import numpy as np

from .. import dtypes
from ..errors import ErrorList, MapspecError, SpecError
from ..language.model import Spec
from ..transforms.inverse import Lossy, NotInvertible
from .names import _matches
from .order import order
from .rules import Reverse, _Inverter, _Out
from .render import _render


# -- the command -----------------------------------------------------------------------

def _planned_steps(spec: Spec, source, source_format: Optional[str], template) -> dict:
    from ..engine import _IMPLICIT_CAST, plan
    from ..language.args import Ref

    p = plan(spec, source, template=template, source_format=source_format, no_tokenizer=True)  # tensors only
    try:
        if not p.ok:
            p.check()
        infos = p.source.infos()

        def meta_of(v):
            from ..transforms import Meta

            if isinstance(v, Ref):
                i = infos[v.name]
                return Meta(tuple(i.shape), i.dtype)
            if isinstance(v, list):
                return [meta_of(x) for x in v]
            return v

        out: dict = {"float dtypes": set(), "ignored": list(p.ignored)}  # dtypes: before target.dtype's cast
        for name, r in p.dropped_by.items():  # a drop rule that matched lost those tensors: not "nothing matched"
            out.setdefault(("sources", id(r)), []).append(name)
        flat = []
        for step in p.steps:
            if step.parts:  # a stack: its parts ran the rule's transforms, one source tensor each
                out.setdefault(("stack", id(step.rule)), set()).add(len(step.parts))
            flat += step.parts or [step]
        for step in flat:
            for r in (step.rule, step.rule.parent):
                if r is not None:
                    out.setdefault(("sources", id(r)), []).extend([step.source] if step.source else [])
            if step.rule.each:
                out.setdefault(("envs", id(step.rule)), {}).setdefault(step.source, []).append(
                    {k: step.env[k] for k in step.rule.each if k in step.env})
            meta = step.in_meta
            for i, bc in enumerate(step.calls):
                if bc.call is _IMPLICIT_CAST:
                    break
                metas = {k: meta_of(v) for k, v in bc.args.items()}
                nxt = bc.call.tdef.infer(meta, **metas)
                out.setdefault((id(step.rule), i), []).append((meta, nxt, bc.args, metas))
                meta = nxt
            if step.source is not None and dtypes.DTYPES[meta.dtype].kind == "float":
                out["float dtypes"].add(meta.dtype)
        return out
    finally:
        p.source.close()
        if p.template is not None:
            p.template.close()


def invert(spec: Union[str, Spec], source=None, source_format: Optional[str] = None, template=None,
           lossy: bool = False, vars: Optional[dict] = None) -> Reverse:
    """Build the reverse of ``spec``; raises ErrorList naming each rule that cannot be reversed."""
    from ..engine import _as_spec, with_vars

    spec = with_vars(_as_spec(spec), vars)
    spec = _config_vars(spec, source, vars)
    steps = _planned_steps(spec, source, source_format, template) if source is not None else None
    inv = _Inverter(spec, steps, lossy)
    outs: list[_Out] = []
    errors: list[MapspecError] = []
    missing: list[str] = []
    ignore: list[str] = []  # with lossy: the targets of left-out rules, unused by the reverse
    for rule in spec.rules:
        if steps is not None and rule.optional and ("sources", id(rule)) not in steps:
            inv.notes.append(f"{rule.label}: optional, and nothing of the source matched it: left out (the reverse "
                             f"writes the layout the source had)")
            continue
        try:
            outs += inv.rule(rule)
        except NotInvertible as e:
            if isinstance(e, Lossy) and lossy:
                missing.append(f"source tensors matching {rule.source_text!r} ({rule.label}: {e})")
                ignore += inv.targets(rule)
                continue
            hint = "; --lossy leaves the rule out and lists what the reverse will miss" if isinstance(e, Lossy) \
                else ""
            errors.append(SpecError(f"cannot be reversed: {e}{hint}", rule.loc, rule.label))
    for p, loc in spec.ignore:
        if steps is not None and not any(_matches(p, n) for n in steps["ignored"]):
            continue  # nothing of the source is ignored: nothing is lost
        if lossy:
            missing.append(f"source tensors matching {p.text!r} (ignored by the forward)")
        else:
            errors.append(SpecError(f"cannot be reversed: the forward ignores source tensors matching {p.text!r}, "
                                    f"so the reverse cannot write them; --lossy leaves them out", loc))
    target_dtype = None
    if spec.target.dtype:
        try:
            target_dtype = _target_dtype(spec.target.dtype, steps, lossy, inv.inexact)
        except NotInvertible as e:
            errors.append(SpecError(f"cannot be reversed: {e}", spec.target.loc))
    if errors:
        raise errors[0] if len(errors) == 1 else ErrorList(errors)
    inv.notes += [a for i, a in enumerate(inv.alternatives) if a not in inv.alternatives[:i]]
    placed = order(outs, inv.notes)
    inexact = [f"{label}: {'; '.join(why)}" for label, why in inv.inexact.items()]
    return Reverse(_render(spec, placed, inv.notes, missing, inexact, ignore, source is not None, target_dtype),
                   len(placed), inv.notes, missing, inexact)


def _config_vars(spec: Spec, source, given: Optional[dict]) -> Spec:
    """Vars the forward reads from the model's config file: the reverse needs their values (the reverse's
    source has another config file, or none): read beside ``source``, or given with --var."""
    from ..language.config import with_config

    wanted = [k for k in (spec.config or {}).get("vars", {}) if k not in spec.vars]
    if not wanted:
        return spec
    if source is None:
        raise MapspecError(f"{spec.path}: the spec reads {', '.join(wanted)} from the model's config file; the "
                           f"reverse needs their values: give invert --source FILE (with its config file beside "
                           f"it) or --var {wanted[0]}=VALUE")
    return with_config(spec, source if isinstance(source, str) else source.path, None, given=set(given or ()))


def _target_dtype(want: str, steps: Optional[dict], lossy: bool, inexact: dict) -> str:
    """The reverse's target.dtype undoing the forward's (every float output cast to ``want``)."""
    if steps is None:
        raise NotInvertible(f"target.dtype casts every float output to {want}; the reverse needs the source's "
                            f"float dtype (give invert --source FILE)")
    found = steps["float dtypes"]
    if len(found) != 1:
        raise NotInvertible(f"target.dtype {want}: the source's float tensors are of {len(found)} dtypes "
                            f"({', '.join(sorted(found)) or 'none'}); one target.dtype cannot restore them")
    src = found.pop()
    if not np.can_cast(dtypes.DTYPES[src].numpy, dtypes.DTYPES[want].numpy, casting="safe"):
        if not lossy:
            raise Lossy(f"target.dtype casts {src} to {want}, which rounds; --lossy casts back with a note")
        inexact.setdefault("target.dtype", []).append(f"{src} -> {want} rounds")
    return src
