"""What mapspec can do, from its registries: ``mapspec formats`` and ``mapspec transforms``.

Both listings are read from the registries themselves (``FORMATS`` and each format module's
``READ_OPTIONS``/``WRITE_OPTIONS``; ``TRANSFORMS`` with each transform's declared arguments and
docstring), never kept by hand.  The manual's transform reference is :func:`transforms_markdown`'s output,
generated at build time (mapspec/docgen.py).
"""

from __future__ import annotations

import re

from .errors import MapspecError, MissingDependency


def _plain(doc: str) -> str:
    """The first sentence-line of a docstring, reST ``literals`` as markdown `code`."""
    first = doc.strip().split("\n\n")[0]
    return re.sub(r"``([^`]+)``", r"`\1`", " ".join(first.split()))


def format_rows() -> list[dict]:
    """One entry per format: name, suffixes, read/write, its reader and writer options."""
    from .formats import FORMATS, module

    rows = []
    for name, entry in FORMATS.items():
        try:
            mod = module(name)
            read_opts, write_opts = tuple(mod.READ_OPTIONS), tuple(mod.WRITE_OPTIONS)
            available = None
        except MissingDependency as e:  # e.g. a format whose module needs a package not installed
            read_opts, write_opts, available = (), (), str(e)
        rows.append({"format": name, "suffixes": list(entry.suffixes), "description": entry.description,
                     "read": "yes" if entry.has_data else "template only", "template": True,
                     "write": "yes" if entry.has_data else "no",
                     "read_options": list(read_opts), "write_options": list(write_opts) if entry.has_data else [],
                     "unavailable": available})
    return rows


def _arg_text(name: str, arg, short) -> str:
    text = f"({name})" if name == short else name
    if not arg.required and arg.default not in (None, ()):
        text += "=" + (str(arg.default).lower() if isinstance(arg.default, bool) else str(arg.default))
    return text


def transform_rows() -> list[dict]:
    """One entry per transform (sorted by name): its arguments as declared, and its one-line doc."""
    from .transforms import TRANSFORMS

    rows = []
    for name in sorted(TRANSFORMS):
        t = TRANSFORMS[name]
        rows.append({"transform": name, "doc": _plain(t.doc), "shorthand": t.short,
                     "signature": ", ".join(_arg_text(n, a, t.short) for n, a in t.args.items()),
                     "args": [{"name": n, "kind": a.kind, "required": a.required,
                               "default": list(a.default) if isinstance(a.default, tuple) else a.default,
                               "choices": list(a.choices), "doc": a.doc} for n, a in t.args.items()]})
    return rows


def transforms_markdown() -> str:
    """The transform table in markdown (`mapspec transforms --markdown`, the manual's reference page)."""
    lines = ["| transform | arguments | what it does |", "|---|---|---|"]
    for r in transform_rows():
        lines.append(f"| `{r['transform']}` | {r['signature']} | {r['doc']} |")
    return "\n".join(lines) + "\n"


def transform_detail(name: str) -> list[str]:
    """``mapspec transforms NAME``: the transform's arguments one per line."""
    rows = {r["transform"]: r for r in transform_rows()}
    if name not in rows:
        raise MapspecError(f"unknown transform {name!r}; known transforms: {', '.join(rows)}")
    r = rows[name]
    out = [f"{name}: {r['doc']}"]
    if r["shorthand"]:
        out.append(f"  a non-mapping value fills `{r['shorthand']}`: {{{name}: VALUE}}")
    for a in r["args"]:
        need = "required" if a["required"] else ("optional" if a["default"] in (None, []) else
                                                 f"default {a['default']}")
        choices = f" (one of {', '.join(map(str, a['choices']))})" if a["choices"] else ""
        out.append(f"  {a['name']}: {a['kind']}, {need}{choices}" + (f"; {a['doc']}" if a["doc"] else ""))
    from .transforms import TRANSFORMS

    inverse = TRANSFORMS[name].inverse
    out.append("  inverse (mapspec invert): " + (_plain(inverse.__doc__ or "declared") if inverse else "none"))
    return out
