"""Checks and merging of the spec sections around the rules: ``config:``, ``target.metadata`` (with its
``when:`` and ``generate:`` entries), a rule's ``generate:``, and what ``include`` carries over.

``include`` carries an included spec's vars, rules, ``config:`` vars and ``target.metadata``; the
including spec wins key by key (a config var or metadata key it defines replaces the included one;
a metadata key set to ``null`` removes it; a rule with a ``name`` replaces the included rule of that
name), so a family spec can be a short delta over a base spec.
"""

from __future__ import annotations

import difflib
from typing import Optional

from ..errors import Location, SpecError
from . import conditions
from .expr import ExprError, Template


def config_section(raw) -> Optional[dict]:
    """The parsed ``config:`` section (its shape was checked by the schema)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("vars"), dict):
        return None
    files = raw.get("file")
    out = {"file": [files] if isinstance(files, str) else list(files or []), "vars": dict(raw["vars"])}
    if isinstance(raw.get("inside"), str):
        out["inside"] = raw["inside"]
    if raw.get("from") is not None:  # from: source_metadata (mapspec.language.config)
        out["from"] = raw["from"]
    return out


def check_config(raw) -> list:
    """``default`` and ``values`` expressions of ``config.vars`` entries parse; no var takes a builtin's name."""
    from .metadata import BUILTINS

    errors = []
    entries = raw.get("vars") if isinstance(raw, dict) else None
    for var, entry in entries.items() if isinstance(entries, dict) else ():
        at = entries.loc_of(var) if hasattr(entries, "loc_of") else Location("<config>")
        if var in BUILTINS:
            errors.append(SpecError(f"config var {var!r}: the name is taken by a fact of the conversion "
                                    f"({', '.join(BUILTINS)}); call it something else", at))
        texts = [entry.get("default")] + list(entry.get("values") or []) if isinstance(entry, dict) else []
        for text in texts:
            if isinstance(text, str):
                try:
                    Template(text)
                except ExprError as e:
                    errors.append(SpecError(f"config var {var!r}: {text!r}: {e}", at))
    return errors


def unreplaced(own_rules: list, included_rules: list) -> list:
    """The included rules the including spec does not replace: ours win by rule ``name``."""
    names = {r.name for r in own_rules if r.name}
    return [r for r in included_rules if not (r.name and r.name in names)]


def merge_included(spec, other) -> None:
    """Carry ``other``'s (an included spec's) config vars, target metadata and companions into ``spec``; ours win."""
    if other.config:
        if spec.config is None:
            spec.config = {"file": list(other.config["file"]), "vars": {}}
            for key in ("inside", "from"):
                if key in other.config:
                    spec.config[key] = other.config[key]
        spec.config["vars"] = {**other.config["vars"], **spec.config["vars"]}
    merged = dict(other.target.metadata)
    own = spec.target.metadata
    for k, v in own.items():
        merged[k] = v
    if merged != own:
        locs = {k: other.target.metadata.loc_of(k) for k in other.target.metadata
                if hasattr(other.target.metadata, "loc_of")}
        if hasattr(own, "loc_of"):
            locs.update({k: own.loc_of(k) for k in own})
        spec.target.metadata = _Located(merged, locs, spec.target.loc)
    spec.target.companions = merge_companions(other.target.companions, spec.target.companions)


def merge_companions(included: Optional[dict], own: Optional[dict]) -> Optional[dict]:
    """An included spec's companions under ours: ``json`` files merged key by key (ours win; a key set to
    null is not written), ``refuse`` entries of both, ``copy`` and ``tokenizer`` ours when we give them."""
    if not included:
        return own
    own = own or {}
    out = {**included, **{k: v for k, v in own.items() if k not in ("json", "refuse")}}
    files = {name: dict(body) for name, body in (included.get("json") or {}).items()}
    for name, body in (own.get("json") or {}).items():
        files[name] = {**files.get(name, {}), **body} if isinstance(body, dict) else body
    if files:
        out["json"] = {name: {k: v for k, v in body.items() if v is not None} if isinstance(body, dict) else body
                       for name, body in files.items()}
    refuse = list(included.get("refuse") or []) + list(own.get("refuse") or [])
    if refuse:
        out["refuse"] = refuse
    return out


