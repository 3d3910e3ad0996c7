"""``when:`` conditions over vars, for a metadata entry or a rule without ``from`` (a constant or a
generated tensor): ``{var: rope_type, is: llama3}``, ``{var: rope_type, in: [linear, yarn]}``,
``{var: rope_factor, set: true}`` (an optional config var the config holds).  A list: all must hold.
"""

from __future__ import annotations

from typing import Optional

from ..errors import Location, SpecError


def is_var_condition(cond) -> bool:
    return isinstance(cond, dict) and "var" in cond


def as_list(when) -> list:
    if when is None:
        return []
    return list(when) if isinstance(when, list) else [when]


def check(when, known: set, loc: Location, where: str, label: Optional[str] = None) -> list:
    """Errors for conditions naming no var of the spec (the schema checked their shape)."""
    errors = []
    for cond in as_list(when):
        at = cond.loc_of("var") if hasattr(cond, "loc_of") and "var" in cond else loc
        tests = [k for k in ("is", "in", "set") if isinstance(cond, dict) and k in cond]
        if not is_var_condition(cond) or set(cond) != {"var", *tests} or len(tests) != 1 or \
                ("in" in cond and not isinstance(cond["in"], list)) or ("set" in cond and
                                                                      not isinstance(cond["set"], bool)):
            errors.append(SpecError(f"{where}: when: give {{var: NAME, is: VALUE}}, {{var: NAME, in: [VALUES]}} or "
                                    f"{{var: NAME, set: true|false}}, not {cond!r}", at, label))
        elif isinstance(cond["var"], str) and cond["var"] not in known:
            errors.append(SpecError(f"{where}: when: {cond['var']!r} is not a var of the spec (its vars: "
                                    f"{', '.join(sorted(known)) or 'none'})", at, label))
    return errors


def holds(when, vars_: dict, unset: dict) -> bool:
    """Do all var conditions hold?  ``unset``: optional config vars the config lacks."""
    for cond in as_list(when):
        if not is_var_condition(cond):
            continue
        name = cond["var"]
        present = name in vars_ and name not in unset
        if "set" in cond:
            if present != bool(cond["set"]):
                return False
            continue
        if not present:
            return False
        value = vars_[name]
        if "is" in cond and value != cond["is"]:
            return False
        if "in" in cond and value not in cond["in"]:
            return False
    return True
