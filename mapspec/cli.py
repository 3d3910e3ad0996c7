"""The ``mapspec`` command line.

``main()`` is ``sys.exit(run(sys.argv[1:]))``; ``run`` takes ``stdout``/``stderr`` so
that tests call the CLI in-process.  Exit status: 0 success, 1 a user error reported
in one clear message (no traceback), 2 bad usage.  ``mapspec diff`` exits 1 when
the checkpoints differ.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Optional, Sequence, TextIO

import numpy as np

from . import __version__
from .errors import OPTIONAL_PACKAGES, MapspecError, MissingDependency, UsageError, escape
from .options import parse_pairs, parse_shape


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would sys.exit(2) from deep inside; we raise instead
        raise UsageError(f"{self.prog}: {message}\n(see {self.prog} --help)")


class _Deprecated(argparse.Action):
    """An old spelling that still works: stores like ``new`` and leaves a note for stderr."""

    def __init__(self, option_strings, dest, new: str = "", append: bool = False, **kw):
        super().__init__(option_strings, dest, **kw)
        self.new, self.append = new, append

    def __call__(self, parser, namespace, values, option_string=None):
        if self.append:
            values = (getattr(namespace, self.dest, None) or []) + [values]
        setattr(namespace, self.dest, values)
        notes = getattr(namespace, "deprecations", None) or []
        notes.append(f"mapspec: note: {parser.prog} {option_string} is deprecated; use {self.new}")
        namespace.deprecations = notes


def _check_flag_options(flag: str, fmt: Optional[str], options: dict, kind: str) -> None:
    """Options given on the command line that the format does not take: an error naming the flag."""
    from .formats import canonical, check_options, module

    if not options or not fmt:
        return
    name = canonical(fmt)
    try:
        check_options(name, module(name), options, kind)
    except MapspecError as e:
        raise UsageError(f"{flag}: {e}") from None


def _jobs(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"--jobs takes a whole number >= 1, not {text!r}")
    return n


def _size_arg(text: str):
    """--max-output-size: a size as for max_shard_size (5GB, 512MiB, bytes), or 'any'."""
    if text.strip().lower() in ("any", "unlimited"):
        return float("inf")
    from .formats.sharded import parse_size

    try:
        return parse_size(text, "--max-output-size")
    except MapspecError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _shape(shape) -> str:
    if shape is None:
        return "?"
    return "x".join(str(d) for d in shape) if len(shape) else "scalar"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def _table(rows: list[list[str]], out: TextIO, header: list[str]) -> None:
    rows = [[escape(c) for c in r] for r in rows]  # names from files: no control characters reach the terminal
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    print(fmt.format(*header).rstrip(), file=out)
    print(fmt.format(*["-" * w for w in widths]).rstrip(), file=out)
    for r in rows:
        print(fmt.format(*r).rstrip(), file=out)


# -- commands -------------------------------------------------------------------------

def cmd_validate(args, out: TextIO, err: TextIO) -> int:
    from .spec.load import check_spec

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


def _json_meta(meta) -> dict:
    """The facts of TensorInfo.meta that inspect --json shows: a shard, a GGUF tensor's ggml type."""
    meta = meta or {}
    keep = {k: meta[k] for k in ("shard", "ggml_type", "dequantized") if k in meta}
    if "ggml_type" in meta and "shape" in meta:
        keep["ggml_shape"] = list(meta["shape"])  # the logical shape of quantized blocks
    return keep


def _ggml_type(meta) -> str:
    """A GGUF tensor's ggml type for inspect's table: quantized blocks show theirs and their logical shape."""
    if not meta or "ggml_type" not in meta:
        return "-"
    if meta.get("dequantized"):
        return f"{meta['ggml_type']} (dequantized)"
    return f"{meta['ggml_type']} blocks of {_shape(meta['shape'])}" if "shape" in meta else meta["ggml_type"]


def _metadata_view(reader):
    """The module that shows a reader's metadata (GGUF key/values), or None."""
    if getattr(reader, "format", None) != "gguf" or not hasattr(reader, "typed_metadata"):
        return None
    from .formats import gguf_view

    return gguf_view


