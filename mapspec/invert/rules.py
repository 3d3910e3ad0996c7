"""The rule walk: each forward rule reversed (targets as patterns, the transforms' inverses in reverse
order, ``each`` and stacking undone, drops and lossy steps refused or listed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..errors import MapspecError
from ..language import expr as E, sections
from ..language.expr import ExprError, Template
from ..language.model import Rule, Spec
from ..language.pattern import AmbiguousMatch, Pattern
from ..language.args import Ref
from ..transforms.inverse import Inverse, InverseContext, Lossy, NotInvertible, same_axis
from .names import (_matches, _uses, capture_kinds, chosen_options, pattern_template, rewrite, template_pattern,
                    template_text)


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
    from ..engine import _each_envs

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
