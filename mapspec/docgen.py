"""The manual's reference pages, generated from the code (``docs/hooks.py`` calls these at ``mkdocs build``).

Each page is read from the one home of what it describes, never kept by hand: the command line
from the argument parser (:func:`mapspec.cli.build_parser`), transforms and formats from their
registries (:mod:`mapspec.catalog`), the spec language from the JSON Schema, the Python API
from the docstrings of ``mapspec.__all__``.
"""

from __future__ import annotations

import argparse
import inspect
import json

PAGES = {}  # "reference/x.md" -> function returning the page's markdown


def page(path: str):
    def register(fn):
        if path in PAGES:
            raise ValueError(f"reference page {path!r} generated twice")
        PAGES[path] = fn
        return fn
    return register


def _cell(text) -> str:
    """Text safe inside a markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _option_row(a: argparse.Action) -> list:
    flags = ", ".join(f"`{s}`" for s in a.option_strings) or f"`{a.metavar or a.dest}`"
    if a.option_strings and a.nargs != 0 and not isinstance(a, argparse.BooleanOptionalAction):
        metavar = a.metavar or a.dest.upper()
        flags += f" *{metavar}*" if isinstance(metavar, str) else ""
    text = a.help or ""
    if a.choices and a.option_strings:
        text += (" " if text else "") + "(one of " + ", ".join(f"`{c}`" for c in a.choices) + ")"
    if a.required and a.option_strings:
        text += " (required)"
    return [flags, _cell(text) or "-"]


@page("reference/cli.md")
def cli_markdown() -> str:
    """Every command with its usage and options, from the argument parser itself."""
    from .cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    lines = ["# Command line", "", "Generated from `mapspec`'s argument parser at build time "
             "(`mapspec COMMAND --help` prints the same).", "",
             "| command | what it does |", "|---|---|"]
    lines += [f"| [`{name}`](#{name}) | {_cell(helps.get(name, ''))} |" for name in sub.choices]
    for name, p in sub.choices.items():
        usage = " ".join(p.format_usage().split())
        usage = usage[len("usage: "):] if usage.startswith("usage: ") else usage
        lines += ["", f"## {name}", "", _cell(helps.get(name, "")), "", "```text", usage, "```", ""]
        actions = [a for a in p._actions if a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)]
        if actions:
            lines += ["| argument | meaning |", "|---|---|"] + [f"| {' | '.join(_option_row(a))} |" for a in actions]
    return "\n".join(lines) + "\n"


@page("reference/transforms.md")
def transforms_page() -> str:
    """The transform table and each transform's arguments and inverse, from the registry."""
    from .catalog import transform_detail, transform_rows, transforms_markdown

    lines = ["# Transforms", "", "Generated from the transform registry (`mapspec transforms --markdown`; "
             "`mapspec transforms NAME` prints one entry). `(ARG)` is the argument a non-mapping value fills: "
             "`{reshape: [2, -1]}`.", "", transforms_markdown()]
    for r in transform_rows():
        detail = transform_detail(r["transform"])
        lines += [f"## {r['transform']}", "", _cell(detail[0].split(": ", 1)[1]), ""]
        lines += ["| argument | |", "|---|---|"]
        for d in detail[1:]:
            key, _, text = d.strip().partition(": ")
            lines.append(f"| {_cell(key)} | {_cell(text)} |")
        lines.append("")
    return "\n".join(lines)


@page("reference/formats.md")
def formats_page() -> str:
    """Every format with its suffixes and options, from the format registry."""
    from .catalog import format_rows

    lines = ["# Formats (registry)", "", "Generated from the format registry (`mapspec formats`). "
             "What each format reads and writes in detail: [Formats](../guide/formats.md).", "",
             "| format | suffixes | read | write | reader / template options | writer options | |",
             "|---|---|---|---|---|---|---|"]
    for r in format_rows():
        sfx = " ".join(f"`{s}`" for s in r["suffixes"]) or "-"
        opts = [", ".join(f"`{o}`" for o in r[k]) or "-" for k in ("read_options", "write_options")]
        lines.append(f"| `{r['format']}` | {sfx} | {r['read']} | {r['write']} | {opts[0]} | {opts[1]} | "
                     f"{_cell(r['description'] or '')} |")
    lines += ["", "Any readable file can be a target template (`-t`); a template is opened with the reader "
              "options (`--template-option`)."]
    return "\n".join(lines) + "\n"


def _type(node: dict) -> str:
    """A short reading of a schema node's type."""
    if "$ref" in node:
        ref = node["$ref"].rsplit("/", 1)[-1]
        return f"[{ref}](#{ref.lower()})"
    if "const" in node:
        return f"`{json.dumps(node['const'])}`"
    if "enum" in node:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in node["enum"])
    for key in ("oneOf", "anyOf"):
        if key in node:
            return " or ".join(_type(n) for n in node[key])
    t = node.get("type", "any")
    t = " or ".join(t) if isinstance(t, list) else t
    if t == "array" and isinstance(node.get("items"), dict):
        return f"list of {_type(node['items'])}"
    if t == "object" and isinstance(node.get("additionalProperties"), dict) and "properties" not in node:
        return f"mapping to {_type(node['additionalProperties'])}"
    return t