def cmd_inspect(args, out: TextIO, err: TextIO) -> int:
    from .formats import open_checkpoint
    from .progress import count_bar

    from .formats import detect

    options = parse_pairs(args.option, "--option")
    if options:
        _check_flag_options("--option", args.format or detect(args.file), options, "read")
    with count_bar(err, "inspect", args.progress, "shard") as opened, \
            open_checkpoint(args.file, format=args.format, opened=opened, **options) as r:
        infos = r.infos()
        total_n = sum(i.numel for i in infos.values())
        total_b = sum(i.nbytes for i in infos.values())
        view = _metadata_view(r)
        if args.json:
            json.dump({"file": r.path, "format": r.format, "has_data": r.has_data,
                       **({"metadata": view.as_json(r)} if view else {}),
                       "tensors": [{"name": i.name, "shape": list(i.shape), "dtype": i.dtype, "numel": i.numel,
                                    "nbytes": i.nbytes, **_json_meta(i.meta)} for i in infos.values()],
                       "total": {"tensors": len(infos), "numel": total_n, "nbytes": total_b}}, out, indent=1)
            print(file=out)
            return 0
        shard_of = getattr(r, "shard_of", None)
        ggml = any(i.meta and "ggml_type" in i.meta for i in infos.values())
        rows = [[i.name, _shape(i.shape), i.dtype or "-", f"{i.numel:,}", _size(i.nbytes)]
                + ([_ggml_type(i.meta)] if ggml else []) + ([shard_of(i.name)] if shard_of else [])
                for i in infos.values()]
        _table(rows, out, ["name", "shape", "dtype", "values", "bytes"] + (["ggml type"] if ggml else [])
               + (["shard"] if shard_of else []))
        kind = "" if r.has_data else " (a template: names and shapes, no values)"
        if shard_of:
            kind = f" ({len(r.shards)} {r.shard_format} shards)"
        print(f"\n{len(infos)} tensors, {total_n:,} values, {_size(total_b)}; format {r.format}{kind}", file=out)
        for note in getattr(r, "notes", []):
            print(f"note: {note}", file=out)
        if view:
            print(file=out)
            _table(view.rows(r), out, ["metadata key", "type", "count", "value"])
    return 0


def cmd_specs(args, out: TextIO, err: TextIO) -> int:
    from .family import families
    from .resources import shipped_specs
    from .spec.load import check_spec

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
    from .catalog import format_rows

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
    from .catalog import transform_detail, transform_rows, transforms_markdown

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


def _close(p) -> None:
    """Release the plan's readers (memory maps, open files)."""
    p.source.close()
    if p.template is not None:
        p.template.close()


def _spec_from_args(args):
    """The spec with the command line's --source-option / --template-option added to its own options."""
    from .family import resolve
    from .formats import detect
    from .spec.load import load_spec

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
    from .engine import plan

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
            from .engine import check_size

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
    from .guard import check

    check(p, args.output, force=args.force, report=args.report)


def _apply_plan(p, args, out: TextIO, err: TextIO) -> int:
    from .engine import execute
    from .formats import atomic_output, output_format
    from .progress import plan_progress

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
            from .files import PUBLISHED

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


def _max_abs_diff(a: np.ndarray, b: np.ndarray, chunk: int = 1 << 20, done=lambda nbytes: None) -> float:
    fa, fb = a.reshape(-1), b.reshape(-1)
    worst = 0.0
    for i in range(0, fa.size, chunk):
        done(min(chunk, fa.size - i) * fa.itemsize)
        x = np.asarray(fa[i:i + chunk], dtype=np.float64)
        y = np.asarray(fb[i:i + chunk], dtype=np.float64)
        d = np.abs(x - y)
        nan_mismatch = np.isnan(x) != np.isnan(y)
        if nan_mismatch.any():
            return float("inf")
        d = d[~np.isnan(d)]
        if d.size:
            worst = max(worst, float(d.max()))
    return worst


def _diff_bar(ra, rb, args, err: TextIO):
    """A bar over the bytes of A that diff compares (common tensors of equal shape, both with data)."""
    from .progress import byte_bar

    ia, ib = ra.infos(), rb.infos()
    total = sum(i.nbytes for n, i in ia.items() if n in ib and tuple(i.shape) == tuple(ib[n].shape)) \
        if ra.has_data and rb.has_data else 0
    return byte_bar(err, total, "diff", args.progress)


