"""The spec tools: ``validate``, ``specs``, ``formats``, ``transforms``, ``invert`` and ``draft``."""

from __future__ import annotations

import argparse
import json
from typing import TextIO

from ..errors import escape
from ..options import parse_pairs
from .flags import _add_allow_path, _add_force, _add_output, _add_vars, Command, PAIR
from .show import _table


def cmd_validate(args, out: TextIO, err: TextIO) -> int:
    from ..language.load import check_spec

    status = 0
    for path in args.specs:
        spec, errors = check_spec(path, args.allow_path or ())
        if errors:
            status = 1
            for e in errors:
                for single in e.errors:
                    print(escape(single, keep_newlines=True), file=err)
            print(f"{path}: {len(errors)} error{'s' if len(errors) > 1 else ''}", file=err)
        else:
            n = len(spec.rules)
            print(f"{spec.path}: OK ({n} rule{'s' if n != 1 else ''}, spec {spec.name!r})", file=out)
    return status


def cmd_specs(args, out: TextIO, err: TextIO) -> int:
    from ..language.family import families
    from ..resources import shipped_specs
    from ..language.load import check_spec

    specs = shipped_specs()
    if not specs:
        print("no shipped specs found", file=err)
        return 1
    rows = []
    for name, path in specs.items():
        spec, errors = check_spec(str(path))
        desc = spec.description.strip().splitlines()[0] if spec and spec.description else ""
        rows.append([name, desc if not errors else f"(invalid: {len(errors)} errors)"])
    _table(rows, out, ["spec", "description"])
    fams = families()
    if fams:
        print(f"\nfamilies: `mapspec apply NAME` with NAME one of {', '.join(sorted({f.generic for f in fams}))} "
              f"applies the family's spec that reads the source's architecture:", file=out)
        _table([[f.generic, f.spec, f.reads] for f in sorted(fams, key=lambda f: (f.generic, f.spec))], out,
               ["name", "spec", "picked for"])
    return 0


def cmd_formats(args, out: TextIO, err: TextIO) -> int:
    from ..catalog import format_rows

    rows = format_rows()
    if args.json:
        json.dump(rows, out, indent=1)
        print(file=out)
        return 0
    _table([[r["format"], " ".join(r["suffixes"]), r["read"], r["write"], ", ".join(r["read_options"]) or "-",
             ", ".join(r["write_options"]) or "-"] for r in rows], out,
           ["format", "suffixes", "read", "write", "reader/template options", "writer options"])
    print("\nAny readable file can be a target template (-t); a template is opened with the reader options "
          "(--template-option).", file=out)
    for r in rows:
        if r["unavailable"]:
            print(f"note: {r['unavailable']}", file=out)
    return 0


def cmd_transforms(args, out: TextIO, err: TextIO) -> int:
    from ..catalog import transform_detail, transform_rows, transforms_markdown

    if args.name:
        print("\n".join(transform_detail(args.name)), file=out)
    elif args.json:
        json.dump(transform_rows(), out, indent=1)
        print(file=out)
    elif args.markdown:
        out.write(transforms_markdown())
    else:
        _table([[r["transform"], r["signature"], r["doc"]] for r in transform_rows()], out,
               ["transform", "arguments", "what it does"])
        print("\n(ARG): a non-mapping value fills it ({reshape: [2, -1]}); "
              "`mapspec transforms NAME` describes each argument.", file=out)
    return 0


def cmd_invert(args, out: TextIO, err: TextIO) -> int:
    from ..invert import invert, write

    rev = invert(args.spec, source=args.source, source_format=args.source_format, template=args.template,
                 lossy=args.lossy, vars=parse_pairs(args.var, "--var"))
    write(rev, args.output, force=args.force, sync=args.sync)
    for n in rev.notes:
        print(f"note: {n}", file=err)
    for m in rev.missing:
        print(f"missing: {m}", file=err)
    for m in rev.inexact:
        print(f"inexact: {m}", file=err)
    if args.output is None:
        out.write(rev.text)
    else:
        print(f"wrote {args.output}: {rev.rules} rules"
              + (f", {len(rev.missing)} forward rules left out (--lossy)" if rev.missing else ""), file=out)
    return 0


def cmd_draft(args, out: TextIO, err: TextIO) -> int:
    from ..draft import draft, write

    d = draft(args.source, args.template, output=args.output, source_format=args.source_format,
              template_format=args.template_format,
              template_options=parse_pairs(args.template_option, "--template-option"))
    write(d, args.output, args.source, source_format=args.source_format, force=args.force, sync=args.sync)
    if args.output is None:
        out.write(d.text)
    else:
        print(f"wrote {args.output}", file=out)
    print(f"mapped {d.mapped} of {d.total} targets, {len(d.open)} left open"
          + (f", {len(d.unused)} source tensors unused" if d.unused else "")
          + (f"; {len(d.todos)} TODO rule{'s' if len(d.todos) > 1 else ''}: the spec plans once "
             f"{'each is' if len(d.todos) > 1 else 'it is'} resolved" if d.todos else ""),
          file=err if args.output is None else out)
    return 0


def _add_validate(p: argparse.ArgumentParser) -> None:
    p.add_argument("specs", nargs="+", metavar="SPEC")
    _add_allow_path(p)


def _add_invert(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="a spec file, or a shipped spec's name")
    _add_output(p, "where to write the reverse spec (default: print it)")
    p.add_argument("--source", "-s", help="a source file of the forward spec: shapes and dtypes before reshapes "
                                          "and casts, and attribute values, are read from its plan")
    p.add_argument("--source-format", help="the source's format (default: the spec's, else detected)")
    p.add_argument("--template", "-t", help="the forward's target template, if --source needs one")
    _add_vars(p)
    p.add_argument("--lossy", action="store_true", help="leave out rules that lose information (fold_bn, fill, "
                                                        "drop, narrowing casts, rounding) and list what is missing")
    _add_force(p)


def _add_draft(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", "-s", required=True, help="the source checkpoint")
    p.add_argument("--template", "-t", required=True, help="the target: a .prototxt, -symbol.json or checkpoint "
                                                             "(only names and shapes are read)")
    _add_output(p, "where to write the spec (default: print it)")
    p.add_argument("--source-format", help="the source's format (default: detected)")
    p.add_argument("--template-format", help="the template's format (default: detected)")
    p.add_argument("--template-option", action="append", metavar=PAIR,
                   help="a reader option of the template's format (e.g. input_shape=1,3,112,112 for a symbol); "
                        "written into the draft's target.template_options")
    _add_force(p)


def _add_specs(p: argparse.ArgumentParser) -> None:
    pass


def _add_formats(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true")


def _add_transforms(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="describe this transform's arguments")
    p.add_argument("--json", action="store_true")
    p.add_argument("--markdown", action="store_true", help="the transform table as markdown (the manual's reference)")


VALIDATE = Command("validate", "check specs (schema and semantics) without reading any data",
                   _add_validate, cmd_validate)
INVERT = Command("invert", "write the reverse of a spec (target -> source) from each transform's inverse",
                 _add_invert, cmd_invert)
DRAFT = Command("draft", "propose a spec from a source checkpoint and a target template", _add_draft, cmd_draft)
SPECS = Command("specs", "list the shipped specs", _add_specs, cmd_specs)
FORMATS = Command("formats", "list the formats: suffixes, read/write, reader and writer options",
                  _add_formats, cmd_formats)
TRANSFORMS = Command("transforms", "list the transforms with their arguments (or describe one)",
                     _add_transforms, cmd_transforms)