def _properties(node: dict) -> list:
    props = node.get("properties") or {}
    if not props:
        return []
    required = set(node.get("required", ()))
    rows = ["| key | type | |", "|---|---|---|"]
    for k, v in props.items():
        need = " (required)" if k in required else ""
        rows.append(f"| `{k}`{need} | {_type(v)} | {_cell(v.get('description', ''))} |")
    return rows


@page("reference/schema.md")
def schema_page() -> str:
    """The spec language's keys, from the JSON Schema the validator runs."""
    from .resources import schema_path

    with open(schema_path(), encoding="utf-8") as f:
        schema = json.load(f)
    lines = ["# Spec schema", "", f"Generated from the JSON Schema `{schema.get('$id', 'mapspec-1.schema.json')}` "
             "(draft 2020-12) that `mapspec validate` runs first. What the keys mean, with examples: "
             "[The spec language](../guide/spec-language.md).", "", _cell(schema.get("description", "")), "",
             "## Top level", ""] + _properties(schema)
    for name, node in schema.get("$defs", {}).items():
        lines += ["", f"## {name}", ""]
        if node.get("description"):
            lines += [_cell(node["description"]), ""]
        rows = _properties(node)
        lines += rows if rows else [f"Type: {_type(node)}"]
    return "\n".join(lines) + "\n"


@page("reference/api.md")
def api_page() -> str:
    """The public Python API (``mapspec.__all__``) with signatures and docstrings."""
    import mapspec

    lines = ["# Python API", "", "Generated from the docstrings of `mapspec.__all__`. "
             "A walk-through: [Python API](../guide/python-api.md).", ""]
    for name in mapspec.__all__:
        obj = getattr(mapspec, name)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)):
            lines += [f"## `{name}`", "", f"`{obj!r}`", ""]
            continue
        try:
            sig = str(inspect.signature(obj))
        except (TypeError, ValueError):
            sig = "(...)"
        kind = "class " if inspect.isclass(obj) else ""
        lines += [f"## `{name}`", "", "```python", f"{kind}mapspec.{name}{sig}", "```", "",
                  inspect.cleandoc(obj.__doc__ or "(no docstring)").replace("``", "`"), ""]
        if inspect.isclass(obj) and obj.__mro__[1] is not object:
            lines += [f"Subclass of `{obj.__mro__[1].__name__}`.", ""]
    return "\n".join(lines)


@page("reference/generators.md")
def generators_page() -> str:
    """The generators a spec's ``generate:`` may name, from their registry."""
    from .language.generators import GENERATORS

    lines = ["# Generators", "", "Generated from the generator registry (`mapspec/generators.py`): what a rule "
             "without `from` or a `target.metadata` entry may `generate:` (spec language 1.1; see "
             "[the spec language](../guide/spec-language.md)).", "",
             "| generator | makes | arguments | what it computes |", "|---|---|---|---|"]
    for name in sorted(GENERATORS):
        g = GENERATORS[name]
        args = ", ".join(f"`{a}` ({kind})" for a, kind in g.args.items()) or "-"
        lines.append(f"| `{name}` | {'a tensor' if g.returns == 'tensor' else 'a value'} | {args} | "
                     f"{_cell(inspect.cleandoc(g.fn.__doc__ or g.doc).split(chr(10) * 2)[0]).replace('``', '`')} |")
    return "\n".join(lines) + "\n"


def _param_type(p) -> str:
    kind = type(p).__name__
    if hasattr(p, "low"):
        return f"{kind.lower()} {p.low}..{p.high}"
    if hasattr(p, "values"):
        return "one of " + ", ".join(f"`{v}`" for v in p.values)
    return kind.lower()


@page("reference/models.md")
def models_page() -> str:
    """The model factories a spec's ``verify:`` section may name, from their registry."""
    from .models.registry import FACTORIES

    lines = ["# Model factories", "", "Generated from `mapspec.models.registry`: the models a spec's `verify:` "
             "section may name (`model: NAME, params: {...}`), with the only parameters a spec may pass. Your own "
             "model code is named on the command line (`--source-model`/`--target-model file.py:factory`); see "
             "[Verify](../guide/verify.md).", "",
             "| name | builds | parameters a spec may pass | takes the checkpoint path |", "|---|---|---|---|"]
    for name in sorted(FACTORIES):
        f = FACTORIES[name]
        params = ", ".join(f"`{k}` ({_param_type(p)})" for k, p in f.params.items()) or "-"
        lines.append(f"| `{name}` | `{f.ref}` | {params} | {'yes' if f.checkpoint else '-'} |")
    return "\n".join(lines) + "\n"
