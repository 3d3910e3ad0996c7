"""The format registry: one module per format, all with the same four functions.

``FORMATS`` is data: format name -> (module, file-name suffixes, what it is).
Modules are imported on first use, so that ``import mapspec`` never imports torch
or h5py.  Each module defines ``sniff``, ``open``, ``create`` and ``save``
(see :mod:`mapspec.formats.base`); a template-only format's ``create`` raises.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

from ..errors import FormatError, MapspecError, MissingDependency
from .base import Reader, TensorInfo, Writer, atomic_output, check_regular, read_head


class FormatEntry(NamedTuple):
    module: str
    suffixes: tuple
    description: str
    has_data: bool = True


FORMATS: dict[str, FormatEntry] = {
    "safetensors": FormatEntry("mapspec.formats.safetensors", (".safetensors",), "safetensors file"),
    "npz": FormatEntry("mapspec.formats.npz", (".npz",), "numpy .npz archive"),
    "torch": FormatEntry("mapspec.formats.torch", (".pt", ".pth", ".bin", ".ckpt", ".tar"),
                         "PyTorch state dict (torch.save zip or legacy pickle; read with weights_only=True)"),
    "caffe": FormatEntry("mapspec.formats.caffe", (".caffemodel",), "Caffe NetParameter (.caffemodel)"),
    "prototxt": FormatEntry("mapspec.formats.prototxt", (".prototxt",),
                            "Caffe net definition (text); a template of the blobs a caffemodel must hold", False),
    "mxnet": FormatEntry("mapspec.formats.mxnet", (".params",), "MXNet NDArray list (.params)"),
    "mxnet-symbol": FormatEntry("mapspec.formats.mxnet_symbol", ("-symbol.json",),
                                "MXNet symbol graph; a template of the parameters a .params must hold", False),
    "keras": FormatEntry("mapspec.formats.keras", (".weights.h5", ".h5", ".hdf5"),
                         "Keras HDF5 weights (legacy .h5 and Keras 3 .weights.h5)"),
    "sharded": FormatEntry("mapspec.formats.sharded", (".index.json",),
                           "sharded checkpoint: a Hugging Face *.index.json and its safetensors or torch shards "
                           "(or a directory holding one)"),
    "keras-archive": FormatEntry("mapspec.formats.keras_archive", (".keras",),
                                 "Keras 3 .keras archive (config.json + model.weights.h5); written over a template"),
    "gguf": FormatEntry("mapspec.formats.gguf", (".gguf",),
                        "GGUF (llama.cpp): typed metadata, float/integer tensors and quantized blocks"),
    "onnx": FormatEntry("mapspec.formats.onnx", (".onnx",),
                        "ONNX model: the main graph's initializers (external data too); written over a template"),
}

# A format name a spec may use for a source/target, mapped to the format that holds
# its template when the template file is given by suffix.  (e.g. target format caffe,
# template net.prototxt).
ALIASES = {"pytorch": "torch", "pth": "torch", "numpy": "npz", "caffemodel": "caffe", "h5": "keras",
           "hdf5": "keras"}

# Formats of one family: a spec naming the first may write a file whose suffix names another
# (``target: {format: keras}`` with a ``.keras`` output writes a Keras 3 archive).
FAMILIES = {"keras": ("keras-archive",)}


def module(name: str):
    """The module implementing format ``name`` (imported on first use)."""
    entry = FORMATS.get(ALIASES.get(name, name))
    if entry is None:
        raise MapspecError(f"unknown format {name!r}; known formats: {', '.join(FORMATS)}")
    try:
        return importlib.import_module(entry.module)
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("mapspec"):
            raise MapspecError(f"format {name!r} is not available in this build of mapspec") from None
        raise MissingDependency(e.name or "", f"format {name!r}") from None


def canonical(name: str) -> str:
    key = ALIASES.get(name, name)
    if key not in FORMATS:
        raise MapspecError(f"unknown format {name!r}; known formats: {', '.join(FORMATS)}")
    return key


def by_suffix(path) -> Optional[str]:
    lower = str(path).lower()
    best = None
    for name, entry in FORMATS.items():
        for suf in entry.suffixes:
            if lower.endswith(suf) and (best is None or len(suf) > best[1]):
                best = (name, len(suf))
    return best[0] if best else None


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


# Options the engine itself passes to every writer.
ENGINE_WRITE_OPTIONS = ("template", "final_path")


def check_options(name: str, mod, options: dict, kind: str) -> None:
    """Unknown options are an error, never silently ignored."""
    allowed = tuple(getattr(mod, f"{kind.upper()}_OPTIONS", ()))
    if kind == "write":
        allowed += ENGINE_WRITE_OPTIONS
    unknown = [k for k in options if k not in allowed]
    if unknown:
        shown = [a for a in allowed if a not in ENGINE_WRITE_OPTIONS]
        raise MapspecError(f"format {name!r} has no {kind} option {unknown[0]!r}"
                           + (f" (its {kind} options: {', '.join(shown)})" if shown else
                              f" (it takes no {kind} options)"))


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


def create_writer(path, infos: Sequence[TensorInfo], format: Optional[str] = None, **options) -> Writer:
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
    return mod.create(str(path), infos, **options)


__all__ = ["FORMATS", "TensorInfo", "Reader", "Writer", "atomic_output", "open_checkpoint", "create_writer",
           "detect", "module", "canonical", "by_suffix", "output_format"]
