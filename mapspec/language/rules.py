"""The ``rules:`` section of a spec: one raw rule (and its ``also:`` entries) checked and built into a
:class:`~mapspec.language.model.Rule`, its ``apply:`` transforms into :class:`~mapspec.language.model.Call`.

:class:`RuleBuilder` holds the methods; the spec loader's builder (:mod:`mapspec.language.load`) mixes
it in and gives it ``errors`` (the list every mistake is appended to) and ``version`` (the spec's
``mapspec:``).  :data:`MAX_EACH` is also the planner's bound (:mod:`mapspec.engine.rules`).
"""

from __future__ import annotations

import difflib
import re
from typing import Optional

from .. import dtypes
from ..errors import Location, SpecError
from ..transforms import STATIC_CHECKS, TRANSFORMS, TransformError
from . import sections
from .args import Checker
from .expr import FUNCTIONS, ExprError, Template
from .model import Call, Rule
from .pattern import Pattern, PatternSyntaxError
from .yamlsafe import LocDict

MAX_EACH = 100_000
TRANSFORMS_11 = ("rope_permute",)  # transforms a spec must declare 'mapspec: 1.1' to use
_CALL = re.compile(r"\{[^{}]*\b(?:" + "|".join(FUNCTIONS) + r")\s*\(")  # shape( inside an expression
# transforms that keep the element count (and, but for squeeze/unsqueeze, the number of axes)
SAME_ELEMENTS = ("reshape", "transpose", "squeeze", "unsqueeze", "rope_permute", "cast", "reverse", "fill",
                 "mul", "div", "add", "sub")


def non_text_names(mapping, what: str, default: Location, rule: Optional[str] = None) -> list[SpecError]:
    """Errors for keys that are not text (YAML reads ``2:`` as an integer; the schema's name pattern
    only applies to strings)."""
    if not isinstance(mapping, dict):
        return []
    return [SpecError(f"{what} name {k!r} is not a name (letters, digits and _, not starting with a digit)",
                      mapping.key_loc(k) if isinstance(mapping, LocDict) else default, rule)
            for k in mapping if not isinstance(k, str)]


def _names_for(rule_raw: dict, pattern: Optional[Pattern], vars_: dict) -> dict[str, str]:
    names: dict[str, str] = {}
    for k, v in vars_.items():
        names[k] = "int" if isinstance(v, int) and not isinstance(v, bool) else (
            "str" if isinstance(v, str) else "any")
    each = rule_raw.get("each")
    if isinstance(each, dict):
        for k, v in each.items():
            if not isinstance(k, str):
                continue
            vals = v if isinstance(v, list) else None
            if vals and all(isinstance(x, str) for x in vals):
                names[k] = "str"
            elif vals and all(isinstance(x, int) for x in vals):
                names[k] = "int"
            else:
                names[k] = "int" if isinstance(v, dict) else "any"
    if pattern is not None:
        for k, kind in pattern.captures.items():
            names[k] = "int" if kind == "int" else "str"
    return names


