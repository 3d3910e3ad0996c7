"""The table of checkpoint formats: names, aliases, suffixes and the module of each (data).

:mod:`mapspec.formats` builds on it (detection, output formats, opening); a format module that
needs the table (:mod:`.sharded`) imports it from here, never from the package.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

from ..errors import MapspecError
from ..registry import LazyTable


class FormatEntry(NamedTuple):
    module: str
    suffixes: tuple
    description: str
    has_data: bool = True


_FORMATS: dict[str, FormatEntry] = {
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
FORMATS = LazyTable("format", _FORMATS, ALIASES)

# Formats of one family: a spec naming the first may write a file whose suffix names another
# (``target: {format: keras}`` with a ``.keras`` output writes a Keras 3 archive).
FAMILIES = {"keras": ("keras-archive",)}


def module(name: str):
    """The module implementing format ``name`` (imported on first use)."""
    return FORMATS.load(name)


def canonical(name: str) -> str:
    return FORMATS.canonical(name)


def by_suffix(path) -> Optional[str]:
    lower = str(path).lower()
    best = None
    for name, entry in FORMATS.items():
        for suf in entry.suffixes:
            if lower.endswith(suf) and (best is None or len(suf) > best[1]):
                best = (name, len(suf))
    return best[0] if best else None


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