def cmd_diff(args, out: TextIO, err: TextIO) -> int:
    from .formats import open_checkpoint

    with open_checkpoint(args.a, format=args.format_a) as ra, open_checkpoint(args.b, format=args.format_b) as rb, \
            _diff_bar(ra, rb, args, err) as bar:
        ia, ib = ra.infos(), rb.infos()
        only_a = [n for n in ia if n not in ib]
        only_b = [n for n in ib if n not in ia]
        rows, differ, worst = [], 0, 0.0
        report = []
        for name in [n for n in ia if n in ib]:
            x, y = ia[name], ib[name]
            entry = {"name": name, "shape_a": list(x.shape), "shape_b": list(y.shape), "dtype_a": x.dtype,
                     "dtype_b": y.dtype}
            if tuple(x.shape) != tuple(y.shape):
                status, diff = f"shape {_shape(x.shape)} vs {_shape(y.shape)}", None
            elif not (ra.has_data and rb.has_data):
                status, diff = "same shape", None
            else:
                bar.set_postfix_str(name[-40:], refresh=False)
                diff = _max_abs_diff(ra.read(name), rb.read(name), done=bar.update)
                worst = max(worst, diff)
                status = "equal" if diff == 0 else ("close" if diff <= args.atol else "DIFFERENT")
                if x.dtype != y.dtype:
                    status += f" (dtype {x.dtype} vs {y.dtype})"
            entry.update(status=status, max_abs_diff=diff)
            report.append(entry)
            bad = not status.startswith(("equal", "close", "same shape")) or (x.dtype != y.dtype and args.strict_dtype)
            differ += bad
            if bad or args.all:
                rows.append([name, _shape(x.shape), "-" if diff is None else f"{diff:.3g}", status])
        if args.json:
            json.dump({"a": ra.path, "b": rb.path, "only_a": only_a, "only_b": only_b, "tensors": report,
                       "max_abs_diff": worst, "atol": args.atol}, out, indent=1)
            print(file=out)
        else:
            if rows:
                _table(rows, out, ["name", "shape", "max |a-b|", "status"])
            for n in only_a:
                print(f"only in {escape(ra.path)}: {escape(n)} ({_shape(ia[n].shape)})", file=out)
            for n in only_b:
                print(f"only in {escape(rb.path)}: {escape(n)} ({_shape(ib[n].shape)})", file=out)
            common = len(ia) - len(only_a)
            print(f"{common} common tensors, {differ} differ (atol {args.atol:g}), max |a-b| {worst:.3g}; "
                  f"{len(only_a)} only in A, {len(only_b)} only in B", file=out)
    return 0 if not differ and not only_a and not only_b else 1


def _layer_rows(v, limit: int = 16) -> tuple[list, int]:
    """The layer table for one screen: the first rows and those around the first divergence."""
    layers = v.layers
    keep = set(range(min(4, len(layers))))
    if v.first_bad is not None:
        i = layers.index(v.first_bad)
        keep |= set(range(max(0, i - 3), min(len(layers), i + 3)))
    keep |= set(range(len(layers)))if len(layers) <= limit else set()
    rows, last = [], -1
    for i in sorted(keep):
        if i > last + 1:
            rows.append(["...", "", "", "", "", ""])
        l = layers[i]
        rows.append([escape(l.source), escape(l.target), "-" if l.cmp is None else f"{l.cmp.max_abs:.3g}",
                     "-" if l.cmp is None else f"{l.cmp.max_rel:.3g}", "-" if l.cmp is None else f"{l.cmp.cosine:.7f}",
                     "<-- first divergence" if l is v.first_bad else l.note])
        last = i
    return rows, len(layers) - len(keep)


