"""Planning from metadata only: the planner walks the rules over the source's tensor names, binds
arguments, infers shapes and dtypes, and checks coverage and the template (:func:`plan`)."""

from __future__ import annotations

from collections import Counter
import dataclasses
from typing import Optional, Union

from .. import coverage, dtypes, rawblocks, stacking
from ..language import metadata
from ..errors import ConversionError, CoverageError, Location, MapspecError, SpecError
from ..formats import Reader, TensorInfo, module, open_checkpoint, output_format
from ..language.args import Binder, Ref
from ..language import conditions
from ..language.config import with_config
from ..language.expr import SHAPE_OF, ExprError
from ..language.load import load_spec
from ..language.model import Rule, Spec
from . import tokenizer
from ..language.pattern import AmbiguousMatch
from ..transforms import Meta, TransformError
from .names import MAX_LISTED, MAX_SUGGESTIONS, _closest, _listing
from .rules import _ambiguous, _constant_array, _each_envs, _nbytes, _possible
from .steps import _IMPLICIT_CAST, BoundCall, Plan, Step, _call_label, _shape_text


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
        """``target.metadata`` evaluated over the vars and the plan's facts (see :mod:`mapspec.language.metadata`)."""
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



# -- public API -----------------------------------------------------------------------

def _as_spec(spec: Union[str, Spec], source=None) -> Spec:
    """A spec, a spec's path or shipped name, or a generic name (``hf-to-gguf``) the source's family picks."""
    from ..language.family import resolve

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
    ``no_tokenizer``, ``tokenizer_pre``: see :func:`mapspec.engine.tokenizer.add_to_plan`."""
    spec = _as_spec(spec, source)
    reader = source if isinstance(source, Reader) else open_checkpoint(
        source, format=source_format or spec.source.format, **spec.source.options)
    spec = with_vars(with_config(spec, reader.path, vars_file, given=set(vars or ()), reader=reader), vars)
    tmpl = template if isinstance(template, Reader) else open_template(spec, template)
    fmt = target_format or spec.target.format
    fmt = output_format(output, fmt) if output else fmt
    p = _Planner(spec, reader, tmpl, fmt, set(relax)).run()
    tokenizer.add_to_plan(p, no_tokenizer=no_tokenizer, pre=tokenizer_pre)
    p.no_tokenizer = no_tokenizer
    p.warnings[:0] = getattr(reader, "notes", [])  # e.g. shards beside an index that it does not name
    return p


