"""No file mapspec writes is a file it reads: the one check, for the library and the command line.

Inputs: the source (a sharded source: its index and every shard; ONNX: its external data
files), the template (likewise), the spec and every spec it includes, and the vars file (or
config file) the vars came from.  Outputs: the output (a sharded output: its index and every
shard-like file in its folder that the new checkpoint replaces or removes), the files a writer
puts beside it (ONNX ``OUTPUT.data``), and ``--report``.

Files are compared by identity, ``(st_dev, st_ino)`` after following symbolic links, so that a
symlink or a hard link to an input is caught as surely as the same name.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from .errors import MapspecError


def _key(path) -> Optional[tuple]:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def reader_files(reader) -> list[str]:
    """The files a reader reads: its own, a sharded reader's shards, an ONNX model's external data."""
    files = [reader.path]
    for shard in getattr(reader, "shards", {}).values():
        files += reader_files(shard)
    base = Path(reader.path).parent
    for t in getattr(reader, "_tensors", {}).values():  # ONNX: initializers stored in other files
        loc = getattr(t, "location", None)
        if getattr(t, "kind", None) == "external" and loc:
            files.append(str(base / loc))
    return files


def input_files(p) -> list[tuple[str, str]]:
    """(kind, path) of every file plan ``p`` reads."""
    out = [("source", f) for f in reader_files(p.source)]
    if p.template is not None:
        out += [("template", f) for f in reader_files(p.template)]
    out += [("spec", f) for f in [p.spec.path, *p.spec.includes] if f]
    if getattr(p.spec, "vars_path", None):
        out.append(("vars", p.spec.vars_path))
    return out


def _sharded_outputs(index: str, shard_format: str) -> tuple[list[str], re.Pattern]:
    """The index and the existing files of its folder that a new sharded checkpoint may replace or remove."""
    from .formats.shard_index import split_name

    stem, ext = split_name(index, shard_format)
    pattern = re.compile(re.escape(stem) + r"-\d{5}-of-\d{5}" + re.escape(ext))
    folder = Path(index).parent
    try:
        names = sorted(e.name for e in os.scandir(folder) if pattern.fullmatch(e.name))
    except OSError:
        names = []
    return [index] + [str(folder / n) for n in names], pattern


def refuse_inputs(outputs, inputs) -> None:
    """A MapspecError if an output ``(what, path)`` is the same file as an input ``(kind, path)``."""
    keys = {}
    for kind, f in inputs:
        k = _key(f)
        if k is not None:
            keys.setdefault(k, (kind, f))
    for what, path in outputs:
        hit = keys.get(_key(path))
        if hit is not None:
            kind, f = hit
            same = "" if os.path.abspath(f) == os.path.abspath(path) else f" ({f})"
            raise MapspecError(f"{path}: the {what} would replace the {kind} file{same}; write it somewhere else")


def check(p, output, force: bool = False, report: Optional[str] = None) -> None:
    """Refuse (MapspecError) an output or report that is an input, or that is the other one; and one
    that mapspec may not replace (:func:`mapspec.files.check_output_path`)."""
    from .formats import module, output_format, sharded
    from .files import check_output_path

    from .companions import folder_file, named

    in_folder = folder_file(p.spec, output)
    output = in_folder or output
    fmt = output_format(output, p.target_format)
    route = None if in_folder else sharded.output_target(output, fmt)
    if route is not None:
        index, shard_format = route
        outputs, pattern = _sharded_outputs(index, shard_format)
        check_output_path(index, force, "output", make_parent=True)
    else:
        index, pattern = str(output), None
        outputs = [index] + [index + s for s in getattr(module(fmt), "COMPANION_SUFFIXES", ())]
        check_output_path(index, force, "output", make_parent=bool(in_folder))
    if route is not None or in_folder:  # the spec's companion files beside the weights
        outputs += [os.path.join(os.path.dirname(index), n) for n in named(p.spec)]
    if report:
        check_output_path(report, force, "--report")
    refuse_inputs([("output", o) for o in outputs] + ([("--report", report)] if report else []), input_files(p))
    if report:
        r = os.path.realpath(report)
        mine = {os.path.realpath(o) for o in outputs}
        in_folder = (pattern is not None and os.path.dirname(r) == os.path.realpath(Path(index).parent)
                     and pattern.fullmatch(os.path.basename(r)))
        if r in mine or in_folder or (_key(report) is not None and _key(report) in {_key(o) for o in outputs}):
            raise MapspecError(f"{report}: --report and --output name the same file")