def cmd_verify(args, out: TextIO, err: TextIO) -> int:
    from .progress import byte_bar, wanted
    from .spec.load import load_spec
    from .family import resolve
    from .verify import run_verify

    spec = load_spec(resolve(args.spec, args.source), args.allow_path or ())
    if args.report:
        from .verify.report import check_report_path

        check_report_path(args.report, args.force, [
            ("source", args.source), ("converted", args.converted), ("graph", args.source_graph),
            ("graph", args.target_graph), ("config", args.source_config), ("config", args.target_config),
            ("vars", args.vars_file), ("input", args.input)], spec)
    bars = (lambda desc, total, unit: byte_bar(err, total, desc, args.progress, unit)) \
        if wanted(args.progress, err) else None
    v = run_verify(spec, args.source, args.converted, source_graph=args.source_graph, target_graph=args.target_graph,
                   source_model=args.source_model, target_model=args.target_model,
                   source_config=args.source_config, target_config=args.target_config, input=args.input,
                   input_shape=parse_shape(args.input_shape) if args.input_shape else None, seed=args.seed,
                   layers=args.layers or bool(args.report), atol=args.atol, cosine=args.cosine,
                   vars=parse_pairs(args.var, "--var"),
                   vars_file=args.vars_file, hidden_states=args.hidden_states, progress=bars)
    if args.report:
        from .verify.report import write_report

        write_report(v, args.report, args.force, f"{args.spec}: {args.source} -> {args.converted}")
    if args.json:
        json.dump(v.to_json(), out, indent=1)
        print(file=out)
        return 0 if v.ok else 1
    if v.layers:
        rows, hidden = _layer_rows(v)
        _table(rows, out, ["source layer", "target layer", "max |a-b|", "rel", "cosine", ""])
        if hidden:
            print(f"({len(v.layers)} layers compared, {hidden} not shown: --json lists every one)", file=out)
        print(file=out)
    if v.layers_note:
        print(f"layers: none compared: {escape(v.layers_note)}", file=out)
    print(f"input: {v.input_desc}, shape {_shape(v.input_shape)}", file=out)
    for name, o in v.outputs:
        label = "output" if name == "output" else f"output ({escape(name)})"
        print(f"{label} {_shape(o.shape)}: max |a-b| {o.max_abs:.3g}, relative {o.max_rel:.3g}, "
              f"cosine {o.cosine:.9f}", file=out)
    if v.error:
        print(f"error: {v.error}", file=out)
    if v.first_bad is not None:
        print(f"first divergence: {escape(v.first_bad.source)} -> {escape(v.first_bad.target)}", file=out)
        for c in v.causes:
            print(f"  likely cause: {escape(c, keep_newlines=True)}", file=out)
    verdict = "PASS" if v.ok else "FAIL"
    print(f"{verdict} (max |a-b| <= {v.atol:g} and cosine >= {v.cosine:g})", file=out)
    return 0 if v.ok else 1


def cmd_fold_bn(args, out: TextIO, err: TextIO) -> int:
    from .foldbn import fold_bn
    from .progress import plan_progress

    prefix = args.output
    for suffix in (".caffemodel", ".prototxt"):
        if prefix.endswith(suffix):
            prefix = prefix[: -len(suffix)]
    r = fold_bn(args.prototxt, args.caffemodel, prefix, force=args.force, sync=args.sync, emit_spec=args.emit_spec,
                verify=args.verify, seed=args.seed, progress=lambda p: plan_progress(err, p, "fold-bn", args.progress))
    for c in r.chains:
        parts = [c.conv, c.bn] + ([c.scale] if c.scale else [])
        print(f"folded {escape(' -> '.join(parts))}", file=out)
    for n in r.notes:
        print(f"note: {escape(n, keep_newlines=True)}", file=out)
    print(f"wrote {r.prototxt} and {r.caffemodel}: {len(r.chains)} chains folded"
          + (f"; spec in {args.emit_spec}" if args.emit_spec else ""), file=out)
    if r.verify is not None:
        from .verify.metrics import ATOL, COSINE

        ok = True
        for name, c in r.verify.items():
            if "(worst of" in name:  # intermediate activations can be large: judged by relative error
                good = bool(c.max_rel <= ATOL and c.cosine >= COSINE)
                crit = f"relative {c.max_rel:.3g}"
            else:  # outputs: absolute, or relative to their magnitude when they are large
                good = bool((c.max_abs <= args.atol or c.max_rel <= 1e-5) and c.cosine >= COSINE)
                crit = f"max |a-b| {c.max_abs:.3g}, relative {c.max_rel:.3g}"
            ok &= good
            print(f"verify {name}: {crit}, cosine {c.cosine:.9f} ({'PASS' if good else 'FAIL'})", file=out)
        return 0 if ok else 1
    return 0


def cmd_invert(args, out: TextIO, err: TextIO) -> int:
    from .invert import invert, write

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
    from .draft import draft, write

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


