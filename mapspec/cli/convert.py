"""``mapspec plan`` and ``mapspec apply``: a spec and the command line's options into a plan, printed
or streamed into the output."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from typing import TextIO

from ..errors import MapspecError, UsageError, escape
from ..options import parse_pairs
from .flags import (PAIR, Command, _add_force, _add_output, _add_plan_args, _add_progress, _check_flag_options,
                    _Deprecated, _jobs, _size_arg)
from .show import _shape, _size, _table


def _close(p) -> None:
    """Release the plan's readers (memory maps, open files)."""
    p.source.close()
    if p.template is not None:
        p.template.close()


def _spec_from_args(args):
    """The spec with the command line's --source-option / --template-option added to its own options."""
    from ..language.family import resolve
    from ..formats import detect
    from ..language.load import load_spec

    picked = resolve(args.spec, args.source)
    args.picked = f"{args.spec}: the source's architecture picks {picked}" if picked != args.spec else None
    spec = load_spec(picked, args.allow_path or ())
    src = parse_pairs(args.source_option, "--source-option")
    tmpl = parse_pairs(args.template_option, "--template-option")
    _check_flag_options("--source-option", args.source_format or spec.source.format or (detect(args.source) if src
                                                                                         else None), src, "read")
    template = args.template or spec.target.template
    _check_flag_options("--template-option", detect(template) if tmpl and template else None, tmpl, "read")
    if tmpl and not template:
        raise UsageError("--template-option: there is no template (give --template, or target.template in the spec)")
    if src or tmpl:
        spec = dataclasses.replace(
            spec, source=dataclasses.replace(spec.source, options={**spec.source.options, **src}),
            target=dataclasses.replace(spec.target, template_options={**spec.target.template_options, **tmpl}))
    return spec


def _plan_from_args(args):
    from ..engine import plan

    return plan(_spec_from_args(args), args.source, template=args.template, target_format=args.target_format,
                output=getattr(args, "output", None), relax=tuple(args.relax or ()),
                source_format=args.source_format, vars=parse_pairs(args.var, "--var"), vars_file=args.vars_file,
                no_tokenizer=args.no_tokenizer, tokenizer_pre=args.tokenizer_pre)


def _print_plan(p, out: TextIO) -> None:
    def source(s) -> str:
        if s.parts:
            return f"{s.sources[0]} (+{len(s.sources) - 1} stacked)"
        if s.source is None:
            return f"(generated: {next(iter(s.rule.generate))})" if s.rule.generate else "(constant)"
        return s.source

    rows = [[source(s), _shape(s.in_meta.shape), s.transforms_text,
             s.target, _shape(s.out_meta.shape), s.out_meta.dtype] for s in p.steps]
    if rows:
        _table(rows, out, ["source", "shape", "transforms", "target", "shape", "dtype"])
    sm = p.summary()
    print(f"\n{sm['outputs']} outputs ({_size(sm['output_bytes'])}) from {sm['source_tensors']} source tensors: "
          f"{sm['matched']} matched, {sm['referenced']} referenced, {sm['ignored']} ignored, {sm['dropped']} dropped, "
          f"{sm['unused']} unused; "
          f"{sm['constants']} constants", file=out)
    for w in p.warnings:
        print(f"warning: {escape(w, keep_newlines=True)}", file=out)


def cmd_plan(args, out: TextIO, err: TextIO) -> int:
    p = _plan_from_args(args)
    try:
        return _report_plan(p, args, out, err)
    finally:
        _close(p)


def _report_plan(p, args, out: TextIO, err: TextIO) -> int:
    if getattr(args, "picked", None) and not args.json:
        print(args.picked, file=out)
    if args.json:
        json.dump(p.to_json(), out, indent=1)
        print(file=out)
    else:
        _print_plan(p, out)
        for e in p.errors:
            for single in e.errors:
                print(escape(single, keep_newlines=True), file=err)
        print(f"coverage: {p.verdict}", file=out)
        if p.ok:
            from ..engine import check_size

            try:
                check_size(p)
            except MapspecError as e:  # what apply would refuse unless allowed
                print(f"note: apply would refuse this: {escape(e)}", file=out)
    return 0 if p.ok else 1


def cmd_apply(args, out: TextIO, err: TextIO) -> int:
    p = _plan_from_args(args)
    try:
        return _apply_plan(p, args, out, err)
    finally:
        _close(p)


def _check_paths(p, args) -> None:
    """--output and --report: never an input, never each other (checked by the library's guard, which
    apply repeats, before anything is converted)."""
    from ..guard import check

    check(p, args.output, force=args.force, report=args.report)


