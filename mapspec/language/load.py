"""Loading a spec: safe YAML -> JSON Schema -> semantic checks -> :class:`Spec`.

Every check yields errors instead of stopping at the first, so that ``mapspec
validate`` reports all mistakes at once.  Rules with schema errors are left out of
the semantic checks (their structure cannot be trusted), every other rule is checked.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Iterator, Optional

from .. import dtypes
from . import family
from ..errors import ErrorList, Location, MapspecError, SpecError
from ..paths import within
from ..resources import shipped_specs
from . import schema, sections
from .model import Endpoint, Spec
from .pattern import Pattern, PatternSyntaxError
from .rules import RuleBuilder, allowances, non_text_names
from .verifycheck import runner_errors
from .yamlsafe import LocDict, load_file

MAX_INCLUDE_DEPTH = 8
RELAXATIONS_11 = ("unused-elements", "overlapping-elements", "ignored-and-matched")  # relaxations a spec must declare 'mapspec: 1.1' to use
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


class _Builder(RuleBuilder):
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
        self.errors += non_text_names(raw_vars, "var", doc.loc)
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
            allow=allowances(doc.get("allow")),
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


def _looks_like_spec(path: str) -> bool:
    """Does the file parse as a YAML mapping with a ``mapspec:`` key?"""
    try:
        doc = load_file(path)
    except SpecError:
        return False
    return isinstance(doc, dict) and "mapspec" in doc


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