def cmd_example(args, out: TextIO, err: TextIO) -> int:
    from .example import example_args, run_example

    name, directory = example_args(args.name, args.directory)
    return run_example(name, directory, out, err, force=args.force, sync=args.sync, run_command=run)


# -- parser ---------------------------------------------------------------------------------

RELAX_HELP = ("relax a coverage check: unused-source, unmatched-rule, missing-target, unexpected-target, "
              "dtype-mismatch, unused-elements, overlapping-elements, ignored-and-matched")
PAIR = "KEY=VALUE"
VALUE_HELP = "VALUE is typed: 6, 1e-5, true, 1,3,224,224 or [1,3,224,224] or (1, 3, 224, 224), {data: [1,3,8,8]}"


# The one option vocabulary: a flag means the same in every command that has it (README, "Commands").
def _add_output(p: argparse.ArgumentParser, help: str, metavar: str = "FILE") -> None:
    p.add_argument("--output", "-o", metavar=metavar, help=help)
    p.add_argument("-O", dest="output", action=_Deprecated, new="-o/--output", help=argparse.SUPPRESS)


def _add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="a progress bar on stderr (bytes, rate, time left); default: only when stderr is a terminal")


def _add_force(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", "-f", action="store_true", help="overwrite existing output")
    p.add_argument("--no-sync", dest="sync", action="store_false",
                   help="do not fsync outputs before putting them in place (faster; for scratch outputs: after a "
                        "power loss they may be empty or hold zeros)")


def _add_vars(p: argparse.ArgumentParser) -> None:
    p.add_argument("--var", action="append", metavar="NAME=VALUE",
                   help="override one of the spec's vars (VALUE as for the options: 6, [1, 2], {2: 6, 3: 12})")
    p.add_argument("--vars-file", metavar="FILE", help="the model's config (JSON/YAML) to read the spec's config "
                                                       "vars from, instead of the file beside the source")


def _add_plan_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="a spec file, a shipped spec's name, or a family-picked name (hf-to-gguf, "
                                "gguf-to-hf: the source's architecture picks the family; see `mapspec specs`)")
    p.add_argument("--source", "-s", required=True, metavar="FILE", help="the source checkpoint")
    p.add_argument("--template", "-t", metavar="FILE", help="a file whose tensor names and shapes the output must match "
                                            "(overrides the spec's target template)")
    p.add_argument("--source-format", help="the source's format (default: the spec's, else detected)")
    p.add_argument("--target-format", help="the output's format (default: the spec's, else from the file name)")
    p.add_argument("--source-option", action="append", metavar=PAIR,
                   help="a reader option of the source's format, added to the spec's source.options; " + VALUE_HELP)
    p.add_argument("--template-option", action="append", metavar=PAIR,
                   help="a reader option of the template's format (e.g. input_shape=1,3,224,224), added to the "
                        "spec's target.template_options")
    from .spec.model import RELAXATIONS

    p.add_argument("--relax", action="append", choices=list(RELAXATIONS), help=RELAX_HELP)
    p.add_argument("--no-tokenizer", action="store_true",
                   help="a spec whose GGUF target takes the tokenizer from the source's folder: write none (llama.cpp "
                        "cannot run the file without one)")
    p.add_argument("--tokenizer-pre", metavar="NAME",
                   help="the llama.cpp name of a tokenizer.json's BPE pre-tokenizer that llama.cpp's table does not "
                        "list (when you know which it is)")
    _add_vars(p)
    _add_allow_path(p)


ALLOW_PATH_HELP = ("let the spec's paths (include, template, verify graph, symbol) reach files under DIR too "
                   "(by default only under the spec's own folder)")