def _apply_plan(p, args, out: TextIO, err: TextIO) -> int:
    from ..engine import execute
    from ..formats import atomic_output, output_format
    from ..progress import plan_progress

    p.check()
    _check_paths(p, args)
    flag = args.progress if args.progress is not None or not args.quiet else False
    target_options = parse_pairs(args.target_option, "--target-option")
    if args.max_shard_size is not None:
        target_options["max_shard_size"] = args.max_shard_size
    # a sharded output: output_format gives its shards' format, which takes the options (max_shard_size
    # is the sharded writer's own)
    _check_flag_options("--target-option", output_format(args.output, p.target_format),
                        {k: v for k, v in target_options.items() if k != "max_shard_size"}, "write")
    with plan_progress(err, p, "apply", flag) as progress:
        result = execute(p, args.output, force=args.force, progress=progress, target_options=target_options,
                         jobs=args.jobs, max_output=args.max_output_size, sync=args.sync,
                         outtype=args.outtype)
    sm = p.summary()
    wrote = (f"wrote {escape(result.output)}: {result.tensors} tensors, {_size(result.bytes_written)} in "
             f"{result.seconds:.2f} s ({sm['matched']} matched, {sm['referenced']} referenced, "
             f"{sm['ignored']} ignored, {sm['dropped']} dropped, {sm['constants']} constants)")
    if result.companions:
        wrote += f"; beside it: {', '.join(escape(os.path.basename(c)) for c in result.companions)}"
    if args.report:
        try:
            with atomic_output(args.report, force=args.force, what="--report", anonymous=True,
                               sync=args.sync) as tmp, \
                    open(tmp, "w", encoding="utf-8") as f:
                json.dump(result.report, f, indent=1)
        except MapspecError as e:
            raise MapspecError(f"{wrote}, but the report was not written: {e}") from None
        except KeyboardInterrupt as e:  # Ctrl-C, SIGTERM, SIGHUP after the output was in place
            from ..files import PUBLISHED

            if PUBLISHED and PUBLISHED[-1] == str(args.report):  # ... and after the report was too
                raise
            print(f"mapspec: {wrote}, but the report was not written (interrupted)", file=err)
            return 128 + getattr(e, "signum", 2)
    if not args.quiet:
        for w in p.warnings:
            print(f"warning: {escape(w, keep_newlines=True)}", file=err)
        if getattr(args, "picked", None):
            print(args.picked, file=out)
        print(wrote, file=out)
    return 0


def _add_plan(p: argparse.ArgumentParser) -> None:
    _add_plan_args(p)
    p.add_argument("--json", action="store_true")


def _add_apply(p: argparse.ArgumentParser) -> None:
    _add_plan_args(p)
    _add_output(p, "the file to write (required); a directory (DIR/) or DIR/model.safetensors.index.json writes "
                   "Hugging Face shards and their index")
    p.add_argument("--max-shard-size", metavar="SIZE",
                   help="largest shard of a sharded output, e.g. 5GB (the default; decimal units as Hugging Face) "
                        "or 2GiB")
    p.add_argument("--jobs", "-j", type=_jobs, metavar="N",
                   help="threads transforming and writing tensors at once (default: the cores; safetensors "
                        "outputs, other formats are written by one)")
    p.add_argument("--outtype", choices=("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "auto"),
                   help="GGUF outputs: the type of the weight matrices, chosen per tensor as llama.cpp's "
                        "convert_hf_to_gguf.py does (norms, biases, 1-D tensors F32; rows that are not whole "
                        "blocks F16); auto: the source's bf16/f16. Sets general.file_type. Safetensors/torch "
                        "outputs: every float tensor in f32, f16 or bf16 (auto: the source's matrices' dtype)")
    _add_force(p)
    p.add_argument("--target-option", action="append", metavar=PAIR,
                   help="a writer option of the output's format, added to the spec's target.options")
    p.add_argument("--option", dest="target_option", action=_Deprecated, new="--target-option", append=True,
                   help=argparse.SUPPRESS)
    p.add_argument("--report", metavar="FILE", help="write a JSON report of every tensor written (the same rules "
                                                    "as --output: no overwrite without --force, never a source or "
                                                    "the output)")
    p.add_argument("--max-output-size", type=_size_arg, default=None, metavar="SIZE",
                   help="largest output allowed (e.g. 20GB, 512MiB, or 'any'); default: 4 x the source plus 1 GiB")
    _add_progress(p)
    p.add_argument("--quiet", "-q", action="store_true")


PLAN = Command("plan", "dry run: what apply would do, from metadata only, with the coverage verdict",
               _add_plan, cmd_plan)
APPLY = Command("apply", "convert: plan, check, and write the output atomically",
                _add_apply, cmd_apply, output_required=True)
