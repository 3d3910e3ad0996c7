"""Checks of a spec's ``verify:`` runners: each side's ``run`` is a registered runner, its ``model`` a
registered model factory and its ``params`` the typed parameters that factory declares; its ``input``
step does not contradict itself.

A spec is data: it chooses no code and no file through ``verify:``.  The registries
(``mapspec.language.runners.RUNNERS``, ``mapspec.models.registry.FACTORIES``) list what it may name.
"""

from __future__ import annotations

import difflib

from ..errors import Location, SpecError
from .runners import RUNNERS
from .yamlsafe import loc_of


def runner_errors(verify, default: Location) -> list[SpecError]:
    """Every problem with verify.source / verify.target's run, model and params, each at its place."""
    from ..models import registry
    from .inputstep import side_errors

    errors = []
    for side in ("source", "target"):
        raw = verify.get(side) if isinstance(verify, dict) else None
        if not isinstance(raw, dict):
            continue
        errors += [SpecError(m, loc_of(raw, k, default)) for m, k in side_errors(raw, f"verify.{side}")]
        run = raw.get("run")
        if isinstance(run, str) and run and run not in RUNNERS:
            hint = difflib.get_close_matches(run, list(RUNNERS), n=1)
            errors.append(SpecError(
                f"verify.{side}.run: unknown runner {run!r}" + (f" (did you mean {hint[0]!r}?)" if hint else
                                                               f"; known: {', '.join(RUNNERS)}"),
                loc_of(raw, "run", default)))
        if "params" in raw and "model" not in raw:
            errors.append(SpecError(f"verify.{side}.params: parameters are for a model factory; name one with "
                                    f"'model:'", _key_loc(raw, "params", default)))
        if "model" not in raw:
            continue
        params = raw.get("params")
        for key, message in registry.problems(raw["model"], params):
            message = message.replace("--SIDE-", f"--{side}-")
            if key is None:  # an unregistered name, or params that are not a mapping
                field = "params" if isinstance(raw["model"], str) and raw["model"] in registry.FACTORIES else "model"
                errors.append(SpecError(f"verify.{side}.{field}: {message}", loc_of(raw, field, default)))
            elif key not in registry.FACTORIES[raw["model"]].params:
                errors.append(SpecError(f"verify.{side}.params: {message}", _key_loc(params, key, default)))
            else:
                errors.append(SpecError(f"verify.{side}.params.{key}: {message}", loc_of(params, key, default)))
    return errors


def _key_loc(d, key, default: Location) -> Location:
    return d.key_loc(key) if hasattr(d, "key_loc") else default