def _add_allow_path(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-path", action="append", metavar="DIR", help=ALLOW_PATH_HELP)


def build_parser() -> argparse.ArgumentParser:
    from .verify.metrics import ATOL, COSINE

    parser = _Parser(prog="mapspec", description="Move pretrained weights between frameworks and checkpoint "
                                                 "layouts with a declarative YAML spec.")
    parser.add_argument("--version", action="version", version=f"mapspec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("validate", help="check specs (schema and semantics) without reading any data")
    p.add_argument("specs", nargs="+", metavar="SPEC")
    _add_allow_path(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("inspect", help="list a checkpoint's (or template's) tensors")
    p.add_argument("file")
    p.add_argument("--format", help="the file's format (default: detected)")
    p.add_argument("--option", action="append", metavar=PAIR,
                   help="a reader option of the file's format, e.g. input_shape=1,3,112,112 for a template; "
                        + VALUE_HELP)
    p.add_argument("-o", dest="option", action=_Deprecated, new="--option", append=True, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true")
    _add_progress(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("plan", help="dry run: what apply would do, from metadata only, with the coverage verdict")
    _add_plan_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("apply", help="convert: plan, check, and write the output atomically")
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
    p.set_defaults(func=cmd_apply, output_required=True)

    p = sub.add_parser("diff", help="compare two checkpoints tensor by tensor (exit 1 if they differ)")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--atol", type=float, default=0.0, help="largest absolute difference still 'close' (default 0)")
    p.add_argument("--format-a")
    p.add_argument("--format-b")
    p.add_argument("--all", action="store_true", help="list every common tensor, not just the differing ones")
    p.add_argument("--strict-dtype", action="store_true", help="count a dtype difference as a difference")
    _add_progress(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("verify", help="prove a conversion: run the original and the converted model and compare")
    p.add_argument("spec", help="the spec used for the conversion (its verify: section says how to run both sides)")
    p.add_argument("--source", "-s", required=True, metavar="FILE", help="the original weights")
    p.add_argument("--converted", "-c", required=True, metavar="FILE", help="the converted weights (apply's output)")
    p.add_argument("--source-graph", help="the original graph (.prototxt / -symbol.json) if the spec does not say")
    p.add_argument("--target-graph", help="the converted model's graph, if the spec does not say")
    p.add_argument("--source-model", help="the original model: a registered factory (e.g. densenet121), or your own "
                                          "module:function or file.py:function returning a torch nn.Module or keras "
                                          "Model (overrides the spec's)")
    p.add_argument("--target-model", help="the converted model's factory, as --source-model")
    p.add_argument("--source-config", help="run the original as a transformers model built from this config.json "
                                           "(without it: the config.json beside the weights, if the spec says so)")
    p.add_argument("--target-config", help="the same for the converted model")
    p.add_argument("--input", "-i", help="an image (RGB, resized), a .npy array, tokens:ID,ID,..., "
                                         "random-tokens:LENGTH, or 'random' (default)")
    p.add_argument("--input-shape", type=lambda t: t,
                   help="e.g. 1,3,224,224 or 1x3x224x224 (default: the spec's verify.input.shape)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random input (default 0)")
    _add_vars(p)
    _add_allow_path(p)
    p.add_argument("--hidden-states", action="store_true", help="transformers models on both sides: compare every "
                                                                "hidden state too, not just the logits")
    p.add_argument("--layers", action="store_true", help="compare intermediate activations and name the first "
                                                         "layer that diverges")
    p.add_argument("--report", metavar="FILE.html", help="also draw the per-layer error (max abs, relative, cosine) "
                   "along the network, first divergence marked, as a self-contained HTML page (implies --layers)")
    _add_force(p)
    p.add_argument("--atol", type=float,
                   help=f"largest allowed max |a-b| of the outputs (default: spec, else {ATOL:g})")
    p.add_argument("--cosine", type=float, help=f"smallest allowed cosine similarity (default: spec, else {COSINE:g})")
    _add_progress(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("fold-bn", help="fold Convolution -> BatchNorm -> Scale chains of a Caffe net for deployment")
    p.add_argument("prototxt")
    p.add_argument("caffemodel")
    _add_output(p, "output prefix (required): writes PREFIX.prototxt and PREFIX.caffemodel", "PREFIX")
    _add_force(p)
    p.add_argument("--emit-spec", help="also write the generated spec (one explicit rule per chain) here")
    _add_progress(p)
    p.add_argument("--verify", action="store_true",
                   help="run both nets on a seeded random input and compare: outputs within --atol (or 1e-5 "
                        f"relative), every shared layer within {ATOL:g} relative, cosine >= {COSINE:g}")
    p.add_argument("--atol", type=float, default=ATOL)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_fold_bn, output_required=True)

    p = sub.add_parser("invert", help="write the reverse of a spec (target -> source) from each transform's inverse")
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
    p.set_defaults(func=cmd_invert)

    p = sub.add_parser("draft", help="propose a spec from a source checkpoint and a target template")
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
    p.set_defaults(func=cmd_draft)

    p = sub.add_parser("example", help="make a model, convert it with a shipped spec and verify the result")
    p.add_argument("name", nargs="?", help="densenet (a Caffe DenseNet-121 -> torchvision; the default)")
    p.add_argument("directory", nargs="?", help="where to write the files (default: example/); "
                                                "`mapspec example DIR` works too")
    _add_force(p)
    p.set_defaults(func=cmd_example)

    p = sub.add_parser("specs", help="list the shipped specs")
    p.set_defaults(func=cmd_specs)

    p = sub.add_parser("formats", help="list the formats: suffixes, read/write, reader and writer options")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_formats)

    p = sub.add_parser("transforms", help="list the transforms with their arguments (or describe one)")
    p.add_argument("name", nargs="?", help="describe this transform's arguments")
    p.add_argument("--json", action="store_true")
    p.add_argument("--markdown", action="store_true", help="the transform table as markdown (the manual's reference)")
    p.set_defaults(func=cmd_transforms)

    for extra in _EXTRA_COMMANDS:
        extra(sub)
    return parser


# Later modules (verify, fold-bn, example) add their sub-commands here.
_EXTRA_COMMANDS: list = []


def _graph_command(sub) -> None:  # mapspec graph lives in its own module (cli_graph.py)
    from .cli_graph import add_graph_command

    add_graph_command(sub, _add_output, _add_force)


_EXTRA_COMMANDS.append(_graph_command)


def run(argv: Optional[Sequence[str]] = None, stdout: Optional[TextIO] = None,
        stderr: Optional[TextIO] = None) -> int:
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    parser = build_parser()
    args = None
    restore = _handle_signals()
    from .files import PUBLISHED

    published_before = len(PUBLISHED)
    try:
        try:
            args = parser.parse_args(list(argv) if argv is not None else None)
        except SystemExit as e:  # --help / --version
            return int(e.code or 0)
        if not getattr(args, "command", None):
            parser.print_help(out)
            return 2
        for note in getattr(args, "deprecations", None) or ():
            print(note, file=err)
        if getattr(args, "output_required", False) and not args.output:
            raise UsageError(f"mapspec {args.command}: the following arguments are required: -o/--output\n"
                             f"(see mapspec {args.command} --help)")
        return args.func(args, out, err)
    except ModuleNotFoundError as e:  # an optional package (torch, keras, pillow) this command needs
        if (e.name or "").split(".")[0] not in OPTIONAL_PACKAGES:
            raise
        what = f"mapspec {args.command}" if args is not None else "mapspec"
        print(f"mapspec: error: {MissingDependency(e.name, what)}", file=err)
        return 1
    except MapspecError as e:
        print(f"mapspec: error: {escape(e, keep_newlines=True)}", file=err)
        return e.exit_code
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM/SIGHUP (Terminated)
        from .files import PUBLISHED

        done = PUBLISHED[published_before:]
        what = (f"{' and '.join(escape(d) for d in done)} {'was' if len(done) == 1 else 'were'} written completely "
                f"before it" if done else "no output was written")
        print(f"mapspec: {getattr(e, 'name', 'interrupted')}: stopped; {what}" if isinstance(e, Terminated) else
              f"mapspec: interrupted; {what}", file=err)
        return 128 + getattr(e, "signum", 2)
    except BrokenPipeError:
        return 1
    finally:
        restore()


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: unwinds like Ctrl-C (temporary files removed, nothing replaced)."""

    def __init__(self, signum: int):
        import signal

        super().__init__(signum)
        self.signum = signum
        self.name = signal.Signals(signum).name


def _raise_terminated(signum, frame):
    import signal

    from .files import interrupt

    interrupt(KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum))


def _handle_signals():
    """Turn SIGTERM/SIGHUP into :class:`Terminated` (and SIGINT into KeyboardInterrupt) while ``run``
    works, deferred while an output is being put in place; returns the undo."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    saved = {}
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is None:
            continue
        old = signal.getsignal(sig)
        if old is signal.SIG_IGN:  # nohup: the user asked to survive it
            continue
        saved[sig] = old
        signal.signal(sig, _raise_terminated)

    def restore() -> None:
        for sig, old in saved.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
    return restore


def main() -> None:
    sys.exit(run())
