"""The reverse spec written out: YAML text (vars, endpoints, rules, notes), checked as a spec before it is
put in place."""

from __future__ import annotations

import os
import tempfile
from typing import Optional

import yaml

from .. import inverse_tables
from ..errors import MapspecError
from ..language.model import Spec
from .rules import Reverse, _Out


class SpecDumper(yaml.SafeDumper):
    """YAML for a spec a person reads: no anchors and aliases for values that happen to be shared."""

    def ignore_aliases(self, data) -> bool:
        return True


def _version(spec: Spec):
    """The forward's spec language version (the reverse uses the same features)."""
    from ..language.yamlsafe import load_file

    try:
        v = load_file(spec.path).get("mapspec", 1)
    except MapspecError:
        return 1
    return v if v in (1, 1.1) else 1


def _plain(v):
    """Vars as plain YAML values (a var list may be a tuple or a subclass of list)."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _render(spec: Spec, outs: list[_Out], notes: list, missing: list, inexact: list, ignore: list,
            planned: bool, target_dtype: Optional[str] = None) -> str:
    def endpoint(ep) -> dict:
        return {"format": ep.format} if ep.format else {}

    doc: dict = {"mapspec": _version(spec), "name": f"{spec.name}-reversed",
                 "description": f"the reverse of {spec.name} (mapspec invert)"}
    src, dst = endpoint(spec.target), endpoint(spec.source)
    if src:
        doc["source"] = src
    if target_dtype:
        dst["dtype"] = target_dtype
    if dst:
        doc["target"] = dst
    doc["rules"] = [o.rule for o in outs]
    tables = inverse_tables.used(spec.vars, yaml.safe_dump(doc["rules"]))
    if spec.vars or tables:
        doc = {**{k: v for k, v in doc.items() if k != "rules"}, "vars": _plain({**spec.vars, **tables}),
               "rules": doc["rules"]}
    if ignore:
        doc["ignore"] = ignore
    head = [f"# The reverse of {os.path.basename(spec.path)} ({spec.name}), written by `mapspec invert`"
            + (" from a source file's shapes" if planned else "") + "."]
    head += [f"# note: {n}" for n in notes]
    head += [f"# missing from the reverse output: {m}" for m in missing]
    head += [f"# inexact (values rounded) in the reverse output: {m}" for m in inexact]
    body = yaml.dump(doc, Dumper=SpecDumper, sort_keys=False, default_flow_style=None, width=120, allow_unicode=True)
    return "\n".join(head) + "\n" + body


def write(rev: Reverse, output: Optional[str], force: bool = False, sync: bool = True) -> None:
    """Check that the reverse validates, then write it atomically (or return it for stdout)."""
    from ..formats import atomic_output
    from ..language.load import check_spec

    def checked(path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(rev.text)
        _, errors = check_spec(path)
        if errors:  # a bug of invert, never the user's: say so plainly
            raise MapspecError("invert wrote a spec that does not validate: "
                               + "; ".join(str(e) for e in errors[:3]))

    if output is None:
        with tempfile.TemporaryDirectory() as d:
            checked(os.path.join(d, "reversed.yaml"))
        return
    with atomic_output(output, force=force, sync=sync) as tmp:
        checked(tmp)