def drop_removed(metadata):
    """A metadata key set to null (in an including spec: remove the included key) is not written."""
    if not any(v is None for v in metadata.values()):
        return metadata
    locs = {k: metadata.loc_of(k) for k in metadata} if hasattr(metadata, "loc_of") else {}
    return _Located({k: v for k, v in metadata.items() if v is not None}, locs, None)


class _Located(dict):
    """A merged mapping that still says where each key was written (for messages)."""

    def __init__(self, items: dict, locs: dict, default):
        super().__init__(items)
        self._locs, self._default = locs, default
        self.loc = default

    def loc_of(self, key) -> Location:
        return self._locs.get(key) or self._default or Location("<metadata>")

    key_loc = loc_of


def check_metadata(value, loc: Location, known: set, top: bool = True) -> list:
    """``{expr}`` holes parse; ``when`` names known vars; ``generate`` names a generator with its arguments."""
    errors = []
    for k in value if isinstance(value, dict) and top else ():
        if isinstance(k, str) and "{" in k:
            at = value.key_loc(k) if hasattr(value, "key_loc") else loc
            try:
                Template(k)
            except ExprError as e:
                errors.append(SpecError(f"metadata key: {e}", Location(at.file, at.line, at.col + e.column)))
    if isinstance(value, str):
        try:
            Template(value)
        except ExprError as e:
            errors.append(SpecError(f"metadata: {e}", Location(loc.file, loc.line, loc.col + e.column)))
    elif isinstance(value, (dict, list)):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for k, v in items:
            at = value.loc_of(k) if hasattr(value, "loc_of") else loc
            if k == "when" and isinstance(value, dict):
                errors += conditions.check(v, known, at, "metadata")
            elif k == "generate" and isinstance(value, dict):
                errors += check_generate(v, at, "value", None)
            else:
                errors += check_metadata(v, at, known, False)
    return errors


def check_generate(raw, loc: Location, returns: str, label: Optional[str]) -> list:
    """``generate: {G: {arg: V}}``: a known generator of the right kind, every argument known and given."""
    from .generators import GENERATORS

    if not isinstance(raw, dict) or len(raw) != 1:
        return [SpecError("generate: give one generator and its arguments ({name: {arg: value}})", loc, label)]
    (name, args), = raw.items()
    at = raw.key_loc(name) if hasattr(raw, "key_loc") else loc
    gen = GENERATORS.get(name)
    if gen is None or gen.returns != returns:
        fit = [n for n, g in GENERATORS.items() if g.returns == returns]
        hint = difflib.get_close_matches(str(name), fit, n=1)
        what = "tensor" if returns == "tensor" else "metadata value"
        return [SpecError(f"generate: unknown {what} generator {name!r}" + (
            f" (did you mean {hint[0]!r}?)" if hint else f"; known: {', '.join(fit)}"), at, label)]
    args = args if isinstance(args, dict) else {}
    errors = []
    for k in args:
        if k not in gen.args:
            errors.append(SpecError(f"generate: {name} has no argument {k!r} (its arguments: "
                                    f"{', '.join(gen.args)})", args.key_loc(k) if hasattr(args, "key_loc") else at,
                                    label))
    for k in gen.args:
        if k not in args:
            errors.append(SpecError(f"generate: {name} needs the argument {k!r}", at, label))
    for k, v in args.items():
        if isinstance(v, str):
            try:
                Template(v)
            except ExprError as e:
                errors.append(SpecError(f"generate: {name} {k}: {e}", at, label))
    return errors


def computed_note(rule) -> str:
    """invert's note for a tensor the forward computes from vars (a generator, or a constant under when:)."""
    what = next(iter(rule.generate)) if rule.generate else "a constant"
    cond = ", when its conditions hold" if rule.when_vars else ""
    return f"{rule.label}: the forward computes {rule.to_text!r} ({what}{cond}); the reverse drops it"
