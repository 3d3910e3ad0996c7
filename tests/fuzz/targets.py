"""The fuzz targets: one row per reader (plus the spec loader).

Adding a format is one line in :data:`TARGETS` plus a seed builder in :mod:`fuzz.seeds`.
A target whose mapspec module is missing (a format not landed yet) is skipped cleanly.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Mapping, NamedTuple, Optional


class Target(NamedTuple):
    """How to feed bytes to one reader."""

    name: str  # also the corpus folder name
    format: Optional[str]  # mapspec format name for open_checkpoint; None for the spec loader
    module: str  # the mapspec module that must exist for the target to run
    suffix: str  # file name suffix of the temporary input (some readers look at names)
    mutations: str  # which structure-aware mutations fit: binary, zip, safetensors, json, text, yaml
    options: Mapping = {}  # reader options while fuzzing
    product_options: Optional[Mapping] = None  # options of the shipped code path, if different (see keras)
    compressed: bool = False  # may a valid file hold tensors larger than itself (deflate, gzip)?
    requires: tuple = ()  # third-party modules the target needs
    exercise: Optional[str] = None  # a whole command instead of a reader (see fuzz.commands)

    def available(self) -> Optional[str]:
        """None if the target can run, else why not (for a clean skip).

        Nothing is imported (atheris must instrument mapspec before its first import).
        """
        for mod in (self.module,) + tuple(self.requires):
            if not _exists(mod):
                return f"module {mod} is not available"
        return None

    def reader_options(self, product: bool = False) -> dict:
        if product and self.product_options is not None:
            return dict(self.product_options)
        return dict(self.options)


def _exists(dotted: str) -> bool:
    """Is there a module ``dotted``?  (Without importing it or its parent packages.)"""
    head, _, rest = dotted.partition(".")
    spec = importlib.util.find_spec(head)
    if spec is None:
        return False
    if not rest:
        return True
    for base in spec.submodule_search_locations or ():
        p = Path(base, *rest.split("."))
        if p.with_suffix(".py").is_file() or (p / "__init__.py").is_file():
            return True
    return False


_MFN_INPUT = {"input_shape": (1, 3, 112, 112)}

TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("npz", "npz", "mapspec.formats.npz", ".npz", "zip", compressed=True),
    Target("safetensors", "safetensors", "mapspec.formats.safetensors", ".safetensors", "safetensors"),
    Target("torch", "torch", "mapspec.formats.torch", ".pt", "zip", requires=("torch",)),
    # In-process parsing (isolate=False) for speed; a libhdf5 crash or hang is then judged by the
    # shipped path (isolate=True parses in a child process first): refused with FormatError is fine.
    # The shipped probe gives up after 120 s; 10 s here keeps the judgement quick (same mechanism).
    Target("keras", "keras", "mapspec.formats.keras", ".h5", "binary", options={"isolate": False},
           product_options={"timeout": 10.0}, compressed=True, requires=("h5py",)),
    Target("mxnet", "mxnet", "mapspec.formats.mxnet", ".params", "binary"),
    Target("mxnet-symbol", "mxnet-symbol", "mapspec.formats.mxnet_symbol", "-symbol.json", "json",
           options=_MFN_INPUT),
    Target("caffe", "caffe", "mapspec.formats.caffe", ".caffemodel", "binary"),
    Target("prototxt", "prototxt", "mapspec.formats.prototxt", ".prototxt", "text"),
    Target("gguf", "gguf", "mapspec.formats.gguf", ".gguf", "binary"),
    # varint-encoded initializers (int64_data) take fewer bytes than their values: up to 8:1
    Target("onnx", "onnx", "mapspec.formats.onnx", ".onnx", "binary", compressed=True),
    Target("keras-archive", "keras-archive", "mapspec.formats.keras_archive", ".keras", "zip",
           options={"isolate": False}, product_options={"timeout": 10.0}, compressed=True, requires=("h5py",)),
    Target("spec", None, "mapspec.language.load", ".yaml", "yaml"),
    # A sharded checkpoint's index; its shards lie beside it (harness.support_files), so a small
    # index may describe tensors larger than itself (compressed=True).
    Target("sharded", "sharded", "mapspec.formats.sharded", ".index.json", "json", compressed=True),
    # Whole commands (fuzz.commands): mutated specs through plan/apply, mutated command lines,
    # signals at random moments of an apply.
    Target("apply", None, "mapspec.engine", ".yaml", "yaml", exercise="apply"),
    Target("flags", None, "mapspec.cli", ".args", "text", exercise="flags"),
    Target("signals", None, "mapspec.cli", ".sig", "binary", exercise="signals"),
)}


class KnownBug(NamedTuple):
    """A bug found by fuzzing in a module the fuzzing owner may not edit, not fixed yet."""

    target: str
    file: str  # its regression input in corpus/<target>/
    signature: str  # regex over Verdict.signature() ("ExcType @ mapspec/file.py:function")
    reason: str


# Corpus inputs that still break the product, while their fix is pending.  Their replay is
# marked xfail(strict=True), so the test turns red the day the bug is fixed, reminding whoever
# fixed it to delete the entry here; fuzz campaigns count inputs matching a signature as
# "known" instead of failing on them again.
KNOWN_BUGS: tuple = ()  # every bug found so far is fixed; its input stays in corpus/ as a regression


def known_bug(target: str, signature: str) -> Optional[KnownBug]:
    """The known bug a failure's signature matches, if any."""
    for kb in KNOWN_BUGS:
        if kb.target == target and re.search(kb.signature, signature):
            return kb
    return None
