"""``mapspec invert``: the reverse of a spec, built from each transform's declared inverse.

A forward rule ``from: P, to: T, apply: [t1, ..., tn]`` becomes ``from: T', to: P', apply:
[inv(tn), ..., inv(t1)]`` where

* ``T'`` is the target template read as a pattern: a hole ``{x}`` becomes the placeholder
  ``<x>`` (of the capture's kind), a hole linear in one capture (``{b-1}``, ``{2*i+1}``)
  a fresh integer placeholder ``<_b>`` with ``b`` solved (``_b+1``) wherever it is used;
  holes of vars only become their literal value;
* ``P'`` is the source pattern written as a template with those solutions;
* ``inv(t)`` comes from the transform module itself (``inverse=`` beside its kernel, see
  :mod:`mapspec.transforms.registry`); a transform that keeps one part (``split``) under an
  ``each`` is undone by concatenating every part, the others dropped as rules of their own.

What cannot be undone is never guessed: a transform that loses information (``fold_bn``,
``fill``, a narrowing cast, rounding arithmetic) or a ``drop``/``ignore`` makes invert fail
naming the rule and why, unless ``lossy`` is set, in which case the rule is left out and
listed as missing from the reverse output.  Facts only a file can tell (the shape before a
reshape, the dtype before a cast, a source attribute) come from planning the forward spec
on ``source``.  An ``optional`` rule whose reverse names overlap another rule's (an
alternative source layout the forward accepts) is left out with a note: the reverse writes
the layout of the other rule.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np
import yaml

from . import dtypes, inverse_tables
from .errors import ErrorList, MapspecError, SpecError
from .spec import expr as E, sections
from .spec.expr import ExprError, Template
from .spec.model import Rule, Spec
from .spec.pattern import AmbiguousMatch, Choice, Pattern, Placeholder
from .spec.args import Ref
from .transforms.inverse import Inverse, InverseContext, Lossy, NotInvertible, same_axis


class SpecDumper(yaml.SafeDumper):
    """YAML for a spec a person reads: no anchors and aliases for values that happen to be shared."""

    def ignore_aliases(self, data) -> bool:
        return True


# -- expressions -----------------------------------------------------------------------

def unparse(n) -> str:
    def wrap(m) -> str:
        return f"({unparse(m)})" if isinstance(m, (E.BinOp, E.Neg)) else unparse(m)

    if isinstance(n, E.Num):
        return str(n.value)
    if isinstance(n, E.Str):
        return f'"{n.value}"' if "'" in n.value else f"'{n.value}'"
    if isinstance(n, E.Name):
        return n.name
    if isinstance(n, E.Neg):
        return f"-{wrap(n.operand)}"
    if isinstance(n, E.BinOp):
        return f"{wrap(n.left)}{n.op}{wrap(n.right)}"
    if isinstance(n, E.Index):
        return f"{unparse(n.target)}[{unparse(n.index)}]"
    raise NotInvertible(f"{getattr(n, 'func', '?')}() is about the tensor the rule matched, which in the reverse is "
                        f"another one")


def substitute(n, mapping: dict):
    """``n`` with names replaced; integer arithmetic on constants folded (``1+1`` -> ``2``)."""
    if isinstance(n, E.Name):
        return mapping.get(n.name, n)
    if isinstance(n, E.Neg):
        inner = substitute(n.operand, mapping)
        return E.Num(-inner.value) if isinstance(inner, E.Num) and inner.value <= 0 else E.Neg(inner)
    if isinstance(n, E.BinOp):
        left, right = substitute(n.left, mapping), substitute(n.right, mapping)
        if isinstance(left, E.Num) and isinstance(right, E.Num):
            v = E.evaluate(E.BinOp(n.op, left, right, 0), {})
            if v >= 0:
                return E.Num(v)
        return E.BinOp(n.op, left, right, n.column)
    if isinstance(n, E.Index):
        return E.Index(substitute(n.target, mapping), substitute(n.index, mapping), n.column)
    return n


def _free(n) -> set:
    return {name for name, _ in E.names(n)}


def linear(n, x: str):
    """``(a, r)`` with ``n == a*x + r`` (``r`` free of ``x``), or None."""
    if x not in _free(n):
        return 0, n
    if isinstance(n, E.Name):
        return 1, E.Num(0)
    if isinstance(n, E.Neg):
        inner = linear(n.operand, x)
        return None if inner is None else (-inner[0], E.Neg(inner[1]))
    if isinstance(n, E.BinOp) and n.op in "+-":
        left, right = linear(n.left, x), linear(n.right, x)
        if left is None or right is None:
            return None
        a = left[0] + right[0] if n.op == "+" else left[0] - right[0]
        return a, E.BinOp(n.op, left[1], right[1], 0)
    if isinstance(n, E.BinOp) and n.op == "*":
        for const, other in ((n.left, n.right), (n.right, n.left)):
            if isinstance(const, E.Num):
                inner = linear(other, x)
                if inner is None:
                    return None
                return const.value * inner[0], E.BinOp("*", const, inner[1], 0)
    return None


def _solve(a: int, r, ph: str):
    """x from ``a*x + r == ph``."""
    c = E.Name(ph, 0)
    if not _free(r):
        v = E.evaluate(r, {})
        diff = c if v == 0 else E.BinOp("-" if v > 0 else "+", c, E.Num(abs(v)), 0)
    else:
        diff = E.BinOp("-", c, r, 0)
    if a == 1:
        return diff
    if a == -1:
        return E.Neg(diff)
    return E.BinOp("//", diff, E.Num(a), 0) if a > 0 else E.BinOp("//", E.Neg(diff), E.Num(-a), 0)


def template_text(t: Template, mapping: dict) -> str:
    """``t`` written back as template text with names replaced by expressions."""
    out = []
    for p in t.parts:
        if isinstance(p, str):
            out.append(p.replace("{", "{{").replace("}", "}}"))
        else:
            node = substitute(p[0], mapping)
            if isinstance(node, (E.Num, E.Str)):  # a known value: written as text
                out.append(str(node.value).replace("{", "{{").replace("}", "}}"))
            else:
                out.append("{" + unparse(node) + "}")
    return "".join(out)


def pattern_template(p: Pattern, mapping: dict, notes: Optional[list] = None, chosen: Optional[dict] = None) -> str:
    """A forward ``from`` pattern as the reverse's ``to`` template.  An alternative the pattern does not
    capture (``<?transformer.>``) is written as the option every source name took (``chosen``: token
    index -> option, from planning the forward on a source file), else as its first option (said in
    ``notes``)."""
    out = []
    for k, tok in enumerate(p.tokens):
        value = mapping.get(tok.name) if isinstance(tok, (Placeholder, Choice)) and tok.name else None
        if isinstance(value, (E.Num, E.Str)):  # one value in every source name: written as text
            out.append(str(value.value).replace("{", "{{").replace("}", "}}"))
        elif isinstance(tok, Placeholder) or (isinstance(tok, Choice) and tok.name):
            out.append("{" + unparse(mapping.get(tok.name, E.Name(tok.name, 0))) + "}")
        elif isinstance(tok, Choice) and chosen and k in chosen:
            out.append(chosen[k].replace("{", "{{").replace("}", "}}"))
        elif isinstance(tok, Choice):
            first = tok.options[0]
            if notes is not None:
                notes.append(f"'{p.text}' accepts {' or '.join(repr(o) for o in tok.options)} there: the reverse "
                             f"writes {first!r}")
            out.append(first.replace("{", "{{").replace("}", "}}"))
        else:
            out.append(tok.replace("{", "{{").replace("}", "}}"))
    return "".join(out)


def template_pattern(t: Template, kinds: dict, fixed: dict) -> tuple[str, dict]:
    """A forward ``to`` template as the reverse's ``from`` pattern.

    ``kinds``: the forward captures (name -> int/word/path), to be recovered; ``fixed``: names
    with known values (vars, the each values of this output).  Returns the pattern text and
    the solutions: capture -> expression over the pattern's placeholders.
    """
    holes = [(i, p[0]) for i, p in enumerate(t.parts) if not isinstance(p, str)]
    literal: dict[int, str] = {}
    solved: dict[str, object] = {}
    placed: dict[int, str] = {}  # part index -> placeholder text
    seen: dict[str, str] = {}  # unparsed hole -> placeholder text
    for i, node in holes:
        if not _free(node) & set(kinds):
            try:
                v = E.evaluate(node, fixed)
            except ExprError as e:
                raise NotInvertible(f"'to' hole {{{unparse(node)}}}: {e}") from None
            literal[i] = str(v)
    progress = True
    while progress:
        progress = False
        for i, node in holes:
            if i in literal or i in placed:
                continue
            key = unparse(node)
            unknown = sorted(n for n in _free(node) if n in kinds and n not in solved)
            if not unknown:
                if key in seen:
                    placed[i] = seen[key]
                    progress = True
                elif isinstance(node, E.Name) and node.name in kinds:
                    placed[i] = seen[key] = _ph(node.name, kinds[node.name])
                    progress = True
                continue
            if len(unknown) != 1:
                continue
            x = unknown[0]
            if isinstance(node, E.Name):
                solved[x] = E.Name(x, 0)
                placed[i] = seen[key] = _ph(x, kinds[x])
                progress = True
                continue
            table = inverse_tables.lookup(node, x, fixed)
            if table is not None:  # {table[x]}: read back through the inverse table, if it is one-to-one
                name = _fresh(x, kinds)
                try:
                    placed[i] = seen[key] = inverse_tables.placeholder(name, inverse_tables.inverse(
                        table, fixed[table], fixed))
                except inverse_tables.TableError as e:
                    raise NotInvertible(f"the target name's {{{key}}} cannot be solved for {x}: {e}") from None
                solved[x], progress = inverse_tables.solution(table, name), True
                continue
            lin = linear(node, x)
            if lin is None or lin[0] == 0 or kinds[x] != "int":
                continue
            name = _fresh(x, kinds)
            solved[x] = _solve(lin[0], substitute(lin[1], solved), name)
            placed[i] = seen[key] = f"<{name}>"
            progress = True
    for i, node in holes:
        if i not in literal and i not in placed:
            raise NotInvertible(f"the target name's {{{unparse(node)}}} cannot be solved for "
                                f"{', '.join(sorted(_free(node) & set(kinds)))} (only sums and multiples of one "
                                f"capture can)")
    missing = sorted(set(kinds) - set(solved))
    if missing:
        raise NotInvertible(f"the target name {t.text!r} does not contain <{missing[0]}>: the reverse cannot tell "
                            f"which source tensor it came from")
    out = []
    for i, p in enumerate(t.parts):
        text = p if isinstance(p, str) else literal.get(i) or placed[i]
        if isinstance(p, str) or i in literal:
            if "<" in text or ">" in text:
                raise NotInvertible(f"the target name {t.text!r} contains '<' or '>', which a pattern cannot hold")
        out.append(text)
    return "".join(out), solved


def _fresh(x: str, kinds: dict) -> str:
    name = f"_{x}"
    while name in kinds:
        name = f"_{name}"
    return name


def _token_text(tok) -> str:
    if isinstance(tok, str):
        return tok
    if isinstance(tok, Placeholder):
        return _ph(tok.name, tok.kind)
    if tok.name:
        return f"<{tok.name}:{'|'.join(tok.options)}>"
    if len(tok.options) == 2 and tok.options[1] == "":
        return f"<?{tok.options[0]}>"
    return f"<{'|'.join(tok.options)}>"


def chosen_options(p: Pattern, names: list) -> dict:
    """Token index -> option, for each alternative ``p`` does not capture that every one of ``names`` matched
    with the same option (``<?transformer.>``: whether the source's names had the prefix)."""
    out = {}
    for k, tok in enumerate(p.tokens):
        if not (isinstance(tok, Choice) and not tok.name) or not names:
            continue
        fits = []
        for option in tok.options:
            fixed = Pattern("".join(option if j == k else _token_text(t) for j, t in enumerate(p.tokens)))
            if all(_matches(fixed, n) for n in names):
                fits.append(option)
        if len(fits) == 1:
            out[k] = fits[0]
    return out


def _ph(name: str, kind) -> str:
    if isinstance(kind, tuple):  # a captured alternative: the same alternatives in the reverse
        return f"<{name}:{'|'.join(kind)}>"
    return f"<{name}>" if kind == "int" else f"<{name}:{kind}>"


def capture_kinds(p: Pattern) -> dict:
    """Capture name -> ``int``/``word``/``path``, or the tuple of options of a captured alternative."""
    kinds = dict(p.captures)
    for tok in p.tokens:
        if isinstance(tok, Choice) and tok.name:
            kinds[tok.name] = tuple(tok.options)
    return kinds


def rewrite(value, mapping: dict):
    """Templates inside raw transform arguments, with names replaced."""
    if isinstance(value, str) and "{" in value:
        return template_text(Template(value), mapping)
    if isinstance(value, list):
        return [rewrite(v, mapping) for v in value]
    if isinstance(value, dict):
        return {k: rewrite(v, mapping) for k, v in value.items()}
    return value


def _uses(value, names: set) -> bool:
    if isinstance(value, str) and "{" in value:
        return bool({n for n, _ in Template(value).names()} & names)
    if isinstance(value, list):
        return any(_uses(v, names) for v in value)
    if isinstance(value, dict):
        return any(_uses(v, names) for v in value.values())
    return False


# -- rules -----------------------------------------------------------------------------

@dataclass
class Reverse:
    """The result: the reverse spec's text and what invert had to say about it."""

    text: str
    rules: int
    notes: list = field(default_factory=list)
    missing: list = field(default_factory=list)  # with lossy: what the reverse output will not have
    inexact: list = field(default_factory=list)  # with lossy: rules whose reverse values are close, not equal


@dataclass
class _Out:
    rule: dict
    pattern: Pattern
    optional: bool
    origin: str


_ORDER_KEEPING = {"reshape", "squeeze", "unsqueeze"}  # keep the elements' C order: undone by one reshape


def _each_values(rule: Rule, vars_: dict) -> list[dict]:
    from .engine import _each_envs

    def fail(msg, loc):
        return NotInvertible(f"each: {msg}")

    return [{k: v for k, v in env.items() if k in rule.each} for env in _each_envs(rule, dict(vars_), fail)]


class _Inverter:
    def __init__(self, spec: Spec, steps: Optional[dict], lossy: bool = False):
        self.spec = spec
        self.steps = steps  # (id(rule), call index) -> [(in_meta, out_meta, bound args)], or None
        self.lossy = lossy
        self.notes: list[str] = []
        self.inexact: dict = {}  # with lossy: rule -> why its reverse gives values close to, not equal to, the source
        self.alternatives: list = []  # alternatives of source patterns the reverse writes one way

    def each_values(self, rule: Rule) -> list[dict]:
        """The values of the rule's ``each``; a range read from the data (``{shape()[0]}``) from planning the
        forward on a source file, where every tensor the rule matched gave the same values."""
        try:
            return _each_values(rule, self.spec.vars)
        except NotInvertible as e:
            per_source = self.steps.get(("envs", id(rule))) if self.steps is not None else None
            if not per_source:
                raise NotInvertible(f"{e} (give invert --source FILE)") from None
            values = list(per_source.values())
            if any(v != values[0] for v in values[1:]):
                raise NotInvertible(f"{e}: the source's tensors give different values, so one reverse rule "
                                    f"cannot undo them") from None
            return values[0]

    def drops(self, rule: Rule, kinds: dict, optional: bool) -> list[_Out]:
        out = []
        for env in self.each_values(rule):
            text, _ = template_pattern(rule.to, kinds, {**self.spec.vars, **env})
            origin = rule.parent.label if rule.parent is not None else rule.label  # also: its rule's label
            out.append(_Out({"from": text, "drop": True, **({"optional": True} if optional else {})},
                            Pattern(text), optional, origin))
        return out

    def targets(self, rule: Rule) -> list[str]:
        """Patterns of what a left-out rule wrote (its main and also outputs), where they can be written."""
        out = []
        for r in [rule] + list(rule.also):
            if r.drop:
                continue
            try:
                constant = self.constant_captures(rule) if rule.source is not None else {}
                kinds = {k: v for k, v in capture_kinds(rule.source).items() if k not in constant} \
                    if rule.source is not None else {}
                out += [t for t in (template_pattern(r.to, kinds, {**self.spec.vars, **env})[0]
                                    for env in self.each_values(r)) if t not in out]
            except NotInvertible:
                continue
        return out

    def inverses(self, rule: Rule, skip: frozenset = frozenset()) -> list[Inverse]:
        """Each transform's declared inverse, in forward order (approximate ones only with lossy); calls in
        ``skip`` are undone otherwise by the caller."""
        invs = []
        for i, call in enumerate(rule.calls):
            if i in skip:
                invs.append(Inverse([]))
                continue
            if call.tdef.inverse is None:
                raise NotInvertible(f"transform {call.name!r} declares no inverse")
            steps = self.steps.get((id(rule), i)) if self.steps is not None else None
            try:
                invs.append(call.tdef.inverse(InverseContext(call.name, dict(call.args), steps)))
            except Lossy as e:
                if e.ref is not None:
                    raw = call.args.get(e.ref)
                    optional = isinstance(raw, dict) and bool(raw.get("optional"))
                    raw = raw.get("ref") if isinstance(raw, dict) else raw  # {ref: NAME, optional: true}
                    there = self.surviving(rule, raw) if isinstance(raw, str) and e.approx is not None else None
                    if there is None:
                        raise Lossy(self.fate(raw, steps, call.tdef.name)) from None
                    name, args = e.approx.calls[0]
                    # optional stays optional: where the forward's source lacked it, the reverse's lacks it too
                    e = Lossy(f"{call.tdef.name} by the tensor {raw!r}, which reaches the target unchanged as "
                              f"{there!r}: {name} by it there may round: not bit-exact",
                              approx=Inverse([(name, {**args, e.ref: {"ref": there, "optional": True} if optional
                                                      else there})], axis=same_axis))
                if not (self.lossy and e.approx is not None):
                    raise e from None
                invs.append(e.approx)
                self.inexact.setdefault(rule.label, []).append(str(e))
        return invs

    def restack(self, rule: Rule, kinds: dict, envs: list) -> Optional[list]:
        """``take: ["{e}"]`` then ``squeeze`` of that axis under ``each: e`` over the whole axis (one output per
        slice of a stacked tensor: Mixtral's fused experts) is undone by ``stack: {over: e}`` of the outputs,
        the rest of the chain reversed per output; ``also`` outputs that slice the rest of an axis the main
        output slices (w1 and w3 from one gate_up block) are joined back by a concat.  None: not this shape."""
        calls = rule.calls
        if len(rule.each) != 1 or len(calls) < 2 or calls[0].name != "take" or calls[1].name != "squeeze":
            return None
        e = next(iter(rule.each))
        axis = calls[0].args.get("axis", 0)
        if calls[0].args.get("indices") != ["{" + e + "}"] or not isinstance(axis, int) or \
                calls[1].args.get("axes") not in ([axis], axis):
            return None
        steps = self.steps.get((id(rule), 0)) if self.steps is not None else None
        sizes = {tuple(st[0].shape)[axis] for st in steps or []}
        if len(sizes) != 1:
            raise NotInvertible(f"take under each {e}: the reverse needs the size of the axis taken from, which "
                                f"only a source file can tell (give invert --source FILE)")
        if sorted(env[e] for env in envs) != list(range(sizes.pop())):
            raise Lossy(f"take under each {e} does not take every entry of axis {axis} once")
        ekinds = {**kinds, e: "int"}
        from_text, solved = template_pattern(rule.to, ekinds, dict(self.spec.vars))
        pieces = self.pieces(rule, solved) if rule.also else None
        if rule.also and pieces is None:
            return None
        chain: list = []
        invs = self.inverses(rule, skip={0, 1} | ({len(calls) - 1} if pieces else set()))
        if pieces:
            chain.append({"concat": pieces})
        for k in reversed(range(2, len(calls) - (1 if pieces else 0))):
            if invs[k].gather or invs[k].parts:
                raise NotInvertible(f"{calls[k].name} after a take under each: not reversed")
            chain += [{name: rewrite(args, solved)} for name, args in invs[k].calls]
        out_rule = {"from": from_text, "to": pattern_template(rule.source, solved, self.alternatives,
                                                              chosen_options(rule.source, self.steps.get(
                                                                  ("sources", id(rule)), []))),
                    "stack": {"over": e, "axis": axis}}
        if chain:
            out_rule["apply"] = chain
        if rule.optional:
            out_rule["optional"] = True
        return [_Out(out_rule, Pattern(from_text), rule.optional, rule.label)]

    def pieces(self, rule: Rule, solved: dict) -> Optional[dict]:
        """The concat arguments joining a rule's ``also`` outputs back to its own, where each ends with a
        slice of one axis after the same transforms and the slices cover that axis once; else None."""
        last = len(rule.calls) - 1
        spans = []
        for r in [rule] + list(rule.also):
            if len(r.calls) != len(rule.calls) or r.calls[last].name != "slice" or \
                    any((a.name, a.args) != (b.name, b.args) for a, b in zip(r.calls[:last], rule.calls[:last])):
                return None
            steps = self.steps.get((id(r), last)) if self.steps is not None else None
            bounds = set()
            for st in steps or []:
                b = st[2]
                ax = b.get("axis", 0) % len(st[0].shape)
                start, stop, step = slice(b.get("start"), b.get("stop"), b.get("step", 1)).indices(st[0].shape[ax])
                bounds.add((ax, start, stop, step, st[0].shape[ax]))
            if len(bounds) != 1:
                return None
            spans.append((bounds.pop(), r))
        axes = {(ax, size) for (ax, _, _, step, size), _ in spans if step == 1}
        if len(axes) != 1 or len(spans) != len(rule.also) + 1:
            return None
        spans.sort(key=lambda x: x[0][1])
        edge = 0
        for (ax, start, stop, _, size), _ in spans:
            if start != edge:
                return None
            edge = stop
        if edge != next(iter(axes))[1]:
            return None
        names = [(start, template_text(r.to, solved)) for (_, start, _, _, _), r in spans if r is not rule]
        own = next(start for (_, start, _, _, _), r in spans if r is rule)
        args: dict = {"axis": next(iter(axes))[0]}
        if [n for s_, n in names if s_ < own]:
            args["before"] = [n for s_, n in names if s_ < own]
        if [n for s_, n in names if s_ > own]:
            args["after"] = [n for s_, n in names if s_ > own]
        return args

    def constant_captures(self, rule: Rule) -> dict:
        """Captures the target names do not contain but that had one value in every source name the rule
        matched (``conv5<t:path>blk`` -> ``features.norm5``): known from planning on a source file."""
        used = {n for r in [rule] + list(rule.also) if r.to is not None for n, _ in r.to.names()}
        names = self.steps.get(("sources", id(rule)), []) if self.steps is not None else []
        values: dict = {}
        for n in names:
            for k, v in (rule.source.match(n) or {}).items():
                values.setdefault(k, set()).add(v)
        return {k: E.Num(v.copy().pop()) if isinstance(next(iter(v)), int) else E.Str(v.copy().pop())
                for k, v in values.items() if k not in used and len(v) == 1}

    def surviving(self, rule: Rule, raw: str) -> Optional[str]:
        """Where a tensor the rule computes with (``raw``, a template over the rule's captures) reaches the target
        unchanged: the target name as a template over the same captures, or None.  Found by rendering ``raw``
        with a marker value per capture and following the first forward rule that matches it."""
        marks: dict = {}
        for n, (cap, kind) in enumerate(capture_kinds(rule.source).items()):
            if isinstance(kind, tuple):
                return None  # an alternative has no marker value
            marks[cap] = 7_300_001 + 7919 * n if kind == "int" else f"zq{n}qz"
        try:
            name = Template(raw).render({**self.spec.vars, **marks})
        except (ExprError, MapspecError):
            return None
        for r in self.spec.rules:
            if r.source is None or not _matches(r.source, name):
                continue
            if r.drop or r.calls or r.each or getattr(r, "stack", None) or r.is_constant:
                return None
            if self.steps is not None and ("sources", id(r)) not in self.steps:
                return None
            try:
                target = r.to.render({**self.spec.vars, **(r.source.match(name) or {})})
            except (ExprError, MapspecError, AmbiguousMatch):
                return None
            out = target.replace("{", "{{").replace("}", "}}")
            for cap, v in marks.items():
                out = out.replace(str(v), "{" + cap + "}")
            try:
                if Template(out).render({**self.spec.vars, **marks}) != target:
                    return None
            except (ExprError, MapspecError):
                return None
            return out
        return None

    def fate(self, raw, steps: Optional[list], op: str) -> str:
        """Why arithmetic by a referenced tensor cannot be undone: what the forward does with that tensor."""
        undo = {"mul": "divide", "div": "multiply", "add": "subtract", "sub": "add"}.get(op, "undo it")
        head = f"{op} by the tensor {raw!r}"
        refs = sorted({s[2]["by"].name for s in steps or [] if isinstance(s[2].get("by"), Ref)})
        if not refs:
            hint = " (give invert --source FILE to see what the forward does with it)" if self.steps is None else ""
            return f"{head}: the reverse would need that tensor, unchanged, in the target to {undo} by{hint}"
        name = refs[0]
        head += f" (e.g. {name!r})" if name != raw else ""
        if name in self.steps["ignored"]:
            return f"{head}, which the forward ignores: it does not survive the trip, so the " \
                   f"reverse has nothing to {undo} by"
        for r in self.spec.rules:
            if name in self.steps.get(("sources", id(r)), ()):
                if r.drop:
                    what = f"which {r.label} drops"
                elif r.calls:
                    what = f"which {r.label} changes ({', '.join(c.name for c in r.calls)})"
                else:
                    return (f"{head}, which {r.label} writes unchanged: invert does not yet "
                            f"read a reference from the target, so the reverse cannot {undo} by it")
                return f"{head}, {what}: it does not survive the trip, so the reverse has " \
                       f"nothing to {undo} by"
        dropper = next((r for r in self.spec.rules if r.drop and r.source is not None and _matches(r.source, name)),
                       None)
        if dropper is not None:
            return f"{head}, which {dropper.label} drops: it does not survive the trip, so the reverse has nothing " \
                   f"to {undo} by"
        return f"{head}, which no rule writes into the target: the reverse has nothing to {undo} by"

    def gather(self, rule: Rule, invs: list, envs: list, solved: dict, k: int) -> tuple[list, bool]:
        """The concat that joins the parts a split (or a one-index take) under ``each`` made (call ``k``):
        ``(calls, flat)``.  The parts' axis is followed through the transforms after it; where those only
        reshape (``flat``: their inverses are not needed), the parts are joined on their first axis and
        reshaped, with the parts' axis moved back, to the input of call ``k``."""
        g = invs[k].gather
        takes = []
        for env in envs:
            raw = g["take"]
            try:
                takes.append(Template(raw).value({**self.spec.vars, **env}) if isinstance(raw, str) else raw)
            except ExprError as e:
                raise NotInvertible(f"{rule.calls[k].name} take: {e}") from None
        if sorted(takes) != list(range(g["parts"])):
            raise Lossy(f"{rule.calls[k].name} into {g['parts']} parts keeps only part(s) {sorted(set(takes))}"
                        + (" (the rule's each must take every part)" if not rule.each else ""))
        axis, flat = g["axis"], False
        for j in range(k + 1, len(invs)):
            if _uses(rule.calls[j].args, set(rule.each)):
                raise NotInvertible(f"{rule.calls[j].name} after the {rule.calls[k].name} differs between the parts")
            axis = invs[j].axis(axis) if invs[j].axis is not None and axis is not None else None
            if axis is None:
                flat = all(c.name in _ORDER_KEEPING for c in rule.calls[k + 1:])
                if not flat:
                    raise NotInvertible(f"{rule.calls[k].name} followed by {rule.calls[j].name}: the reverse cannot "
                                        f"tell which axis to join the parts on")
                axis = 0
                break
        names = [template_text(rule.to, {**solved, **{v: E.Num(x) if isinstance(x, int) else E.Str(x)
                                                      for v, x in env.items()}}) for env in envs]
        ordered = sorted(zip(takes, names))
        args = {"axis": axis}
        before = [n for t, n in ordered if t < takes[0]]
        after = [n for t, n in ordered if t > takes[0]]
        if before:
            args["before"] = before
        if after:
            args["after"] = after
        if not flat:
            return [{"concat": args}], False
        steps = self.steps.get((id(rule), k)) if self.steps is not None else None
        shapes = {(tuple(s[0].shape), tuple(s[1].shape)) for s in steps or []}
        if len(shapes) != 1:
            raise NotInvertible(f"{rule.calls[k].name}: the reverse needs the one shape before and after it, which "
                                f"only a source file can tell (give invert --source FILE)" if not shapes else
                                f"{rule.calls[k].name}: its inputs have different shapes ({sorted(shapes)[:2]})")
        before_k, after_k = (list(x) for x in shapes.pop())
        a = g["axis"]
        calls = [{"concat": args}, {"reshape": [g["parts"]] + after_k}]
        if a:
            calls.append({"transpose": list(range(1, a + 1)) + [0] + list(range(a + 1, len(after_k) + 1))})
        return calls + [{"reshape": before_k}], True

    def unstack(self, rule: Rule) -> tuple[dict, str]:
        """The reverse of ``stack: {over: e, axis: a}``: one output per e = 0..N-1 (N from the source's plan),
        each taking its slice of the stacked tensor: ``({"each": ..., "apply": [...]}, e)``."""
        over, axis = rule.stack["over"], rule.stack.get("axis", 0)
        counts = self.steps.get(("stack", id(rule))) if self.steps is not None else None
        if not counts:
            raise NotInvertible(f"stack: the reverse needs how many <{over}> were stacked, which only a source file "
                                f"can tell (give invert --source FILE)")
        if len(counts) != 1:
            raise NotInvertible(f"stack: different numbers of <{over}> were stacked ({sorted(counts)})")
        return {"each": {over: {"range": [0, next(iter(counts))]}},
                "apply": [{"take": {"indices": ["{" + over + "}"], "axis": axis}}, {"squeeze": [axis]}]}, over

    def rule(self, rule: Rule) -> list[_Out]:
        if rule.is_constant:  # computed from vars (where they say so): nothing to restore
            self.notes += [sections.computed_note(rule)] if rule.generate or rule.when_vars else []
            return self.drops(rule, {}, rule.optional or bool(rule.generate or rule.when_vars))
        if rule.drop:
            names = (self.steps or {}).get(("sources", id(rule)), [])
            which = f": {', '.join(map(repr, names[:3]))}{', ...' if len(names) > 3 else ''}" if names else ""
            what = f"the source tensor {rule.source_text!r}" if names == [rule.source_text] else \
                f"the source tensors matching {rule.source_text!r}{which}"
            raise Lossy(f"the forward drops {what}")
        kinds = capture_kinds(rule.source)
        envs = self.each_values(rule)
        restacked = self.restack(rule, kinds, envs)
        if restacked is not None:
            return restacked
        unstack, over = self.unstack(rule) if getattr(rule, "stack", None) else ({}, None)
        invs = self.inverses(rule)
        gathers = [i for i, inv in enumerate(invs) if inv.gather]
        if len(gathers) > 1:
            raise NotInvertible("more than one split in one rule")
        constant = self.constant_captures(rule)
        from_text, solved = template_pattern(rule.to, {k: v for k, v in kinds.items() if k != over and
                                                       k not in constant}, {**self.spec.vars, **envs[0]})
        solved.update(constant)
        others = envs[1:]
        split = gathers[0] if gathers else None
        if unstack and (gathers or others):
            raise NotInvertible("stack together with each: not reversed")
        chain, flat = self.gather(rule, invs, envs, solved, split) if gathers else (list(unstack.get("apply", [])),
                                                                                    False)
        if not gathers and others:
            if any(_uses(c.args, set(rule.each)) for c in rule.calls):
                raise NotInvertible("its each gives different outputs from one tensor; only a split into every "
                                    "part can be joined again")
            self.notes.append(f"{rule.label}: each makes {len(envs)} copies; the reverse reads the first")
        parts = []  # referenced tensors a concat joined in: outputs of their own in the reverse
        for k in reversed(range(len(invs))):
            if k == split or (flat and k > split):
                continue
            if invs[k].parts:
                if others:
                    raise NotInvertible("a concat under each: the parts would be written once per each value")
                p = invs[k].parts
                for raw, a, b in p["refs"]:
                    parts.append({"to": rewrite(raw, solved),
                                  "apply": list(chain) + [{"slice": {"start": a, "stop": b, "axis": p["axis"]}}]})
            chain += [{name: rewrite(args, solved)} for name, args in invs[k].calls]
        names = self.steps.get(("sources", id(rule)), []) if self.steps is not None else []
        out_rule = {"from": from_text, "to": pattern_template(rule.source, solved, self.alternatives,
                                                              chosen_options(rule.source, names))}
        if chain:
            out_rule["apply"] = chain
        if unstack:
            out_rule["each"] = unstack["each"]
            for item in parts:  # the parts a concat joined in were stacked too: one per stacked value
                item["each"] = unstack["each"]
        if parts:
            out_rule["also"] = parts
        if rule.optional:
            out_rule["optional"] = True
        outs = [_Out(out_rule, Pattern(from_text), rule.optional, rule.label)]
        for env in others:
            text, _ = template_pattern(rule.to, kinds, {**self.spec.vars, **env})
            outs.append(_Out({"from": text, "drop": True, **({"optional": True} if rule.optional else {})},
                             Pattern(text), rule.optional, rule.label))
        for extra in rule.also:  # more outputs from the same match: the main one restores the source
            outs += self.drops(extra, kinds, rule.optional)
        if rule.require or rule.absent or rule.when:
            self.notes.append(f"{rule.label}: its require/absent/when conditions are on source tensors and "
                              f"attributes; the reverse selects by target names only")
        return outs


# -- ordering --------------------------------------------------------------------------

_SAMPLES = {"int": ("0", "7", "12"), "word": ("a", "x_1", "B2"), "path": ("a", "p.q/r[1]", "x_1")}


def _samples(p: Pattern) -> list[str]:
    def one(t, k: int) -> str:
        if isinstance(t, str):
            return t
        if isinstance(t, Choice):
            return t.options[k % len(t.options)]
        return _SAMPLES.get(t.kind, _SAMPLES["word"])[k]
    return ["".join(one(t, k) for t in p.tokens) for k in range(3)]


def _matches(p: Pattern, name: str) -> bool:
    try:
        return p.match(name) is not None
    except AmbiguousMatch:
        return True


def _covers(b: Pattern, a: Pattern) -> bool:
    """Every sample of ``a`` is matched by ``b``."""
    return all(_matches(b, s) for s in _samples(a))


def _overlap(a: Pattern, b: Pattern) -> bool:
    return any(_matches(b, s) for s in _samples(a)) or any(_matches(a, s) for s in _samples(b))


def order(outs: list[_Out], notes: list[str]) -> list[_Out]:
    """First-match order for the reverse: a narrower pattern goes before a wider one; optional
    alternatives that overlap a required rule are left out (the reverse writes one layout)."""
    required = [o for o in outs if not o.optional]
    kept = []
    for o in outs:
        clash = next((r for r in required if r is not o and _overlap(o.pattern, r.pattern)), None) \
            if o.optional else None
        if clash is not None:
            note = (f"{o.origin}: an optional alternative; its reverse names overlap those of {clash.origin}, "
                    f"so the reverse writes that layout instead")
            if note not in notes:
                notes[:] = [n for n in notes if not n.startswith(f"{o.origin}: its require")] + [note]
            continue
        kept.append(o)
    placed: list[_Out] = []
    for o in kept:
        pos = len(placed)
        for j, other in enumerate(placed):
            if _covers(other.pattern, o.pattern) and not _covers(o.pattern, other.pattern):
                pos = j
                break
        placed.insert(pos, o)
    return placed


# -- the command -----------------------------------------------------------------------

def _planned_steps(spec: Spec, source, source_format: Optional[str], template) -> dict:
    from .engine import _IMPLICIT_CAST, plan
    from .spec.args import Ref

    p = plan(spec, source, template=template, source_format=source_format, no_tokenizer=True)  # tensors only
    try:
        if not p.ok:
            p.check()
        infos = p.source.infos()

        def meta_of(v):
            from .transforms import Meta

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
    from .engine import _as_spec, with_vars

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
    from .spec.config import with_config

    wanted = [k for k in (spec.config or {}).get("vars", {}) if k not in spec.vars]
    if not wanted:
        return spec
    if source is None:
        raise MapspecError(f"{spec.path}: the spec reads {', '.join(wanted)} from the model's config file; the "
                           f"reverse needs their values: give invert --source FILE (with its config file beside "
                           f"it) or --var {wanted[0]}=VALUE")
    return with_config(spec, source if isinstance(source, str) else source.path, None, given=set(given or ()))


def _version(spec: Spec):
    """The forward's spec language version (the reverse uses the same features)."""
    from .spec.yamlsafe import load_file

    try:
        v = load_file(spec.path).get("mapspec", 1)
    except MapspecError:
        return 1
    return v if v in (1, 1.1) else 1


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
    from .formats import atomic_output
    from .spec.load import check_spec

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
