"""Planning and applying a spec.

``plan`` works from metadata only (names, shapes, dtypes, layer attributes): it
matches every source tensor against the rules, binds each transform's arguments,
infers every output's shape and dtype through the transform chain, checks coverage
and the template, and collects every problem it finds.  ``apply`` then streams: for
each output, in output order, it reads the source tensor (a memory-mapped view where
the format allows), runs the transforms, hands the result to the streaming writer and
lets it go.  A tensor referenced by several rules (a Caffe BatchNorm factor blob) is
read once and kept only until its last use.  The output is written to a temporary
file beside the target and renamed into place only when everything succeeded.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

import numpy as np

from . import companions, coverage, dtypes, metadata, numeric, parallel, rawblocks, stacking
from .errors import ConversionError, CoverageError, ErrorList, Location, MapspecError, SpecError, escape
from .formats import Reader, TensorInfo, atomic_output, create_writer, module, open_checkpoint, output_format, sharded
from .formats import gguf_vocab
from .spec.args import Binder, Ref
from .spec import conditions
from .spec.config import with_config
from .spec.expr import SHAPE_OF, ExprError, Template
from .spec.load import MAX_EACH, load_spec
from .spec.model import Call, Rule, Spec
from .spec.pattern import AmbiguousMatch
from .transforms import TRANSFORMS, Meta, TransformError

MAX_LISTED = 20


@dataclass
class BoundCall:
    call: Call
    args: dict  # bound values; references as Ref, optional missing references as None
    label: str

    @property
    def refs(self) -> list[str]:
        out = []
        for v in self.args.values():
            if isinstance(v, Ref):
                out.append(v.name)
            elif isinstance(v, list):
                out += [r.name for r in v if isinstance(r, Ref)]
        return out


@dataclass
class Step:
    """One output tensor: where it comes from and what happens to it."""

    target: str
    rule: Rule
    source: Optional[str]
    calls: list
    in_meta: Meta
    out_meta: Meta
    env: dict = field(default_factory=dict)
    constant: Any = None
    meta: Optional[dict] = None  # the template's format-specific facts for this target
    parts: list = field(default_factory=list)  # stack: one Step per stacked match, in order
    stack_axis: int = 0
    peak: int = 0  # bytes of the largest array along the chain (input, intermediates, output)

    @property
    def refs(self) -> list[str]:
        return [r for p in self.parts for r in p.refs] + [r for c in self.calls for r in c.refs]

    @property
    def sources(self) -> list[str]:
        """The source tensors read for this output (several when it stacks matches)."""
        if self.parts:
            return [p.source for p in self.parts]
        return [self.source] if self.source is not None else []

    @property
    def transforms_text(self) -> str:
        return " | ".join(c.label for c in self.calls) or "-"


@dataclass
class Plan:
    spec: Spec
    source: Reader
    template: Optional[Reader]
    steps: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    unused: list = field(default_factory=list)
    ignored: list = field(default_factory=list)
    dropped: list = field(default_factory=list)
    dropped_by: dict = field(default_factory=dict)  # dropped source name -> the drop rule that matched it
    referenced: set = field(default_factory=set)
    unmatched_rules: list = field(default_factory=list)
    missing_targets: list = field(default_factory=list)
    unexpected_targets: list = field(default_factory=list)
    target_format: Optional[str] = None
    metadata: dict = field(default_factory=dict)  # target.metadata with its expressions evaluated
    no_tokenizer: bool = False  # --no-tokenizer: no tokenizer metadata / companion files

    @property
    def ok(self) -> bool:
        return not self.errors

    def check(self) -> "Plan":
        """Raise every error found while planning (one error, or an ErrorList)."""
        if self.errors:
            if len(self.errors) == 1:
                raise self.errors[0]
            raise ErrorList(self.errors)
        return self

    @property
    def verdict(self) -> str:
        if self.errors:
            return f"FAIL: {len(self.errors)} error{'s' if len(self.errors) > 1 else ''}"
        return "OK" + (f" ({len(self.warnings)} relaxed)" if self.warnings else "")

    def summary(self) -> dict:
        return {
            "outputs": len(self.steps),
            "source_tensors": len(self.source.infos()),
            "matched": sum(len(s.sources) for s in self.steps),
            "dropped": len(self.dropped),
            "referenced": len(self.referenced),
            "ignored": len(self.ignored),
            "unused": len(self.unused),
            "constants": sum(1 for s in self.steps if not s.sources),
            "output_bytes": sum(TensorInfo(s.target, s.out_meta.shape, s.out_meta.dtype).nbytes for s in self.steps),
        }

    def to_json(self) -> dict:
        return {
            "spec": self.spec.path,
            "source": self.source.path,
            "template": self.template.path if self.template else None,
            "verdict": self.verdict,
            "summary": self.summary(),
            "steps": [{
                "target": s.target, "source": s.source if not s.parts else s.sources, "rule": s.rule.index,
                "refs": s.refs,
                "transforms": [c.label for c in s.calls], "in_shape": list(s.in_meta.shape),
                "shape": list(s.out_meta.shape), "dtype": s.out_meta.dtype,
                **({"ggml_type": s.meta["ggml_type"], "ggml_shape": list(s.meta["shape"])}
                   if rawblocks.raw_type(s.out_meta.dtype, s.meta) else {}),
            } for s in self.steps],
            "errors": [str(e) for e in self.errors],
            "warnings": list(self.warnings),
        }


def _shape_text(shape) -> str:
    return "x".join(str(d) for d in shape) if len(shape) else "scalar"


MAX_SUGGESTIONS = 50  # findings of one plan that get "closest names" hints
MAX_SUGGEST = 2000  # names compared per suggestion (difflib is quadratic in the name length)
MAX_SUGGEST_LEN = 400  # longer texts are not compared at all


def _closest(text: str, names: list[str], n: int = 3, cutoff: float = 0.5) -> list[str]:
    """The names most similar to ``text`` (ties in name order), with bounded work: at most
    ``MAX_SUGGEST`` names of at most ``MAX_SUGGEST_LEN`` characters are compared (those sharing
    ``text``'s first characters first, then an even sample of the rest)."""
    if len(text) > MAX_SUGGEST_LEN:
        return []
    if len(names) > MAX_SUGGEST:
        head = text[:3]
        near = [x for x in names if x.startswith(head)] if head else []
        rest = names[::max(1, len(names) // MAX_SUGGEST)]
        names = list(dict.fromkeys(near[:MAX_SUGGEST // 2] + rest))[:MAX_SUGGEST]
    names = [x for x in names if len(x) <= MAX_SUGGEST_LEN]
    m = difflib.SequenceMatcher()
    m.set_seq2(text)
    scored = []
    for name in names:
        m.set_seq1(name)
        if m.real_quick_ratio() >= cutoff and m.quick_ratio() >= cutoff:
            r = m.ratio()
            if r >= cutoff:
                scored.append((-r, name))
    return [name for _, name in sorted(scored)[:n]]


def _listing(names: list[str], describe: Callable[[str], str]) -> str:
    shown = [f"  {escape(describe(n))}" for n in names[:MAX_LISTED]]
    if len(names) > MAX_LISTED:
        shown.append(f"  ... and {len(names) - MAX_LISTED} more")
    return "\n".join(shown)


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


class _Planner:
    def __init__(self, spec: Spec, source: Reader, template: Optional[Reader], target_format: Optional[str],
                 relax: set):
        self.spec = spec
        self.source = source
        self.template = template
        self.relax = set(spec.relax) | set(relax)
        self.plan = Plan(spec, source, template, target_format=target_format)
        self.infos = source.infos()
        self._attr_cache: dict[str, dict] = {}
        self._reported: set = set()
        self._suggestions = 0

    def attrs(self, node: str) -> dict:
        if node not in self._attr_cache:
            self._attr_cache[node] = self.source.attrs(node) or {}
        return self._attr_cache[node]

    def suggest(self, text: str, names: list) -> list:
        """Closest names for the first ``MAX_SUGGESTIONS`` findings of a plan (bounded work)."""
        self._suggestions += 1
        return _closest(text, names) if self._suggestions <= MAX_SUGGESTIONS else []

    def error(self, e: MapspecError) -> None:
        self.plan.errors.append(e)

    def relaxable(self, what: str, error: MapspecError) -> None:
        if what in self.relax:
            self.plan.warnings.append(f"[relaxed {what}] {error}")
        else:
            self.error(error)

    def run(self) -> Plan:
        spec, names = self.spec, list(self.infos)
        from_rules = [r for r in spec.rules if not r.is_constant]
        matches: dict[int, int] = Counter()
        taken: list[tuple[str, Rule, dict, dict]] = []
        matched_by: dict[str, Rule] = {}
        unmatched_sources = []
        excluded: dict[int, list] = {}
        for name in names:
            hit = None
            for rule in from_rules:
                try:
                    caps = rule.source.match(name)
                except AmbiguousMatch as e:
                    self.error(SpecError(f"{e}; make the pattern stricter (e.g. <name:word> instead of "
                                         f"<name:path>, or more literal text between placeholders)",
                                         rule.source_loc, rule.label))
                    caps = None
                    hit = rule
                    break
                if caps is None:
                    continue
                env = self._env(caps, name)
                if (rule.require or rule.absent or rule.when or rule.when_vars) and not self._conditions(rule, env):
                    excluded.setdefault(rule.index, []).append(name)
                    continue
                hit = rule
                matches[rule.index] += 1
                matched_by[name] = rule
                if rule.drop:
                    self.plan.dropped.append(name)
                    self.plan.dropped_by[name] = rule
                else:
                    taken.append((name, rule, env, caps))
                break
            if hit is None:
                unmatched_sources.append(name)

        stacks: dict[int, dict] = {}
        for name, rule, env, caps in taken:
            if rule.stack:
                over = rule.stack["over"]
                key = tuple(sorted((k, v) for k, v in caps.items() if k != over))
                stacks.setdefault(rule.index, {}).setdefault(key, []).append((caps[over], name, env))
                continue
            self._expand(rule, env, name)
            for extra in rule.also:
                self._expand(extra, env, name)
        for rule in from_rules:
            if rule.index in stacks:
                self._stack(rule, stacks[rule.index])
        for rule in spec.rules:
            if rule.is_constant and conditions.holds(rule.when_vars, spec.vars, spec.unset):
                self._expand(rule, self._env({}, None), None)
        self._ignored_and_matched(matched_by)
        self.plan.metadata = self._metadata(spec.target.metadata)

        for rule in from_rules:
            if matches[rule.index] == 0 and not rule.optional:
                near = self.suggest(rule.source_text, names)
                hint = f"; closest source names: {', '.join(repr(n) for n in near)}" if near else \
                    f"; the source has {len(names)} tensors (see `mapspec inspect`)"
                if rule.index in excluded:
                    ex = excluded[rule.index]
                    hint = (f"; its pattern matches {len(ex)} name{'s' if len(ex) > 1 else ''} (e.g. {ex[0]!r}) but "
                            f"its require:/absent: conditions exclude {'them' if len(ex) > 1 else 'it'}; add "
                            f"'optional: true' if that can happen")
                self.plan.unmatched_rules.append(rule)
                self.relaxable("unmatched-rule", SpecError(f"matches no source tensor{hint}", rule.source_loc,
                                                           rule.label))

        referenced = {r for s in self.plan.steps for r in s.refs}
        self.plan.referenced = referenced
        for name in unmatched_sources:
            if name in referenced:
                continue
            if any(p.match(name) is not None for p, _ in spec.ignore if not _ambiguous(p, name)):
                self.plan.ignored.append(name)
                continue
            self.plan.unused.append(name)
        if self.plan.unused:
            def describe(n):
                i = self.infos[n]
                return f"{n} ({_shape_text(i.shape)} {i.dtype})"
            n = len(self.plan.unused)
            self.relaxable("unused-source", CoverageError(
                f"{spec.path}: {n} source tensor{'s are' if n > 1 else ' is'} not matched by any rule, not "
                f"referenced and not ignored (add rules, or list them under 'ignore:'):\n"
                + _listing(self.plan.unused, describe)))

        self._duplicates()
        self._elements()
        self._target_dtype()
        if self.template is not None:
            self._against_template()
        self._writable()
        return self.plan

    def _env(self, caps: dict, source: Optional[str]) -> dict:
        """Names an expression sees: vars, captures, and shape() of source tensors."""
        def shape(name: Optional[str] = None) -> list:
            if name is None:
                if source is None:
                    raise KeyError("a rule without 'from' has no matched tensor; name one: shape(\"...\")")
                name = source
            info = self.infos.get(name)
            if info is None:
                near = _closest(name, list(self.infos))
                raise KeyError("no such source tensor" + (f" (closest: {', '.join(map(repr, near))})" if near else ""))
            return [int(d) for d in info.shape]
        return {**self.spec.vars, **caps, SHAPE_OF: shape}

    def _ignored_and_matched(self, matched_by: dict) -> None:
        """A name both under 'ignore:' and matched by a rule: the rule would silently win."""
        if not self.spec.ignore:
            return
        both = [n for n, rule in matched_by.items()
                if any(p.match(n) is not None for p, _ in self.spec.ignore if not _ambiguous(p, n))]
        if both:
            k = len(both)
            self.relaxable("ignored-and-matched", CoverageError(
                f"{self.spec.path}: {k} source tensor{'s are' if k > 1 else ' is'} listed under 'ignore:' but "
                f"also matched by a rule (the rule takes {'them' if k > 1 else 'it'}; narrow the rule or the "
                f"ignore pattern, or relax ignored-and-matched):\n"
                + _listing(both, lambda n: f"{n} (by {matched_by[n].label})")))

    def _stack(self, rule: Rule, groups: dict) -> None:
        """``stack: {over: e}``: the matches of each group, ordered by e (exactly 0..N-1), become one output."""
        over = rule.stack["over"]
        errors, keys = stacking.order(over, groups)
        for msg in errors:
            self.error(ConversionError(msg, rule=rule.label, loc=rule.source_loc))
        for key in keys:
            for r in [rule] + rule.also:
                self._expand_stacked(r, over, groups[key])

    def _expand_stacked(self, rule: Rule, over: str, members: list) -> None:
        per_member = []
        for _, name, env in members:
            fail = self._fail(rule, name)
            try:
                per_member.append([self._step(rule, e, name, fail) for e in _each_envs(rule, env, fail)])
            except MapspecError as err:
                self.error(err)
                return
        if len({len(m) for m in per_member}) != 1:
            self.error(ConversionError(f"stack over {over!r}: 'each' gives a different number of outputs per "
                                       f"match", rule=rule.label, loc=rule.each_loc or rule.loc))
            return
        for k in range(len(per_member[0])):
            parts = [m[k] for m in per_member]
            shape, axis, why = stacking.stacked_shape(over, parts, rule.stack.get("axis", 0))
            if shape is None:
                self.error(ConversionError(why, rule=rule.label, loc=rule.to_loc))
                return
            first = parts[0]
            env = {k: v for k, v in first.env.items() if k != over}
            self.plan.steps.append(Step(first.target, rule, None, [], first.out_meta,
                                        Meta(shape, first.out_meta.dtype), env=env, parts=parts, stack_axis=axis))

    def _elements(self) -> None:
        """Element coverage: the parts of a source tensor taken by take/slice/split must cover it exactly once."""
        shapes = {n: tuple(int(d) for d in i.shape) for n, i in self.infos.items()}
        for what, msg in coverage.findings(self.plan.steps, shapes, self.plan.referenced, MAX_LISTED):
            self.relaxable(what, CoverageError(f"{self.spec.path}: {msg}"))

    def _conditions(self, rule: Rule, env: dict) -> bool:
        """'require': all named source tensors exist; 'absent': none of them does; 'when': conditions hold."""
        if not conditions.holds(rule.when_vars, self.spec.vars, self.spec.unset):
            return False
        for key, conds, want in (("require", rule.require, True), ("absent", rule.absent, False)):
            for tmpl, loc in conds:
                try:
                    if (tmpl.render(env) in self.infos) != want:
                        return False
                except ExprError as e:
                    self.error(SpecError(f"{key}: {e}", loc, rule.label))
                    return False
        for attr, of, expected, loc in rule.when:
            try:
                node = of.render(env)
                attrs = self.attrs(node)
            except ExprError as e:
                self.error(SpecError(f"when: {e}", loc, rule.label))
                return False
            except MapspecError as e:
                self.error(SpecError(f"when: {e}", loc, rule.label))
                return False
            if not attrs:
                key = (rule.index, node)
                if key not in self._reported:
                    self._reported.add(key)
                    self.error(SpecError(f"when: the source has no attributes for layer/op {node!r}, so the "
                                         f"condition on {attr!r} cannot be checked", loc, rule.label))
                return False
            if attr not in attrs:
                return False  # e.g. 'group' of an InnerProduct: the condition does not hold
            value = attrs[attr]
            if isinstance(expected, bool) or isinstance(value, bool):
                same = value is expected or value == expected
            elif isinstance(expected, (int, float)) and isinstance(value, (int, float)):
                same = float(value) == float(expected)
            else:
                same = str(value) == str(expected)
            if not same:
                return False
        return True

    def _fail(self, rule: Rule, source: Optional[str]):
        def make(msg: str, loc: Location) -> MapspecError:
            return ConversionError(msg, tensor=source, rule=rule.label, loc=loc)
        return make

    def _expand(self, rule: Rule, env: dict, source: Optional[str]) -> None:
        fail = self._fail(rule, source)
        try:
            envs = _each_envs(rule, env, fail)
        except MapspecError as e:
            self.error(e)
            return
        for e in envs:
            try:
                self.plan.steps.append(self._step(rule, e, source, fail))
            except MapspecError as err:
                self.error(err)

    def _step(self, rule: Rule, env: dict, source: Optional[str], fail) -> Step:
        try:
            target = rule.to.render(env)
        except ExprError as e:
            raise fail(f"'to': {e}", Location(rule.to_loc.file, rule.to_loc.line, rule.to_loc.col + e.column))
        binder = Binder(env, lambda n: n in self.infos, self.attrs, fail)
        constant = None
        if not rule.constant:
            info = self.infos[source]
            if info.dtype is None:
                raise fail("the source does not say this tensor's dtype", rule.source_loc)
            meta = Meta(tuple(info.shape), info.dtype)
            quant = rawblocks.of_info(info)  # raw quantized blocks: bytes until dequantized
        elif rule.generate:  # a generator's array, from vars only
            quant = None
            constant = metadata.generate(rule.generate, env, self.spec.unset, rule.loc, rule.label)
            meta = Meta(tuple(constant.shape), dtypes.name_of(constant.dtype))
        else:
            quant = None
            shape = tuple(binder.int_value(d, rule.loc, "shape") for d in rule.shape) if rule.shape is not None \
                else ()
            meta = Meta(shape, rule.dtype)
            _possible(meta, fail, rule.loc, "the constant")
            constant = _constant_array(rule, shape, fail)
        in_meta = meta
        peak = _nbytes(meta)
        calls = []
        for call in rule.calls:
            args = {}
            for k, a in call.tdef.args.items():
                if k in call.args:
                    args[k] = binder.bind(a, call.args[k], call.arg_locs.get(k, call.loc), f"{call.name} {k}")
                elif not a.required and a.default is not None:
                    args[k] = a.default
            label = _call_label(call, args)
            why = rawblocks.refuse_call(call.name, label, quant, args)
            for ref in BoundCall(call, args, label).refs:
                t = rawblocks.of_info(self.infos[ref])
                why = why or (t and rawblocks.refuse_operand(label, ref, t))
            if why:
                raise fail(why, call.loc)
            if call.name == "dequantize":
                quant = None
            metas = {k: self._meta_of(v) for k, v in args.items()}
            try:
                meta = call.tdef.infer(meta, **metas)
            except TransformError as e:
                raise ConversionError(f"{label}: {e} (input {_shape_text(meta.shape)} {meta.dtype})", tensor=source,
                                      rule=rule.label, loc=call.loc) from None
            _possible(meta, fail, call.loc, label)
            peak = max(peak, _nbytes(meta))
            calls.append(BoundCall(call, args, label))
        step = Step(target, rule, None if rule.constant else source, calls, in_meta, meta, env=env,
                    constant=constant, peak=peak)
        if quant:  # raw quantized blocks (GGUF) keep their encoding through a plain rename/copy
            if rule.stack:
                raise fail(rawblocks.refuse_stack(quant), rule.loc)
            step.meta = {"ggml_type": quant, "shape": self.infos[source].meta["shape"]}
        return step

    def _metadata(self, raw: dict) -> dict:
        """``target.metadata`` evaluated over the vars and the plan's facts (see :mod:`mapspec.metadata`)."""
        env = {**self._env({}, None), **metadata.builtins(self.plan.steps, self.source.path)}
        return metadata.evaluate(raw, env, self.spec.unset, self.spec.target.loc or Location(self.spec.path),
                                 self.error)

    def _meta_of(self, v):
        if isinstance(v, Ref):
            i = self.infos[v.name]
            return Meta(tuple(i.shape), i.dtype)
        if isinstance(v, list):
            return [self._meta_of(x) for x in v]
        return v

    def _duplicates(self) -> None:
        seen: dict[str, Step] = {}
        for s in self.plan.steps:
            if s.target in seen:
                first = seen[s.target]
                a = f"{first.rule.label}" + (f" from {first.source!r}" if first.source else "")
                b = f"{s.rule.label}" + (f" from {s.source!r}" if s.source else "")
                self.error(SpecError(f"target {s.target!r} is produced twice: by {a} (line {first.rule.loc.line}) "
                                     f"and by {b}", s.rule.to_loc, s.rule.label))
            else:
                seen[s.target] = s

    def _target_dtype(self) -> None:
        want = self.spec.target.dtype
        if not want:
            return
        for s in self.plan.steps:
            if s.out_meta.dtype != want and dtypes.DTYPES[s.out_meta.dtype].kind == "float":
                s.calls.append(BoundCall(_IMPLICIT_CAST, {"dtype": want}, f"cast({want}) [target dtype]"))
                s.out_meta = Meta(s.out_meta.shape, want)

    def _against_template(self) -> None:
        tinfos = self.template.infos()
        produced = {s.target: s for s in self.plan.steps}
        for name, info in tinfos.items():
            s = produced.get(name)
            if s is None:
                self.plan.missing_targets.append(name)
                continue
            own = rawblocks.raw_type(s.out_meta.dtype, s.meta)
            if own and (why := rawblocks.refuse_template(own, rawblocks.of_info(info), info.dtype)):
                self.error(ConversionError(why, tensor=s.source or name, rule=s.rule.label, loc=s.rule.to_loc))
            elif info.meta:
                s.meta = dict(info.meta)
            if info.shape is not None and tuple(info.shape) != tuple(s.out_meta.shape):
                hint = ""
                if sorted(info.shape) == sorted(s.out_meta.shape):
                    hint = "; same dimensions in another order: a transpose may be missing"
                elif TensorInfo(name, tuple(info.shape), None).numel == TensorInfo(name, s.out_meta.shape, None).numel:
                    hint = f"; same element count: add {{reshape: {list(info.shape)}}} if the layout agrees"
                self.error(ConversionError(
                    f"produces shape {_shape_text(s.out_meta.shape)} but the template "
                    f"{self.template.path} expects {_shape_text(info.shape)} for {name!r}{hint}",
                    tensor=s.source or name, rule=s.rule.label, loc=s.rule.to_loc))
            if info.dtype is not None and info.dtype != s.out_meta.dtype:
                self.relaxable("dtype-mismatch", ConversionError(
                    f"produces {s.out_meta.dtype} but the template expects {info.dtype} for {name!r}; add "
                    f"{{cast: {info.dtype}}} or set target: {{dtype: {info.dtype}}}",
                    tensor=s.source or name, rule=s.rule.label, loc=s.rule.to_loc))
        if self.plan.missing_targets:
            def describe(n):
                i = tinfos[n]
                return f"{n} ({_shape_text(i.shape)}{' ' + i.dtype if i.dtype else ''})"
            n = len(self.plan.missing_targets)
            self.relaxable("missing-target", CoverageError(
                f"{self.spec.path}: {n} tensor{'s' if n > 1 else ''} of the template {self.template.path} "
                f"{'are' if n > 1 else 'is'} not produced by any rule:\n" + _listing(self.plan.missing_targets,
                                                                                     describe)))
        extra = [s for s in self.plan.steps if s.target not in tinfos]
        tnames = list(tinfos)
        self.plan.unexpected_targets = [s.target for s in extra]
        for s in extra:
            near = self.suggest(s.target, tnames)
            hint = f" (closest template names: {', '.join(repr(n) for n in near)})" if near else ""
            self.relaxable("unexpected-target", ConversionError(
                f"target {s.target!r} is not in the template {self.template.path}{hint}",
                tensor=s.source, rule=s.rule.label, loc=s.rule.to_loc))
        order = {name: i for i, name in enumerate(tinfos)}
        self.plan.steps.sort(key=lambda s: order.get(s.target, len(order)))

    def _writable(self) -> None:
        fmt = self.plan.target_format
        if not fmt:
            return
        try:
            mod = module(fmt)
        except MapspecError:
            return
        for s in self.plan.steps:
            quant = rawblocks.raw_type(s.out_meta.dtype, s.meta)
            if quant and not rawblocks.writer_holds(mod):
                self.error(ConversionError(rawblocks.refuse_output(fmt, quant, s.meta.get("shape")),
                                           tensor=s.source or s.target, rule=s.rule.label, loc=s.rule.to_loc))
        allowed = getattr(mod, "WRITE_DTYPES", None)
        if not allowed:
            return
        for s in self.plan.steps:
            if s.out_meta.dtype not in allowed and not rawblocks.raw_type(s.out_meta.dtype, s.meta):
                self.error(ConversionError(
                    f"format {fmt} cannot hold {s.out_meta.dtype} (it holds {', '.join(allowed)}); add "
                    f"{{cast: {allowed[0]}}} or set target: {{dtype: {allowed[0]}}}",
                    tensor=s.source or s.target, rule=s.rule.label, loc=s.rule.to_loc))


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


def _call_label(call: Call, args: dict) -> str:
    parts = []
    for k, v in args.items():
        if call.tdef.args[k].default == v and k not in call.args:
            continue
        if isinstance(v, Ref):
            v = v.name
        elif isinstance(v, list):
            v = "[" + ",".join(x.name if isinstance(x, Ref) else str(x) for x in v) + "]"
        parts.append(f"{k}={v}")
    return f"{call.name}({', '.join(parts)})"


_IMPLICIT_CAST = Call(tdef=TRANSFORMS["cast"], args={}, arg_locs={}, loc=Location("<target: dtype>"))


# -- public API -----------------------------------------------------------------------

def _as_spec(spec: Union[str, Spec], source=None) -> Spec:
    """A spec, a spec's path or shipped name, or a generic name (``hf-to-gguf``) the source's family picks."""
    from .family import resolve

    return spec if isinstance(spec, Spec) else load_spec(resolve(spec, source))


def open_template(spec: Spec, template: Optional[str]) -> Optional[Reader]:
    path = template or spec.target.template
    if not path:
        return None
    return open_checkpoint(path, **spec.target.template_options)


def with_vars(spec: Spec, overrides: Optional[dict]) -> Spec:
    """The spec with some ``vars`` replaced (``--var``); naming a var the spec lacks is an error."""
    if not overrides:
        return spec
    names = set(spec.vars) | set((spec.config or {}).get("vars", {}))
    unknown = [k for k in overrides if k not in names]
    if unknown:
        known = ", ".join(sorted(names)) or "none"
        raise MapspecError(f"{spec.path}: the spec has no var {unknown[0]!r} to override (its vars: {known})")
    return dataclasses.replace(spec, vars={**spec.vars, **overrides})


def plan(spec: Union[str, Spec], source: Union[str, Reader], template: Union[str, Reader, None] = None,
         target_format: Optional[str] = None, output: Optional[str] = None, relax: tuple = (),
         source_format: Optional[str] = None, vars: Optional[dict] = None, vars_file: Optional[str] = None,
         no_tokenizer: bool = False, tokenizer_pre: Optional[str] = None) -> Plan:
    """Plan a conversion from metadata only.  Returns a :class:`Plan` (check ``plan.ok`` / ``plan.check()``).

    Vars come from the spec, then its config file beside the source (or ``vars_file``), then ``vars``.
    ``no_tokenizer``, ``tokenizer_pre``: see :func:`mapspec.formats.gguf_vocab.add_to_plan`."""
    spec = _as_spec(spec, source)
    reader = source if isinstance(source, Reader) else open_checkpoint(
        source, format=source_format or spec.source.format, **spec.source.options)
    spec = with_vars(with_config(spec, reader.path, vars_file, given=set(vars or ()), reader=reader), vars)
    tmpl = template if isinstance(template, Reader) else open_template(spec, template)
    fmt = target_format or spec.target.format
    fmt = output_format(output, fmt) if output else fmt
    p = _Planner(spec, reader, tmpl, fmt, set(relax)).run()
    gguf_vocab.add_to_plan(p, no_tokenizer=no_tokenizer, pre=tokenizer_pre)
    p.no_tokenizer = no_tokenizer
    p.warnings[:0] = getattr(reader, "notes", [])  # e.g. shards beside an index that it does not name
    return p


@dataclass
class Result:
    plan: Plan
    output: str
    tensors: int
    bytes_written: int
    seconds: float
    report: dict
    companions: list = field(default_factory=list)  # companion files written beside the weights (paths)


def _read_counts(p: Plan) -> Counter:
    uses: Counter = Counter()
    for s in p.steps:
        for src in s.sources:
            uses[src] += 1
        for r in s.refs:
            uses[r] += 1
    return uses


DEFAULT_GROWTH = 4  # an output may be this many times its source (plus DEFAULT_SLACK) unless allowed
DEFAULT_SLACK = 1 << 30


def check_size(p: Plan, max_output: Optional[float] = None) -> None:
    """Refuse, before anything is written, a conversion whose output (or any array along a rule's
    chain) is far larger than its source, unless ``max_output`` (bytes; ``--max-output-size``)
    allows it.  The default is ``DEFAULT_GROWTH`` times the source plus ``DEFAULT_SLACK``."""
    source_bytes = sum(i.nbytes for i in p.source.infos().values())
    limit = max_output if max_output is not None else DEFAULT_GROWTH * source_bytes + DEFAULT_SLACK
    total = sum(_nbytes(s.out_meta) for s in p.steps)
    biggest = max(p.steps, key=lambda s: s.peak, default=None)
    worst = max(total, biggest.peak if biggest is not None else 0)
    if worst <= limit:
        return
    what = (f"the output would be {worst:,} bytes" if worst == total else
            f"{biggest.rule.label} makes an array of {worst:,} bytes for target {biggest.target!r}")
    largest = sorted(p.steps, key=lambda s: -s.peak)[:3]
    names = ", ".join(f"{s.target!r} ({s.peak:,} B)" for s in largest)
    raise MapspecError(f"{what}, more than the allowed {limit:,.0f} bytes "
                       + (f"(the source holds {source_bytes:,}; default limit {DEFAULT_GROWTH} x source + 1 GiB)"
                          if max_output is None else "(--max-output-size)")
                       + f"; largest: {names}. Pass --max-output-size SIZE (e.g. 20GB, or 'any') if this is "
                         f"intended")


def execute(p: Plan, output: str, force: bool = False, progress: Optional[Callable[[int, int, Step], None]] = None,
            target_options: Optional[dict] = None, jobs: Optional[int] = None,
            max_output: Optional[float] = None, sync: bool = True, outtype: Optional[str] = None) -> Result:
    """Stream the planned conversion into ``output`` (atomically).

    ``output`` may be a directory or a ``*.index.json`` (a sharded checkpoint, see
    :mod:`mapspec.formats.sharded`).  ``jobs``: worker threads (default: the cores) for writers
    that place tensors at known offsets; other writers get the tensors one by one, in order.
    An output beyond ``max_output`` bytes (default: see :func:`check_size`) is refused before
    anything is written.  No file written may be one the plan reads (:mod:`mapspec.guard`).
    ``sync`` (default): fsync'ed before it is put in place (``--no-sync`` turns it off).  ``outtype`` (GGUF
    outputs): the ggml type of the weights, as llama.cpp's converter chooses them
    (:mod:`mapspec.formats.gguf_outtype`); other outputs: the dtype of every float
    tensor (:mod:`mapspec.outtype`).
    """
    from . import guard
    from .formats.shard_output import staged

    p.check()
    check_size(p, max_output)
    spec, reader = p.spec, p.source
    fmt = output_format(output, p.target_format)
    if outtype is not None and fmt != "gguf":  # float outputs: every float tensor in one dtype
        from . import outtype as float_outtype

        float_outtype.cast_plan(p, outtype, fmt, output)
        outtype = None
    infos = [TensorInfo(s.target, tuple(s.out_meta.shape), s.out_meta.dtype, s.meta) for s in p.steps]
    options = dict(spec.target.options)
    options.update(target_options or {})
    if p.metadata:
        options["metadata"] = {**(options.get("metadata") or {}), **p.metadata}
    if p.template is not None:
        options.setdefault("template", p.template.path)
    requested = output  # what the guard checks (it resolves a folder output the same way)
    in_folder = companions.folder_file(spec, output)
    if in_folder:  # -o DIR/ of a layout whose folder holds one weights file (Meta's consolidated.00.pth)
        output = in_folder
        fmt = output_format(output, p.target_format)
    if outtype is not None:
        options["outtype"] = outtype
    if options.get("outtype") is not None:
        from .formats import gguf_outtype

        options["outtype"] = gguf_outtype.resolve(options["outtype"], fmt, output, p.source.infos().values())
    route = None if in_folder else sharded.output_target(output, fmt)
    if route is not None:
        output, shard_format = route
        fmt = sharded.NAME
        options = {"shard_format": shard_format, "overwrite": force, **options}
    elif "max_shard_size" in options:
        raise MapspecError(f"{output}: max_shard_size needs a sharded output (a directory, or a *.index.json)")
    extra, extra_notes, folder = {}, [], None
    if (route is not None or in_folder) and companions.declared(spec):  # a model folder: config, tokenizer...
        folder = os.path.dirname(os.path.abspath(output))
        extra, extra_notes = companions.build(p, p.no_tokenizer)
        companions.check_targets(folder, extra, force)
    wrote_extra: list = []
    uses = _read_counts(p)
    cache: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    written = 0
    entries = []

    def get(name: str) -> np.ndarray:
        arr = cache.get(name)
        if arr is None:
            arr = reader.read(name)
            if uses[name] > 1:
                cache[name] = arr
        return arr

    drop_pages = getattr(reader, "release", None)

    dropped: set = set()  # released by a worker thread already (parallel path)

    def release(name: str) -> None:
        uses[name] -= 1
        if uses[name] <= 0:
            cache.pop(name, None)
            if drop_pages is not None and name not in dropped:
                drop_pages(name)  # memory-mapped readers let the tensor's pages go (RSS stays ~one tensor)

    span = getattr(reader, "span", None)

    def inputs(s: Step) -> tuple:
        """A step's input and transform arguments (memory-mapped views where the format allows); a
        stacked step's input is its parts' inputs.  Read on the calling thread (readers need not be
        thread-safe)."""
        args = [{k: _materialize(v, get) for k, v in c.args.items()} for c in s.calls]
        if s.parts:
            return [inputs(part) for part in s.parts], args
        return (get(s.source) if s.source is not None else np.array(s.constant)), args

    def prepare(i: int):
        return inputs(p.steps[i])

    def prepare_positional(i: int):
        """As prepare; a tensor that is only renamed is copied file to file instead (never read in here).
        Also says whether this step is the source's last use (its pages can go as soon as it is written)."""
        s = p.steps[i]
        last = s.source is not None and uses[s.source] == 1
        if last and not s.calls and span is not None:
            where = span(s.source)
            if where is not None:
                return "copy", where, False
        return "compute", prepare(i), last

    def work(i: int, prepared) -> None:
        s = p.steps[i]
        how, what, last = prepared
        if how == "copy":
            writer.copy_at(s.target, TensorInfo(s.target, tuple(s.out_meta.shape), s.out_meta.dtype), what)
            return
        writer.write_at(s.target, _compute(s, *what))
        if last and drop_pages is not None:
            drop_pages(s.source)  # now, not when its turn in plan order comes (memory ~ largest x jobs)
            dropped.add(s.source)

    def done(i: int, x) -> None:
        nonlocal written
        s = p.steps[i]
        stored = getattr(writer, "stored", None)  # (bytes, type) a writer encodes a tensor in (GGUF outtype)
        nbytes, encoding = stored(s.target) if stored else (None, None)
        written += nbytes if nbytes is not None else TensorInfo(s.target, s.out_meta.shape, s.out_meta.dtype).nbytes
        entries.append({"target": s.target, "source": s.source if not s.parts else s.sources, "refs": s.refs,
                        "transforms": [c.label for c in s.calls], "shape": list(s.out_meta.shape),
                        "dtype": s.out_meta.dtype, **({"stored_as": encoding} if encoding else {})})
        for src in s.sources:
            release(src)
        for r in s.refs:
            release(r)
        if progress is not None:
            progress(i + 1, len(p.steps), s)

    guard.check(p, requested, force=force)
    anonymous = not getattr(module(fmt), "NAMED_TEMP", False)
    # a model folder (shards, or one file in a layout's folder) is staged and published whole, companions included
    with (staged(output, shard_format if route is not None else fmt, force=force, sync=sync)
          if route is not None or in_folder else atomic_output(output, force=force, anonymous=anonymous,
                                                               sync=sync)) as tmp:
        writer = create_writer(tmp, infos, format=fmt, final_path=str(output),
                               copy_phases=parallel.copy_phases(p.steps, span), **options)
        try:
            if getattr(writer, "positional", False):
                parallel.run(p.steps, parallel.default_jobs() if jobs is None else jobs, prepare_positional, work,
                             done)
            else:
                for i, s in enumerate(p.steps):
                    x = _compute(s, *prepare(i))
                    writer.write(s.target, x)
                    done(i, x)
                    del x
            writer.close()
            if extra:
                wrote_extra = companions.write(os.path.dirname(tmp), extra, folder)
        except BaseException:
            writer.abort()
            raise
    seconds = time.perf_counter() - t0
    report = {
        "spec": spec.path, "source": reader.path, "output": output, "format": fmt,
        "template": p.template.path if p.template else None, "tensors": entries,
        "summary": {**p.summary(), "bytes_written": written, "seconds": round(seconds, 3)},
        "ignored": p.ignored, "warnings": p.warnings + extra_notes, "companions": wrote_extra,
    }
    p.warnings.extend(extra_notes)
    return Result(p, output, len(entries), written, seconds, report, wrote_extra)


def _compute(s: Step, x, args_per_call: list) -> np.ndarray:
    """Run a step's transforms on its input (a stacked step: its parts', each into its slot of one array);
    check the result against the plan."""
    if s.parts:
        first = s.parts[0].out_meta
        out = np.empty(first.shape[:s.stack_axis] + (len(s.parts),) + first.shape[s.stack_axis:],
                       dtypes.to_numpy(first.dtype))
        for j, (part, (px, pargs)) in enumerate(zip(s.parts, x)):
            out[(slice(None),) * s.stack_axis + (j,)] = _compute(part, px, pargs)
        x = out
    for c, args in zip(s.calls, args_per_call):
        numeric_kernel = _takes_allow(c.call.tdef.kernel)
        if numeric_kernel:
            args = {**args, "allow": s.rule.allow}
        try:
            y = c.call.tdef.kernel(x, **args)
            if numeric_kernel:
                numeric.check_result(y, [x, *_arrays(args)], s.rule.allow)
            x = y
            del y
        except TransformError as e:
            raise ConversionError(f"{c.label}: {e}", tensor=s.source or s.target, rule=s.rule.label,
                                  loc=c.call.loc) from None
    if tuple(x.shape) != tuple(s.out_meta.shape) or dtypes.name_of(x.dtype) != s.out_meta.dtype:
        raise ConversionError(
            f"the data gives {_shape_text(x.shape)} {x.dtype} but the plan promised "
            f"{_shape_text(s.out_meta.shape)} {s.out_meta.dtype} (the source file's header and its "
            f"data disagree)", tensor=s.source or s.target, rule=s.rule.label)
    return x


_ALLOW_KERNELS: dict = {}


def _takes_allow(kernel) -> bool:
    """Does this kernel take the rule's numeric allowances (``allow=``, see :mod:`mapspec.numeric`)?"""
    if kernel not in _ALLOW_KERNELS:
        import inspect

        _ALLOW_KERNELS[kernel] = "allow" in inspect.signature(kernel).parameters
    return _ALLOW_KERNELS[kernel]


def _arrays(args: dict) -> list:
    out = []
    for v in args.values():
        if isinstance(v, np.ndarray):
            out.append(v)
        elif isinstance(v, list):
            out += [a for a in v if isinstance(a, np.ndarray)]
    return out


def _materialize(v, get):
    if isinstance(v, Ref):
        return get(v.name)
    if isinstance(v, list):
        return [_materialize(x, get) for x in v]
    return v


def apply(spec: Union[str, Spec], source: Union[str, Reader], output: str, template: Union[str, Reader, None] = None,
          force: bool = False, target_format: Optional[str] = None, relax: tuple = (),
          progress: Optional[Callable[[int, int, Step], None]] = None, source_format: Optional[str] = None,
          vars: Optional[dict] = None, vars_file: Optional[str] = None, jobs: Optional[int] = None,
          target_options: Optional[dict] = None, max_output: Optional[float] = None, no_tokenizer: bool = False,
          tokenizer_pre: Optional[str] = None, sync: bool = True, outtype: Optional[str] = None) -> Result:
    """Plan, check and stream a conversion into ``output``; raises on any problem, leaving no partial file.
    ``outtype``: a GGUF output's type (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1 or auto); another output's
    float dtype (f32, f16, bf16 or auto: the source's matrices')."""
    p = plan(spec, source, template=template, target_format=target_format, output=output, relax=relax,
             source_format=source_format, vars=vars, vars_file=vars_file, no_tokenizer=no_tokenizer,
             tokenizer_pre=tokenizer_pre)
    return execute(p, output, force=force, progress=progress, jobs=jobs, target_options=target_options,
                   max_output=max_output, sync=sync, outtype=outtype)
