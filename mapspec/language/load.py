"""Loading a spec: safe YAML -> JSON Schema -> semantic checks -> :class:`Spec`.

Every check yields errors instead of stopping at the first, so that ``mapspec
validate`` reports all mistakes at once.  Rules with schema errors are left out of
the semantic checks (their structure cannot be trusted), every other rule is checked.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Iterator, Optional

from .. import dtypes
from .. import family
from ..errors import ErrorList, Location, MapspecError, SpecError
from ..paths import within
from ..resources import shipped_specs
from ..transforms import STATIC_CHECKS, TRANSFORMS, TransformError
from . import schema, sections
from .args import Checker
from .expr import FUNCTIONS, ExprError, Template
from .model import Call, Endpoint, Rule, Spec
from .pattern import Pattern, PatternSyntaxError
from .verifycheck import runner_errors
from .yamlsafe import LocDict, load_file

MAX_INCLUDE_DEPTH = 8
MAX_EACH = 100_000
TRANSFORMS_11 = ("rope_permute",)
RELAXATIONS_11 = ("unused-elements", "overlapping-elements", "ignored-and-matched")  # transforms a spec must declare 'mapspec: 1.1' to use
_CALL = re.compile(r"\{[^{}]*\b(?:" + "|".join(FUNCTIONS) + r")\s*\(")  # shape( inside an expression
# transforms that keep the element count (and, but for squeeze/unsqueeze, the number of axes)
SAME_ELEMENTS = ("reshape", "transpose", "squeeze", "unsqueeze", "rope_permute", "cast", "reverse", "fill",
                 "mul", "div", "add", "sub")
MAX_SPEC_FILES = 256  # spec files loaded for one spec, includes counted each time they are loaded
MAX_RULES = 100_000  # rules of a spec and everything it includes


def resolve_spec_path(name_or_path: str) -> str:
    """A path to an existing file, or the name of a shipped spec (``densenet/caffe-to-torchvision``)."""
    p = Path(name_or_path)
    try:
        if p.is_file():
            return str(p)
    except (OSError, ValueError) as e:  # a name too long, a NUL byte, ...
        raise SpecError(f"cannot open: {getattr(e, 'strerror', None) or e}", Location(name_or_path)) from None
    shipped = shipped_specs()
    key = name_or_path[:-5] if name_or_path.endswith(".yaml") else name_or_path
    if key in shipped:
        return str(shipped[key])
    if p.exists():
        raise SpecError("is not a file", Location(str(p)))
    hint = difflib.get_close_matches(key, list(shipped), n=3, cutoff=0.75)
    msg = "no such spec file, and no shipped spec of that name"
    if hint:
        msg += f" (shipped specs: did you mean {', '.join(hint)}?)"
    else:
        msg += "; `mapspec specs` lists the shipped specs"
    raise SpecError(msg, Location(name_or_path))


PATH_OPTIONS = ("symbol",)  # reader options that name a file (MXNet's -symbol.json)
# Reader options that guard against hostile files: only the command line may set them.
SAFETY_OPTIONS = ("isolate", "timeout")


class _Budget:
    """What one spec and all it includes may load (shared by the builders of an include tree)."""

    def __init__(self, roots: tuple):
        self.roots = roots
        self.files = 0
        self.rules = 0


def spec_roots(path: str, allow_paths=()) -> tuple:
    """The folders a spec's paths may reach: its own folder (a shipped spec: the shipped specs' folder)
    and the folders the user allowed on the command line (``--allow-path``)."""
    from ..resources import specs_dir

    real = os.path.realpath(path)
    shipped = os.path.realpath(specs_dir())
    own = shipped if real.startswith(shipped + os.sep) else os.path.dirname(real)
    return (own,) + tuple(os.path.realpath(p) for p in allow_paths)


def _loc(d, key, default: Location) -> Location:
    return d.loc_of(key) if isinstance(d, LocDict) else default


def _endpoint(raw, spec_dir: str, default: Location) -> Endpoint:
    if not isinstance(raw, dict):
        return Endpoint(loc=default)
    # Values of the wrong type were reported by the schema; they are left out here.
    def text(key: str) -> Optional[str]:
        v = raw.get(key)
        return v if isinstance(v, str) else None

    def mapping(key: str) -> dict:
        v = raw.get(key)
        return dict(v) if isinstance(v, dict) else {}

    template = text("template")
    if template is not None:
        template = os.path.normpath(os.path.join(spec_dir, template))
    options = mapping("options")
    for key in PATH_OPTIONS:
        if isinstance(options.get(key), str):  # like every path in a spec: relative to the spec
            options[key] = os.path.normpath(os.path.join(spec_dir, options[key]))
    return Endpoint(format=text("format"), template=template, dtype=text("dtype"), options=options,
                    template_options=mapping("template_options"),
                    metadata=raw["metadata"] if isinstance(raw.get("metadata"), dict) else {},  # keeps locations
                    tokenizer=raw["tokenizer"] if isinstance(raw.get("tokenizer"), dict) else None,
                    companions=raw["companions"] if isinstance(raw.get("companions"), dict) else None,
                    file=text("file"),
                    loc=getattr(raw, "loc", default))


def _non_text_names(mapping, what: str, default: Location, rule: Optional[str] = None) -> list[SpecError]:
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


class _Builder:
    def __init__(self, path: str, stack: tuple = (), budget: Optional[_Budget] = None, allow_paths=()):
        self.path = path
        self.stack = stack + (os.path.abspath(path),)
        self.errors: list[MapspecError] = []
        self.budget = budget or _Budget(spec_roots(path, allow_paths))

    def confined(self, path: str, raw: str, what: str, loc: Location) -> bool:
        """Is ``path`` (``raw`` as the spec wrote it) inside the spec's folders?  Else an error, and
        the file is not opened."""
        if within(path, self.budget.roots):
            return True
        self.errors.append(SpecError(f"{what} {raw!r} is outside the spec's folder {self.budget.roots[0]}; a spec "
                                     f"reaches only files under its own folder (pass --allow-path DIR to allow "
                                     f"another)", loc))
        return False

    def build(self, first_index: int = 1) -> Optional[Spec]:
        try:
            doc = load_file(self.path)
        except SpecError as e:
            self.errors.append(e)
            return None
        if not isinstance(doc, LocDict):
            self.errors.append(SpecError("a spec is a mapping (mapspec: 1, rules: [...], ...), not "
                                         f"{type(doc).__name__}", Location(self.path, 1, 1)))
            return None
        schema_errors = list(schema.check(doc))
        self.version = doc.get("mapspec")
        self.errors += schema_errors + family.check(doc, doc.key_loc, self.version)
        skip = schema.failing_rules(schema_errors, doc)
        spec_dir = os.path.dirname(os.path.abspath(self.path))
        raw_vars = doc.get("vars") if isinstance(doc.get("vars"), dict) else {}
        self.errors += _non_text_names(raw_vars, "var", doc.loc)
        vars_ = {k: v for k, v in raw_vars.items() if isinstance(k, str)}
        spec = Spec(
            path=self.path,
            name=doc.get("name") if isinstance(doc.get("name"), str) else Path(self.path).stem,
            description=doc.get("description") if isinstance(doc.get("description"), str) else "",
            source=_endpoint(doc.get("source"), spec_dir, doc.loc),
            target=_endpoint(doc.get("target"), spec_dir, doc.loc),
            vars=vars_,
            rules=[],
            ignore=[],
            relax={r for r in doc.get("relax") if isinstance(r, str)} if isinstance(doc.get("relax"), list) else set(),
            verify=doc.get("verify") if isinstance(doc.get("verify"), dict) else None,
            allow=_allow(doc.get("allow")),
        )
        raw_config = doc.get("config")
        if raw_config is not None:
            self._needs_11("a 'config:' section", doc.key_loc("config"))
        spec.config = sections.config_section(raw_config)
        self.errors += sections.check_config(raw_config)
        for i, r in enumerate(doc.get("relax") if isinstance(doc.get("relax"), list) else []):
            if r in RELAXATIONS_11:
                self._needs_11(f"relax {r!r}", doc["relax"].loc_of(i))
        self._check_endpoint(spec.source, doc, "source")
        self._check_endpoint(spec.target, doc, "target")
        self._check_verify(spec.verify, spec_dir, doc)
        self.errors += runner_errors(doc.get("verify"), doc.loc)
        raw_rules = doc.get("rules") if isinstance(doc.get("rules"), list) else []
        self.budget.rules += len(raw_rules)
        if self.budget.rules > MAX_RULES:
            self.errors.append(SpecError(f"the spec and its includes hold more than {MAX_RULES} rules "
                                         f"(include chain: {self.chain()})", doc.loc))
            return None
        # Included specs first: their vars are visible here (ours win); their rules come after ours.
        included = []
        includes = doc.get("include") if isinstance(doc.get("include"), list) else []
        next_index = first_index + len(raw_rules)
        for i, inc in enumerate(includes):
            if not isinstance(inc, str):
                continue
            other = self._include(inc, includes.loc_of(i), spec_dir, next_index)
            if other is not None:
                included.append(other)
                next_index += len(other.rules)
                for k, v in other.vars.items():
                    spec.vars.setdefault(k, v)
                sections.merge_included(spec, other)
                spec.includes.append(other.path)
                spec.includes += other.includes
        # vars the config file gives are names the rules may use (their values come when planning)
        known_vars = {**{k: None for k in (spec.config or {}).get("vars", {})}, **spec.vars}
        spec.target.metadata = sections.drop_removed(spec.target.metadata)
        self.errors += sections.check_metadata(spec.target.metadata, spec.target.loc or doc.loc, set(known_vars))
        for i, raw in enumerate(raw_rules):
            if i in skip or not isinstance(raw, LocDict):
                continue
            rule = self._rule(raw, first_index + i, known_vars, raw_rules.loc_of(i), allow=spec.allow)
            if rule is not None:
                spec.rules.append(rule)
        ignore = doc.get("ignore") if isinstance(doc.get("ignore"), list) else []
        for i, text in enumerate(ignore):
            if not isinstance(text, str):
                continue
            loc = ignore.loc_of(i)
            try:
                spec.ignore.append((Pattern(text), loc))
                if not spec.ignore[-1][0].is_10:
                    self._needs_11("an optional or alternative name part <...|...>", loc)
            except PatternSyntaxError as e:
                self.errors.append(SpecError(f"ignore pattern: {e}", Location(loc.file, loc.line, loc.col + e.column)))
        for other in included:
            spec.rules += sections.unreplaced(spec.rules, other.rules)
            spec.ignore += other.ignore
        return spec

    def chain(self) -> str:
        return " -> ".join(os.path.basename(p) for p in self.stack)

    def _check_verify(self, cfg, spec_dir: str, doc: LocDict) -> None:
        """verify.source/target.graph and .config: files the spec names, confined like the others."""
        if not isinstance(cfg, dict):
            return
        for side in ("source", "target"):
            sc = cfg.get(side)
            for key in ("graph", "config"):
                if isinstance(sc, dict) and isinstance(sc.get(key), str):
                    path = os.path.join(spec_dir, sc[key])
                    self.confined(path, sc[key], f"verify {side} {key}", _loc(sc, key, doc.loc))

    def _check_endpoint(self, ep: Endpoint, doc: LocDict, key: str) -> None:
        raw = doc.get(key)
        if ep.tokenizer is not None and key != "target":
            self.errors.append(SpecError(f"{key}.tokenizer: only a target takes a tokenizer", _loc(raw, "tokenizer",
                                                                                               doc.loc)))
        if ep.file is not None and key != "target":
            self.errors.append(SpecError(f"{key}.file: only a target names its file in a folder output",
                                         _loc(raw, "file", doc.loc)))
        if ep.companions is not None and key != "target":
            self.errors.append(SpecError(f"{key}.companions: only a target has companion files",
                                         _loc(raw, "companions", doc.loc)))
        for okey in ("options", "template_options"):
            opts = raw.get(okey) if isinstance(raw, dict) else None
            for name in (opts or {}) if isinstance(opts, dict) else ():
                if name in SAFETY_OPTIONS:
                    self.errors.append(SpecError(
                        f"{key}.{okey}: {name!r} is a safety option of the reader; only the command line may set "
                        f"it (a spec must not turn off the guards against hostile files)",
                        _loc(opts, name, doc.loc)))
        for name in PATH_OPTIONS:
            if isinstance(ep.options.get(name), str):
                self.confined(ep.options[name], raw["options"][name], f"{key}.options.{name}",
                              _loc(raw.get("options"), name, doc.loc))
        if ep.template is not None and not self.confined(ep.template, raw.get("template"), f"{key} template",
                                                         _loc(raw, "template", ep.loc or doc.loc)):
            ep.template = None
        if ep.template is not None and not os.path.isfile(ep.template):
            self.errors.append(SpecError(f"{key} template {ep.template!r} does not exist (paths are relative to "
                                         f"the spec file)", _loc(raw, "template", ep.loc or doc.loc)))
        if ep.dtype is not None:
            try:
                ep.dtype = dtypes.canonical(ep.dtype)
            except KeyError:
                self.errors.append(SpecError(f"unknown dtype {ep.dtype!r}", _loc(raw, "dtype", doc.loc)))
        if ep.format is not None:
            from ..formats import ALIASES, FORMATS

            name = ALIASES.get(ep.format, ep.format)
            if name not in FORMATS:
                hint = difflib.get_close_matches(ep.format, list(FORMATS), n=1)
                self.errors.append(SpecError(
                    f"unknown format {ep.format!r}" + (f" (did you mean {hint[0]!r}?)" if hint else
                                                       f"; known: {', '.join(FORMATS)}"),
                    _loc(raw, "format", doc.loc)))
            else:
                ep.format = name

    def _include(self, inc: str, loc: Location, spec_dir: str, first_index: int) -> Optional[Spec]:
        path = os.path.normpath(os.path.join(spec_dir, inc))
        if self.budget.files > MAX_SPEC_FILES:
            return None  # reported once already; load nothing more
        if not self.confined(path, inc, "include", loc):
            return None
        if os.path.abspath(path) in self.stack:
            self.errors.append(SpecError(f"include {inc!r} includes itself (cycle: {self.chain()} -> "
                                         f"{os.path.basename(path)})", loc))
            return None
        if len(self.stack) >= MAX_INCLUDE_DEPTH:
            self.errors.append(SpecError(f"includes nested deeper than {MAX_INCLUDE_DEPTH} (chain: {self.chain()} "
                                         f"-> {os.path.basename(path)})", loc))
            return None
        if not os.path.isfile(path):
            self.errors.append(SpecError(f"included spec {inc!r} does not exist or is not a regular file (paths "
                                         f"are relative to the spec file)", loc))
            return None
        self.budget.files += 1
        if self.budget.files > MAX_SPEC_FILES:
            if self.budget.files == MAX_SPEC_FILES + 1:  # once, not once per remaining include
                self.errors.append(SpecError(f"includes load more than {MAX_SPEC_FILES} spec files (each include "
                                             f"counts every time it is loaded; chain: {self.chain()} -> "
                                             f"{os.path.basename(path)})", loc))
            return None
        sub = _Builder(path, self.stack, self.budget)
        other = sub.build(first_index)
        if sub.errors and not _looks_like_spec(path):
            # Not a spec at all: say so without repeating anything of its content.
            self.errors.append(SpecError(f"included file {inc!r} is not a mapspec spec", loc))
            return None
        self.errors += sub.errors
        return other

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
        bad_names = _non_text_names(each, "'each' variable", loc, label)
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
                    allow=allow | _allow(raw.get("allow")) | (parent.allow if parent is not None else frozenset()))
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


def _looks_like_spec(path: str) -> bool:
    """Does the file parse as a YAML mapping with a ``mapspec:`` key?"""
    try:
        doc = load_file(path)
    except SpecError:
        return False
    return isinstance(doc, dict) and "mapspec" in doc


def _allow(raw) -> frozenset:
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


def check_spec(path: str, allow_paths=()) -> tuple[Optional[Spec], list[MapspecError]]:
    """Load and check a spec; returns (spec, errors) without raising for spec mistakes.

    Paths in the spec (includes, templates, verify graphs, a symbol file) must lie under the
    spec's folder (a shipped spec: the shipped specs' folder) or one of ``allow_paths``."""
    try:
        resolved = resolve_spec_path(path)
    except SpecError as e:
        return None, [e]
    b = _Builder(resolved, allow_paths=allow_paths)
    spec = b.build()
    # Best first: in file order, so that the first message is the first mistake in the file.  A file
    # included several times reports its mistakes once.
    unique = list({str(e): e for e in b.errors}.values())
    errors = sorted(unique, key=lambda e: (getattr(e, "file", "") or "", getattr(e, "line", 0),
                                             getattr(e, "col", 0)))
    return spec, errors


def load_spec(path: str, allow_paths=()) -> Spec:
    """Load, schema-check and semantically check a spec (a path or a shipped spec's name).

    Raises :class:`~mapspec.errors.SpecError` (one mistake) or
    :class:`~mapspec.errors.ErrorList` (several), each located at file:line:col.
    """
    spec, errors = check_spec(path, allow_paths)
    if errors:
        if len(errors) == 1:
            raise errors[0]
        raise ErrorList(errors)
    return spec


def iter_errors(path: str) -> Iterator[MapspecError]:
    yield from check_spec(path)[1]
