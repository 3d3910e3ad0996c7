"""Dtype names, through one table.

mapspec names dtypes with numpy-style strings (``float32``, ``bfloat16``, ...).
Formats translate their own codes (safetensors ``"F32"``, MXNet type flags, torch
dtypes) through tables in their modules, keyed by these names; nothing here is an
if/elif chain.  ``bfloat16`` and the float8 types come from ``ml_dtypes``, the
numpy extension maintained with JAX, so the core can hold them without torch.
"""

from __future__ import annotations

from typing import NamedTuple

import ml_dtypes
import numpy as np


class DType(NamedTuple):
    name: str
    numpy: np.dtype
    itemsize: int
    kind: str  # "float", "int", "uint", "bool"


def _d(name: str, np_dtype, kind: str) -> DType:
    dt = np.dtype(np_dtype)
    return DType(name, dt, dt.itemsize, kind)


DTYPES: dict[str, DType] = {d.name: d for d in (
    _d("float64", np.float64, "float"),
    _d("float32", np.float32, "float"),
    _d("float16", np.float16, "float"),
    _d("bfloat16", ml_dtypes.bfloat16, "float"),
    _d("float8_e4m3fn", ml_dtypes.float8_e4m3fn, "float"),
    _d("float8_e5m2", ml_dtypes.float8_e5m2, "float"),
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

# numpy dtype -> our name (native byte order).
_BY_NUMPY: dict[np.dtype, str] = {d.numpy: d.name for d in DTYPES.values()}

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
    return _BY_NUMPY[dt]


def to_numpy(name: str) -> np.dtype:
    return DTYPES[canonical(name)].numpy


def itemsize(name: str) -> int:
    return DTYPES[canonical(name)].itemsize


def known() -> list[str]:
    return list(DTYPES)
