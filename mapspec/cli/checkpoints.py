"""``mapspec inspect`` and ``mapspec diff``: a checkpoint's tensors listed, two checkpoints compared."""

from __future__ import annotations

import argparse
import json
from typing import TextIO

import numpy as np

from ..errors import escape
from ..options import parse_pairs
from .flags import _add_progress, _check_flag_options, Command, _Deprecated, PAIR, VALUE_HELP
from .show import _shape, _size, _table


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
    from ..formats import gguf_view

    return gguf_view


def cmd_inspect(args, out: TextIO, err: TextIO) -> int:
    from ..formats import open_checkpoint
    from ..progress import count_bar

    from ..formats import detect

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
    from ..progress import byte_bar

    ia, ib = ra.infos(), rb.infos()
    total = sum(i.nbytes for n, i in ia.items() if n in ib and tuple(i.shape) == tuple(ib[n].shape)) \
        if ra.has_data and rb.has_data else 0
    return byte_bar(err, total, "diff", args.progress)


def cmd_diff(args, out: TextIO, err: TextIO) -> int:
    from ..formats import open_checkpoint

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


def _add_inspect(p: argparse.ArgumentParser) -> None:
    p.add_argument("file")
    p.add_argument("--format", help="the file's format (default: detected)")
    p.add_argument("--option", action="append", metavar=PAIR,
                   help="a reader option of the file's format, e.g. input_shape=1,3,112,112 for a template; "
                        + VALUE_HELP)
    p.add_argument("-o", dest="option", action=_Deprecated, new="--option", append=True, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true")
    _add_progress(p)


def _add_diff(p: argparse.ArgumentParser) -> None:
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--atol", type=float, default=0.0, help="largest absolute difference still 'close' (default 0)")
    p.add_argument("--format-a")
    p.add_argument("--format-b")
    p.add_argument("--all", action="store_true", help="list every common tensor, not just the differing ones")
    p.add_argument("--strict-dtype", action="store_true", help="count a dtype difference as a difference")
    _add_progress(p)
    p.add_argument("--json", action="store_true")


INSPECT = Command("inspect", "list a checkpoint's (or template's) tensors", _add_inspect, cmd_inspect)
DIFF = Command("diff", "compare two checkpoints tensor by tensor (exit 1 if they differ)", _add_diff, cmd_diff)
