"""``mapspec draft``: propose a spec from a source checkpoint and a target template.

:mod:`.units` reads layers and their tensors' roles from each side, :mod:`.match` aligns the
layers in graph order and picks each tensor's transforms, :mod:`.generalize` turns the pairs
into pattern rules with index arithmetic.  Only names, shapes and dtypes of the template are
used, never its values.  A target that has no candidate, or two that shapes and order alone
cannot tell apart (:mod:`.settle`), is left open, never guessed; so is a source tensor the draft
does not use.  Each is a TODO rule (``name: TODO ...``, a ``from`` that matches nothing): the
draft is written, but plans and applies only once every TODO is resolved, the error naming the
TODO's line; the draft relaxes no check.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

import yaml

from ..invert import SpecDumper
from .generalize import expressible, generalize, letter_vars
from .graph import topology
from .match import align, unique_pairs
from .todo import hold_back, todo_texts
from .units import in_graph_order, units

_TARGET_FORMATS = {"prototxt": "caffe", "mxnet-symbol": "mxnet"}


@dataclass
class Draft:
    text: str
    total: int  # target tensors
    mapped: int
    open: list = field(default_factory=list)  # target tensor names left open
    unused: list = field(default_factory=list)  # source tensors the draft does not use
    shuffled: list = field(default_factory=list)  # files whose order could not stand for graph order
    template_dir: Optional[str] = None  # the template's folder: the drafted spec names a file there
    todos: list = field(default_factory=list)  # the TODO rules' texts
    check_text: str = ""  # the draft without its TODO rules, open targets and unused sources relaxed


def draft(source: str, template: str, output: Optional[str] = None, source_format: Optional[str] = None,
          template_format: Optional[str] = None, template_options: Optional[dict] = None,
          fold_letters: bool = True) -> Draft:
    from ..formats import open_checkpoint

    template_options = dict(template_options or {})
    with open_checkpoint(source, format=source_format) as src, \
            open_checkpoint(template, format=template_format, **template_options) as tpl:
        su, tu = units(src), units(tpl)
        shuffled = [r.path for r, us in ((src, su), (tpl, tu)) if not in_graph_order(r, us)]
        rope = rotary_heads(source, template)
        st = topology(src)
        al = unique_pairs(su, tu, rope) if shuffled else align(su, tu, rope, (st, topology(tpl)))
        src_names = src.names()
        # a name with '<' or '>' cannot be a pattern: its targets stay open
        maps, held = hold_back([m for m in al.mappings if expressible(m.source)], su, st)
        rules = generalize(maps, src_names, letters=fold_letters)
        produced = {m.target for m in maps if m.target} | {a["to"] for m in maps for a in m.also}
        used = {m.source for m in maps}
        for m in maps:
            _collect_refs(m.apply, set(src_names), used)
        total = list(tpl.infos())
        open_targets = [n for n in total if n not in produced]
        unused = [n for n in src_names if n not in used]
        todos = todo_texts(al, su, maps, unused, held)
        src_fmt, tgt_fmt = src.format, _TARGET_FORMATS.get(tpl.format, tpl.format)
    # relative to the spec written (printed: absolute, so that it holds wherever it is saved)
    template_ref = os.path.relpath(os.path.abspath(template), os.path.dirname(os.path.abspath(output))) if output \
        else os.path.abspath(template)
    table = letter_vars(rules)  # letter placeholders are alternatives (language 1.1) looked up in a table
    version = 1.1 if table or any("rope_permute" in c for r in rules for c in r.get("apply", [])
                                  if isinstance(c, dict)) else 1
    doc = {"mapspec": version, "name": "draft",
           "description": f"drafted by mapspec draft: {os.path.basename(source)} -> {os.path.basename(template)}",
           "source": {"format": src_fmt},
           "target": {"format": tgt_fmt, "template": template_ref,
                      **({"template_options": template_options} if template_options else {})}}
    if table:
        doc["vars"] = table
    head = [f"# Drafted by `mapspec draft` from {os.path.basename(source)} (source) and {os.path.basename(template)}"
            f" (template): {len(total) - len(open_targets)} of {len(total)} targets mapped, {len(open_targets)} left "
            f"open.", "# Review every rule before use; prove the result with `mapspec verify`."]
    if todos:
        head.append(f"# {len(todos)} TODO rule{'s' if len(todos) > 1 else ''} below: the spec does not plan until "
                    f"each is replaced by the rules it asks for (or deleted, with what it names dropped or ignored).")
    head += [f"# NOTE {n}" for n in al.notes]
    for path in shuffled:
        head.append(f"# NOTE {os.path.basename(path)} is not in graph order (sorted by name, or a layer's tensors "
                    f"apart), so layers were matched by name or where shape and kind leave one choice")
    check = dict(doc)
    relax = (["missing-target"] if open_targets else []) + (["unused-source"] if unused else [])
    if relax:
        check["relax"] = relax
    check["rules"] = rules
    names = set(src_names)
    todo_rules = [{"name": t, "from": _nowhere(f"TODO: {key}", names), "drop": True} for key, t in todos]

    def dump(d, flow=None, width=120) -> str:
        return yaml.dump(d, Dumper=SpecDumper, sort_keys=False, default_flow_style=flow, width=width,
                         allow_unicode=True)

    body = dump(doc) + ("rules:\n" + (dump(todo_rules, False, 1 << 16) if todo_rules else "")
                        + (dump(rules) if rules else "") if rules or todo_rules else "rules: []\n")
    text = "\n".join(head) + "\n" + body
    return Draft(text, len(total), len(total) - len(open_targets), open_targets, unused, shuffled,
                 template_dir=os.path.dirname(os.path.abspath(template)), todos=[t for _, t in todos],
                 check_text=dump(check))


def _nowhere(text: str, names: set) -> str:
    """A literal pattern (no placeholders) that matches no source name."""
    text = text.replace("<", "(").replace(">", ")")
    while text in names:
        text = "TODO " + text
    return text


def rotary_heads(*paths: str) -> Optional[dict]:
    """The attention head counts from a model config beside either file (Meta's params.json, Hugging Face's
    config.json): ``{"q": heads, "k": key/value heads, "file": name}``, or None."""
    import json

    from .names import ROTARY

    for path in paths:
        for _, filename, (kq, kk) in ROTARY.values():
            cfg = os.path.join(os.path.dirname(os.path.abspath(path)), filename)
            if not os.path.isfile(cfg) or os.path.getsize(cfg) > 1 << 20:
                continue
            try:
                with open(cfg, encoding="utf-8") as f:
                    doc = json.load(f)
            except (OSError, ValueError):
                continue
            q = doc.get(kq) if isinstance(doc, dict) else None
            k = doc.get(kk, q) if isinstance(doc, dict) else None
            k = q if k is None else k
            if all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in (q, k)):
                return {"q": q, "k": k, "file": filename}
    return None


def _collect_refs(obj, names: set, out: set) -> None:
    if isinstance(obj, str):
        if obj in names:
            out.add(obj)
    elif isinstance(obj, list):
        for v in obj:
            _collect_refs(v, names, out)
    elif isinstance(obj, dict):
        for v in obj.values():
            _collect_refs(v, names, out)


def write(d: Draft, output: Optional[str], source: str, source_format: Optional[str] = None,
          force: bool = False, sync: bool = True) -> None:
    """Validate the draft and plan its drafted rules on ``source``, then write it atomically (``output``; None:
    only check).  A draft whose rules do not plan is not written: the plan's errors are raised.  A draft with
    TODO rules is written and does not plan until they are resolved."""
    import tempfile

    from ..engine import plan
    from ..errors import ErrorList, MapspecError
    from ..files import atomic_output
    from ..language.load import check_spec

    def checked(path: str) -> None:
        # the drafted rules must plan (what is open relaxed); the draft itself, TODO rules and all, must validate
        for text, must_plan in ((d.check_text, True), (d.text, not d.todos)):
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            # the spec names the template the user gave, wherever it lies (spec paths are confined otherwise)
            spec, errors = check_spec(path, allow_paths=[d.template_dir] if d.template_dir else ())
            if errors:  # a bug of draft, never the user's: say so plainly
                raise MapspecError("draft wrote a spec that does not validate: " + "; ".join(map(str, errors[:3])))
            if not must_plan:
                continue
            p = plan(spec, source, source_format=source_format)
            p.source.close()
            if p.template is not None:
                p.template.close()
            if not p.ok:
                raise ErrorList([MapspecError(f"the draft does not plan on {source}; nothing written")]
                                + [single for e in p.errors for single in e.errors])

    if output is None:
        with tempfile.TemporaryDirectory() as tmp:
            checked(os.path.join(tmp, "draft.yaml"))
    else:
        with atomic_output(output, force=force, sync=sync) as tmp:
            checked(tmp)