class RuleBuilder:
    """Checks and builds rules; mixed into the spec loader's builder, which sets ``errors`` and ``version``."""

    errors: list
    version: object

    def _rule(self, raw: LocDict, index: int, vars_: dict, loc: Location, parent: Optional[Rule] = None,
              also_index: int = 0, allow: frozenset = frozenset()) -> Optional[Rule]:
        n_before = len(self.errors)
        pattern = parent.source if parent is not None else None
        source_text = parent.source_text if parent is not None else raw.get("from")
        drop = raw.get("drop") is True
        label_rule = Rule(index=index, loc=loc, to=Template(""), to_text=str(raw.get("to")), to_loc=loc,
                          source_text=source_text, name=raw.get("name"), parent=parent, also_index=also_index,
                          drop=drop)
        label = label_rule.label
        if isinstance(source_text, str) and parent is None:
            try:
                pattern = Pattern(source_text)
                if not pattern.is_10:
                    self._needs_11("an optional or alternative name part <...|...>", raw.loc_of("from"), label)
            except PatternSyntaxError as e:
                l = raw.loc_of("from")
                self.errors.append(SpecError(f"'from': {e}", Location(l.file, l.line, l.col + e.column), label))
                return None  # without its captures, the rest of the rule would only report follow-on errors
        names = _names_for(raw, pattern, vars_)
        check = Checker(names, label)
        to_text = "" if drop else raw["to"]
        self.errors += list(check.template(to_text, raw.loc_of("to"), "'to'"))
        try:
            to_template = Template(to_text)
        except ExprError:
            to_template = None
        # each: values or ranges, expressions over vars only
        each = raw.get("each") or {}
        bad_names = non_text_names(each, "'each' variable", loc, label)
        if bad_names or not isinstance(each, dict):  # the rule is reported, not built
            self.errors += bad_names
            each = {}
        each_names = {k: t for k, t in names.items() if k not in each}
        static_count = 1
        for var, spec_v in each.items():
            if pattern is not None and var in pattern.captures:
                self.errors.append(SpecError(f"'each' variable {var!r} has the same name as a capture of 'from'",
                                             each.key_loc(var), label))
            if isinstance(spec_v, dict):
                rng = spec_v.get("range") or []
                sub = Checker(each_names, label)
                for i, item in enumerate(rng):
                    self.errors += list(sub.int_like(item, rng.loc_of(i), f"each {var} range[{i}]"))
                if rng and all(isinstance(v, int) and not isinstance(v, bool) for v in rng):
                    if len(rng) == 3 and rng[2] == 0:
                        self.errors.append(SpecError(f"each {var}: range {list(rng)} has step 0", each.loc_of(var),
                                                     label))
                        continue
                    n = len(range(*rng))  # counted, not materialised
                    if n == 0:
                        self.errors.append(SpecError(f"each {var}: range {list(rng)} is empty", each.loc_of(var),
                                                     label))
                    static_count *= max(n, 1)
            elif isinstance(spec_v, list):
                static_count *= max(len(spec_v), 1)
        if static_count > MAX_EACH:
            self.errors.append(SpecError(f"'each' expands to {static_count} outputs, more than {MAX_EACH}",
                                         raw.loc_of("each"), label))
        stack = raw.get("stack") if parent is None else parent.stack
        if parent is None and "stack" in raw:
            self._needs_11("'stack'", raw.key_loc("stack"), label)
        for where, text in _strings(raw):
            if _CALL.search(text):
                self._needs_11("shape() in an expression", raw.loc_of(where), label)
                break
        if parent is None and isinstance(stack, dict):
            over = stack.get("over")
            if pattern is not None and pattern.captures.get(over) != "int":
                what = "an integer capture" if pattern is None or over not in pattern.captures else \
                    f"an integer capture, not a {pattern.captures[over]} one"
                self.errors.append(SpecError(f"stack over {over!r}: {over!r} must be {what} of 'from' "
                                             f"(<{over}>)", raw.loc_of("stack"), label))
            elif to_template is not None and over in {n for n, _ in to_template.names()}:
                self.errors.append(SpecError(f"stack over {over!r}: 'to' uses {{{over}}}, so every match would "
                                             f"be its own output; leave {{{over}}} out of 'to'", raw.loc_of("to"),
                                             label))
        conditions = {}
        for key in ("require", "absent"):
            conditions[key] = []
            for i, text in enumerate(raw.get(key) or []):
                rl = raw[key].loc_of(i)
                self.errors += list(check.template(text, rl, f"{key}[{i}]"))
                try:
                    conditions[key].append((Template(text), rl))
                except ExprError:
                    pass
        when, when_vars = [], [c for c in raw.get("when") or [] if sections.conditions.is_var_condition(c)]
        self.errors += sections.conditions.check(when_vars, set(vars_), loc, "rule", label)
        if raw.get("generate") is not None:
            self._needs_11("'generate'", raw.key_loc("generate"), label)
            self.errors += sections.check_generate(raw["generate"], raw.loc_of("generate"), "tensor", label)
        for i, cond in enumerate(raw.get("when") or []):
            cl = raw["when"].loc_of(i)
            if sections.conditions.is_var_condition(cond):
                continue
            of_loc = cond.loc_of("of") if isinstance(cond, LocDict) else cl
            self.errors += list(check.template(cond["of"], of_loc, f"when[{i}] of"))
            try:
                when.append((cond["attr"], Template(cond["of"]), cond["is"], cl))
            except ExprError:
                pass
        calls = []
        for i, item in enumerate(raw.get("apply") or []):
            call = self._call(item, raw["apply"].loc_of(i), check, label)
            if call is not None:
                calls.append(call)
        self._chain(calls, label)
        value = raw.get("value")
        dtype = raw.get("dtype")
        shape = raw.get("shape")
        constant = (pattern is None and not drop) or (parent is not None and "value" in raw)
        if constant and "generate" not in raw:  # transforms, if any, apply to the constant
            dtype, shape = self._constant(raw, check, label)
        if len(self.errors) > n_before or to_template is None:
            return None
        rule = Rule(index=index, loc=loc, to=to_template, to_text=to_text, to_loc=raw.loc_of("to"),
                    source=pattern, source_text=source_text,
                    source_loc=parent.source_loc if parent is not None else (
                        raw.loc_of("from") if "from" in raw else None),
                    calls=calls, each=each, each_loc=raw.loc_of("each") if "each" in raw else None,
                    require=conditions["require"], absent=conditions["absent"], when=when, when_vars=when_vars,
                    generate=raw.get("generate"), optional=bool(raw.get("optional", False)), value=value, dtype=dtype,
                    shape=shape, name=raw.get("name"), constant=constant, parent=parent, also_index=also_index,
                    drop=drop, stack=dict(stack) if isinstance(stack, dict) else None,
                    allow=allow | allowances(raw.get("allow")) | (parent.allow if parent is not None else frozenset()))
        if parent is None and isinstance(raw.get("also"), list):
            for k, item in enumerate(raw["also"]):
                if isinstance(item, LocDict):
                    sub = self._rule(item, index, vars_, raw["also"].loc_of(k), parent=rule, also_index=k + 1)
                    if sub is not None:
                        rule.also.append(sub)
        return rule

    def _needs_11(self, feature: str, loc: Location, label: Optional[str] = None) -> None:
        """A 1.1 feature in a spec that says ``mapspec: 1`` (which a 1.0 reader must be able to read)."""
        if self.version == 1:
            self.errors.append(SpecError(f"{feature} is spec language 1.1: declare 'mapspec: 1.1' (readers of "
                                         f"version 1 do not know it)", loc,
                                         label))

    def _chain(self, calls: list, label: str) -> None:
        """Shapes known without data along a chain: a reshape to a fixed shape fixes the element count (and a
        transpose the number of axes) that later reshapes and transposes must agree with."""
        numel = ndim = None
        for call in calls:
            arg = call.args.get(call.tdef.short) if call.tdef.short else None
            static = isinstance(arg, list) and all(isinstance(d, int) and not isinstance(d, bool) for d in arg)
            if call.name == "reshape" and static:
                known = 1
                for d in arg:
                    known *= d if d != -1 else 1
                if numel is not None and (known != numel if -1 not in arg else known == 0 or numel % known):
                    more = f", not a multiple of {known}" if -1 in arg else ""
                    self.errors.append(SpecError(f"reshape to {arg}: an earlier reshape in this rule gives {numel} "
                                                 f"elements{more}", call.loc, label))
                    return
                numel = numel if -1 in arg else known
                ndim = len(arg)
            elif call.name == "transpose" and static:
                if ndim is not None and len(arg) != ndim:
                    self.errors.append(SpecError(f"transpose axes {arg} name {len(arg)} axes but an earlier reshape "
                                                 f"in this rule gives {ndim}", call.loc, label))
                    return
            elif call.name not in SAME_ELEMENTS:
                numel = ndim = None
            elif call.name in ("squeeze", "unsqueeze"):
                ndim = None

    def _constant(self, raw: LocDict, check: Checker, label: str):
        dtype = raw.get("dtype", "float32")
        try:
            dtype = dtypes.canonical(dtype)
        except KeyError:
            hint = difflib.get_close_matches(str(dtype), dtypes.known(), n=1)
            self.errors.append(SpecError(f"unknown dtype {dtype!r}" + (f" (did you mean {hint[0]!r}?)" if hint
                                                                        else ""), raw.loc_of("dtype"), label))
            dtype = None
        shape = raw.get("shape")
        if shape is None:
            value = raw.get("value")
            shape = _value_shape(value)
            if shape is None:
                self.errors.append(SpecError("'value' is a ragged nested list; give a scalar or a rectangular list",
                                             raw.loc_of("value"), label))
        else:
            for i, d in enumerate(shape):
                self.errors += list(check.int_like(d, shape.loc_of(i), f"shape[{i}]"))
            vshape = _value_shape(raw.get("value"))
            static = [d for d in shape if isinstance(d, int)]
            if vshape not in (None, ()) and len(static) == len(shape) and tuple(static) != vshape:
                self.errors.append(SpecError(f"'value' has shape {vshape} but 'shape' says {tuple(static)}",
                                             raw.loc_of("value"), label))
            if any(isinstance(d, int) and d < 0 for d in shape):
                self.errors.append(SpecError("'shape' dimensions must be non-negative", raw.loc_of("shape"), label))
        return dtype, shape

    def _call(self, item, loc: Location, check: Checker, label: str) -> Optional[Call]:
        if not isinstance(item, dict) or len(item) != 1:
            return None  # the schema reported it
        (tname, raw_args), = item.items()
        name_loc = item.key_loc(tname) if isinstance(item, LocDict) else loc
        tdef = TRANSFORMS.get(tname)
        if tname in TRANSFORMS_11:
            self._needs_11(f"the transform {tname!r}", name_loc, label)
        if tdef is None:
            hint = difflib.get_close_matches(str(tname), list(TRANSFORMS), n=1)
            self.errors.append(SpecError(
                f"unknown transform {tname!r}" + (f" (did you mean {hint[0]!r}?)" if hint else
                                                  f"; known transforms: {', '.join(sorted(TRANSFORMS))}"),
                name_loc, label))
            return None
        args_loc = item.loc_of(tname) if isinstance(item, LocDict) else loc
        if isinstance(raw_args, dict) and not ("ref" in raw_args and tdef.short and
                                               tdef.args[tdef.short].kind in ("operand", "ref")) \
                and not ("attr" in raw_args and tdef.short and tdef.args[tdef.short].kind in ("operand", "number")):
            args = dict(raw_args)
            arg_locs = {k: (raw_args.loc_of(k) if isinstance(raw_args, LocDict) else args_loc) for k in args}
            for k in args:
                if k not in tdef.args:
                    hint = difflib.get_close_matches(str(k), list(tdef.args), n=1)
                    self.errors.append(SpecError(
                        f"transform {tname!r} has no argument {k!r}" + (
                            f" (did you mean {hint[0]!r}?)" if hint else f"; its arguments: {', '.join(tdef.args)}"),
                        raw_args.key_loc(k) if isinstance(raw_args, LocDict) else args_loc, label))
        elif tdef.short is not None:
            args = {tdef.short: raw_args}
            arg_locs = {tdef.short: args_loc}
        else:
            self.errors.append(SpecError(f"transform {tname!r} takes a mapping of arguments "
                                         f"({', '.join(tdef.args)})", args_loc, label))
            return None
        unknown = [k for k in args if k not in tdef.args]
        for k, a in tdef.args.items():
            if a.required and k not in args and not difflib.get_close_matches(k, [str(u) for u in unknown], n=1):
                self.errors.append(SpecError(f"transform {tname!r} needs the argument {k!r}", args_loc, label))
        n_before = len(self.errors)
        for k, v in args.items():
            if k in tdef.args:
                self.errors += list(check.check(tdef.args[k], v, arg_locs[k], f"{tname} {k}"))
        if len(self.errors) == n_before and not unknown:
            self._static(tdef, args, args_loc, label)
        return Call(tdef, args, arg_locs, name_loc)

    def _static(self, tdef, args: dict, loc: Location, label: str) -> None:
        """Arguments that are wrong whatever the tensor (a transpose that is no permutation), found now."""
        fn = STATIC_CHECKS.get(tdef.name)
        if fn is None or any(a.required and k not in args for k, a in tdef.args.items()):
            return
        known = {}
        for k, a in tdef.args.items():
            v = args.get(k, a.default)
            if a.kind == "int" and not (isinstance(v, int) and not isinstance(v, bool)) and v is not None:
                return  # an expression: known when planning
            if a.kind == "ints" and not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
                return
            known[k] = v
        try:
            fn(**known)
        except TransformError as e:
            msg = str(e)
            self.errors.append(SpecError(msg if msg.startswith(tdef.name) else f"{tdef.name}: {msg}", loc, label))


def _strings(node, top=None):
    """(top-level key, text) of every string in a raw rule (for features found by their text)."""
    if isinstance(node, str):
        yield top, node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, k if top is None else top)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v, top)


def allowances(raw) -> frozenset:
    """The numeric allowances of an 'allow:' list (wrong entries were reported by the schema)."""
    from ..numeric import ALLOW

    return frozenset(a for a in raw if a in ALLOW) if isinstance(raw, list) else frozenset()


def _value_shape(value) -> Optional[tuple]:
    if not isinstance(value, list):
        return ()
    if not value:
        return (0,)
    subs = [_value_shape(v) for v in value]
    if any(s is None for s in subs) or len(set(subs)) != 1:
        return None
    return (len(value),) + subs[0]
