"""Dtype names, through one table.

mapspec names dtypes with numpy-style strings (``float32``, ``bfloat16``, ...).
Formats translate their own codes (safetensors ``"F32"``, MXNet type flags, torch
dtypes) through tables in their modules, keyed by these names; nothing here is an
if/elif chain.  ``bfloat16`` and the float8 types come from ``ml_dtypes``, the
numpy extension maintained with JAX, so the core can hold them without torch.

``ml_dtypes`` costs most of a second to import (its C extension), so it is loaded the
first time one of its dtypes is *touched* (``DTYPES["bfloat16"].numpy``, ``to_numpy``, an
array of that dtype reaching :func:`name_of`), never to list, name or size a dtype:
``mapspec --help``, ``validate``, ``plan`` and ``inspect`` of a bf16 checkpoint start
without it (``tests/test_startup.py`` holds that).
"""

from __future__ import annotations

import sys

import numpy as np


class DType:
    """One dtype: its name, numpy dtype (resolved on first use), size in bytes and kind."""

    __slots__ = ("name", "_numpy", "_source", "itemsize", "kind")

    def __init__(self, name: str, source, itemsize: int, kind: str):
        self.name, self._source, self.itemsize, self.kind = name, source, itemsize, kind
        self._numpy = None

    @property
    def numpy(self) -> np.dtype:
        if self._numpy is None:
            src = self._source
            if isinstance(src, str):  # "ml_dtypes:bfloat16": the extension, loaded now
                import ml_dtypes

                src = getattr(ml_dtypes, src.split(":", 1)[1])
            self._numpy = np.dtype(src)
        return self._numpy

    def __repr__(self) -> str:
        return f"DType({self.name!r}, itemsize={self.itemsize}, kind={self.kind!r})"


def _d(name: str, source, kind: str, itemsize: int | None = None) -> DType:
    return DType(name, source, itemsize if itemsize is not None else np.dtype(source).itemsize, kind)


DTYPES: dict[str, DType] = {d.name: d for d in (
    _d("float64", np.float64, "float"),
    _d("float32", np.float32, "float"),
    _d("float16", np.float16, "float"),
    _d("bfloat16", "ml_dtypes:bfloat16", "float", 2),
    _d("float8_e4m3fn", "ml_dtypes:float8_e4m3fn", "float", 1),
    _d("float8_e5m2", "ml_dtypes:float8_e5m2", "float", 1),
    _d("int64", np.int64, "int"),
    _d("int32", np.int32, "int"),
    _d("int16", np.int16, "int"),
    _d("int8", np.int8, "int"),
    _d("uint64", np.uint64, "uint"),
    _d("uint32", np.uint32, "uint"),
    _d("uint16", np.uint16, "uint"),
    _d("uint8", np.uint8, "uint"),
    _d("bool", np.bool_, "bool"),
)}

_EXTENSION = tuple(d for d in DTYPES.values() if isinstance(d._source, str))

# numpy dtype -> our name (native byte order); the extension's dtypes join when first seen.
_BY_NUMPY: dict[np.dtype, str] = {d.numpy: d.name for d in DTYPES.values() if d not in _EXTENSION}

ALIASES = {
    "float": "float32", "half": "float16", "double": "float64", "long": "int64",
    "int": "int32", "f32": "float32", "f16": "float16", "bf16": "bfloat16", "f64": "float64",
}


def canonical(name: str) -> str:
    """Return the canonical dtype name for ``name`` (or raise KeyError)."""
    key = ALIASES.get(name, name)
    if key not in DTYPES:
        raise KeyError(name)
    return key


def name_of(dtype) -> str:
    """Our name for a numpy dtype (byte order ignored); KeyError if unsupported."""
    dt = np.dtype(dtype)
    if dt.byteorder not in ("=", "|"):
        dt = dt.newbyteorder("=")
    name = _BY_NUMPY.get(dt)
    if name is None and "ml_dtypes" in sys.modules:
        # an ml_dtypes dtype (numpy kind 'V', or 'f' for float8_e5m2): such an array exists, so the
        # extension is loaded
        for d in _EXTENSION:
            _BY_NUMPY.setdefault(d.numpy, d.name)
        name = _BY_NUMPY.get(dt)
    if name is None:
        raise KeyError(dt)
    return name


def to_numpy(name: str) -> np.dtype:
    return DTYPES[canonical(name)].numpy


def itemsize(name: str) -> int:
    return DTYPES[canonical(name)].itemsize


def in_numpy(name: str) -> bool:
    """Whether numpy itself has the dtype (not one of ml_dtypes' extension types, which ``np.save`` writes
    as raw bytes or as a descriptor ``np.load`` cannot read)."""
    return DTYPES[canonical(name)] not in _EXTENSION


def known() -> list[str]:
    return list(DTYPES)
