"""One exception hierarchy for everything a user can get wrong.

Every error a user can cause is a :class:`MapspecError`.  The CLI prints
``str(error)`` and exits with status 1; it never prints a traceback for these.

* :class:`SpecError` points into a spec file: ``file:line:col: rule N (...): message``.
* :class:`FormatError` points into a checkpoint: ``path: at byte N: message``.
* :class:`ConversionError` names a tensor (and the rule that produced it) when data
  does not fit at apply time: a shape mismatch, a division by zero, ...
* :class:`CoverageError` reports names that no rule accounted for.
* :class:`ErrorList` carries several errors at once (``validate`` reports all
  mistakes, not the first).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Optional

# C0/C1 controls (ANSI escapes, newlines, carriage returns), DEL, and the bidirectional overrides
# that reorder what a terminal shows.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_UNSAFE_KEEP_LINES = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069"
                                "\ud800-\udfff]")


def escape(text, keep_newlines: bool = False) -> str:
    """``text`` safe to print on a terminal: control characters as ``\\x1b``, ``\\n``, ``\\u202e``.

    Every name that came from a file or spec goes through this where it is printed (tables,
    listings); JSON output is left exact.  ``keep_newlines`` keeps line breaks (multi-line
    messages whose names were escaped already).
    """
    pattern = _UNSAFE_KEEP_LINES if keep_newlines else _UNSAFE
    return pattern.sub(lambda m: m.group().encode("unicode_escape", "backslashreplace").decode("ascii")
                       if not "\ud800" <= m.group() <= "\udfff" else f"\\u{ord(m.group()):04x}", str(text))


class MapspecError(Exception):
    """Base class of every error caused by user input (specs, files, arguments)."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message

    @property
    def errors(self) -> list["MapspecError"]:
        return [self]


class UsageError(MapspecError):
    """Bad command-line usage (exit status 2)."""

    exit_code = 2


@dataclass(frozen=True)
class Location:
    """A position in a spec file (1-based line and column, as editors show them)."""

    file: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.col}"
        return self.file


class SpecError(MapspecError):
    """A mistake in a spec, located at ``file:line:col`` and naming the rule."""

    def __init__(self, message: str, loc: Optional[Location] = None, rule: Optional[str] = None):
        self.loc = loc
        self.rule = rule
        self.bare = message
        prefix = f"{loc}: " if loc is not None else ""
        where = f"{rule}: " if rule else ""
        super().__init__(f"{prefix}{where}{message}")

    @property
    def file(self) -> Optional[str]:
        return self.loc.file if self.loc else None

    @property
    def line(self) -> int:
        return self.loc.line if self.loc else 0

    @property
    def col(self) -> int:
        return self.loc.col if self.loc else 0


class FormatError(MapspecError):
    """A checkpoint that cannot be read (or written) as its format says."""

    def __init__(self, path, message: str, offset: Optional[int] = None, tensor: Optional[str] = None):
        self.path = str(path)
        self.offset = offset
        self.tensor = tensor
        self.bare = message
        parts = [self.path]
        if offset is not None:
            parts.append(f"at byte {offset}")
        if tensor is not None:
            parts.append(f"tensor {tensor!r}")
        parts.append(message)
        super().__init__(": ".join(parts))


class ConversionError(MapspecError):
    """Data that does not fit what the spec says, found while planning or applying."""

    def __init__(self, message: str, tensor: Optional[str] = None, rule: Optional[str] = None,
                 loc: Optional[Location] = None):
        self.tensor = tensor
        self.rule = rule
        self.loc = loc
        self.bare = message
        parts = []
        if loc is not None:
            parts.append(f"{loc}: ")
        if rule:
            parts.append(f"{rule}: ")
        if tensor is not None:
            parts.append(f"tensor {tensor!r}: ")
        super().__init__("".join(parts) + message)


class TransformError(MapspecError, ValueError):
    """The input does not fit a transform; the engine adds rule, tensor and location.

    Here (not in :mod:`mapspec.transforms`) so that :mod:`mapspec.numeric`, below the transforms,
    raises it too."""


class ShapeError(MapspecError):
    """A layer's parameters, inputs or blobs do not fit (Caffe and MXNet graphs and executors); the
    message names neither file nor layer: the caller adds them."""


class Unsupported(ShapeError):
    """A layer feature or attribute value an executor does not implement (the caller names the layer)."""


# Optional packages: import name -> (what it is, the pip requirement that installs it).
OPTIONAL_PACKAGES = {
    "torch": ("PyTorch", "torch"),
    "torchvision": ("torchvision", "torchvision"),
    "keras": ("Keras 3", "keras"),
    "PIL": ("Pillow", "pillow"),
    "h5py": ("h5py", "h5py"),
    "sentencepiece": ("sentencepiece", "'mapspec[tokenizer]'"),
    "tokenizers": ("Hugging Face tokenizers", "'mapspec[tokenizer]'"),
    "transformers": ("Hugging Face transformers", "transformers"),
    "onnx": ("ONNX", "onnx"),
    "onnxruntime": ("ONNX Runtime", "onnxruntime"),
    "gguf": ("gguf-py", "gguf"),
}


class MissingDependency(MapspecError):
    """Something the user asked for needs a package that is not installed: one line with the install command."""

    def __init__(self, package: str, what: str, instead: str = ""):
        top = package.split(".")[0]
        label, requirement = OPTIONAL_PACKAGES.get(top, (top, top))
        super().__init__(f"{what} needs {label}, which is not installed here; install it with: "
                         f"pip install {requirement}" + (f", or {instead}" if instead else ""))
        self.package = top


class CoverageError(MapspecError):
    """Source tensors, rules or template targets that the conversion did not account for."""


class ErrorList(MapspecError):
    """Several errors reported together; ``errors`` lists them, best first."""

    def __init__(self, errors: Iterable[MapspecError]):
        flat: list[MapspecError] = []
        for e in errors:
            flat.extend(e.errors)
        if not flat:
            raise ValueError("ErrorList needs at least one error")
        self._errors = flat
        n = len(flat)
        head = "" if n == 1 else f"{n} errors:\n"
        super().__init__(head + "\n".join(str(e) for e in flat))

    @property
    def errors(self) -> list[MapspecError]:
        return list(self._errors)
