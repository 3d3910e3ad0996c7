"""The format registry: one module per format, all with the same four functions.

``FORMATS`` (:mod:`.registry`) is data: format name -> (module, file-name suffixes, what it is).
Modules are imported on first use, so that ``import mapspec`` never imports torch
or h5py.  Each module defines ``sniff``, ``open``, ``create`` and ``save``
(see :mod:`mapspec.formats.base`); a template-only format's ``create`` raises.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from ..errors import FormatError, MapspecError
from ..files import atomic_output, check_regular, read_head
from .base import Reader, TensorInfo, Writer
from .registry import ALIASES, FAMILIES, FORMATS, by_suffix, canonical, check_options, module  # noqa: F401


SHARDED_INDEX_SUFFIX = ".index.json"


def output_format(path, spec_format: Optional[str] = None) -> str:
    """The format to write ``path`` in: the one rule for every output.

    The output's suffix must agree with the format the spec (or ``--target-format``) names: a
    suffix naming another format is an error naming both, never a file whose name lies about its
    contents.  Where the spec leaves the format open, the suffix decides.  A sharded output (a
    ``*.index.json``, a directory, or a name ending in ``/``) gives the format of its shards
    (safetensors or torch; see :func:`mapspec.formats.sharded.output_target`).
    """
    text = str(path)
    from .sharded import is_directory

    if text.lower().endswith(SHARDED_INDEX_SUFFIX) or text.endswith(("/", "\\")) or is_directory(text) \
            or (spec_format and canonical(spec_format) == "sharded"):
        from .sharded import output_target

        return output_target(text, spec_format)[1]
    suffix_format = by_suffix(text)
    if spec_format:
        wanted = canonical(spec_format)
        if suffix_format in FAMILIES.get(wanted, ()):
            return suffix_format
        if suffix_format is not None and suffix_format != wanted:
            raise MapspecError(
                f"{path}: the suffix names format {suffix_format!r} but the target format is {wanted!r}; "
                f"name the output {' or '.join('*' + s for s in FORMATS[wanted].suffixes)}, "
                f"or change the target format (target.format in the spec, or --target-format)")
        return wanted
    if suffix_format is None:
        raise MapspecError(f"{path}: cannot tell the output format from the file name; use a known suffix ("
                           + ", ".join(f"{s} {n}" for n, e in FORMATS.items() if e.has_data for s in e.suffixes)
                           + ") or name the format (target.format in the spec, or --target-format)")
    return suffix_format


def detect(path) -> str:
    """The format of an existing file: by content first, then by suffix."""
    p = Path(path)
    if not p.exists():
        raise FormatError(path, "no such file")
    if p.is_dir():
        raise FormatError(path, "is a directory, not a checkpoint file")
    head = read_head(path)
    guess = by_suffix(path)
    order = ([guess] if guess else []) + [n for n in FORMATS if n != guess]
    for name in order:
        try:
            mod = module(name)
        except MapspecError:
            continue
        if mod.sniff(str(path), head):
            return name
    if guess:
        return guess
    raise FormatError(path, "cannot tell the format of this file (known: "
                      + ", ".join(f"{n} {'/'.join(e.suffixes)}" for n, e in FORMATS.items())
                      + "); name it with --format")


def open_checkpoint(path, format: Optional[str] = None, opened=None, **options) -> Reader:
    """Open a checkpoint or template lazily: names, shapes and dtypes without reading data.

    A directory opens its one ``*.index.json`` (or its one checkpoint file); an index opens as
    a sharded checkpoint whose shards are of ``format`` (default: by their names), telling
    ``opened(total, shard)`` of each shard opened, if given."""
    if opened is not None and not callable(opened):  # an option named so, from a spec or a flag: never ignored
        raise MapspecError("no format has a read option 'opened'")
    check_regular(path)
    from . import sharded

    path = sharded.source_path(path)
    if sharded.is_index(path) and Path(path).is_file():
        if format and canonical(format) != sharded.NAME:
            options = {"shard_format": canonical(format), **options}
        return sharded.open(path, opened=opened, **options)
    name = canonical(format) if format else detect(path)
    if not Path(path).exists():
        raise FormatError(path, "no such file")
    mod = module(name)
    check_options(name, mod, options, "read")
    return mod.open(str(path), **options)


def create_writer(path, infos: Sequence[TensorInfo], format: Optional[str] = None,
                  copy_phases: Optional[dict] = None, **options) -> Writer:
    """A writer for ``path``; ``copy_phases`` ({target: source offset mod page} of the tensors the engine
    will copy file to file) goes to formats that place their data by it (``COPY_PHASES`` in the module)."""
    name = canonical(format) if format else by_suffix(path)
    if name is None:
        raise MapspecError(f"{path}: cannot tell the output format from the file name; name it in the spec "
                           f"(target: {{format: ...}}) or with --target-format (a sharded checkpoint: a directory "
                           f"ending in / or a *.index.json)")
    if not FORMATS[name].has_data:
        raise MapspecError(f"{path}: format {name!r} describes tensors but cannot hold them; "
                           f"write a data format instead")
    mod = module(name)
    if name != "sharded":  # the sharded writer checks its shards' options itself
        check_options(name, mod, options, "write")
    if copy_phases and getattr(mod, "COPY_PHASES", False):
        options["copy_phases"] = copy_phases
    return mod.create(str(path), infos, **options)


__all__ = ["FORMATS", "TensorInfo", "Reader", "Writer", "atomic_output", "open_checkpoint", "create_writer",
           "detect", "module", "canonical", "by_suffix", "output_format"]
