"""GGUF's metadata value types (gguf-py's ``GGUFValueType``) and how a metadata value becomes bytes.

A metadata value is stored as ``u32 value type | value``; a string is ``u64 length | UTF-8 bytes``,
an array ``u32 item type | u64 count | items``.  :data:`VALUE_TYPES` maps each type code to its
name and ``struct`` format.  A value given without a type is typed by :func:`infer_type`; one
given as ``{type: T, value: V}`` keeps ``T`` (:func:`typed`); :func:`encode_value` checks that the
value fits its type and returns its bytes.  The container (header, tensor infos, data) is read and
written by :mod:`mapspec.formats.gguf`.
"""

from __future__ import annotations

import struct
from typing import Mapping

import numpy as np

from ...errors import MapspecError

# GGUF value type code -> (name, struct format or None for string/array)
VALUE_TYPES: dict[int, tuple] = {
    0: ("uint8", "<B"), 1: ("int8", "<b"), 2: ("uint16", "<H"), 3: ("int16", "<h"), 4: ("uint32", "<I"),
    5: ("int32", "<i"), 6: ("float32", "<f"), 7: ("bool", "<?"), 8: ("string", None), 9: ("array", None),
    10: ("uint64", "<Q"), 11: ("int64", "<q"), 12: ("float64", "<d"),
}
VALUE_CODES = {name: code for code, (name, _) in VALUE_TYPES.items()}
STRING, ARRAY, BOOL = 8, 9, 7


def string_bytes(s: str) -> bytes:
    """A GGUF string: u64 length, UTF-8 bytes."""
    try:
        b = s.encode("utf-8")
    except UnicodeEncodeError:
        raise MapspecError(f"GGUF metadata text {s.encode('utf-8', 'backslashreplace').decode()!r} is not valid "
                           f"Unicode (a lone surrogate); GGUF stores UTF-8") from None
    return struct.pack("<Q", len(b)) + b


def infer_type(v, key: str) -> str:
    """The GGUF type a plain value gets: bool; uint32/int32/int64/uint64 by range; float32; string; an array
    of one of those (mixed integers widen to int64)."""
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, np.integer)):
        v = int(v)
        if 0 <= v < 2 ** 32:
            return "uint32"
        if -2 ** 31 <= v < 0:
            return "int32"
        if -2 ** 63 <= v < 0:
            return "int64"
        if 0 <= v < 2 ** 64:
            return "uint64"
        raise MapspecError(f"GGUF metadata {key!r}: integer {v} does not fit 64 bits")
    if isinstance(v, (float, np.floating)):
        return "float32"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (list, tuple)):
        items = {infer_type(x, key) for x in v} or {"uint32"}
        if items <= {"uint32", "int32", "int64", "uint64"} and len(items) > 1:
            items = {"int64"} if not {"uint64"} & items else items
        if len(items) != 1:
            raise MapspecError(f"GGUF metadata {key!r}: an array must hold values of one type, not "
                               f"{', '.join(sorted(items))}")
        return f"array[{items.pop()}]"
    raise MapspecError(f"GGUF metadata {key!r}: cannot store a {type(v).__name__} ({v!r})")


def encode_value(tname: str, v, key: str) -> bytes:
    """The bytes of metadata value ``v`` stored as GGUF type ``tname`` (``uint32``, ``array[string]``, ...);
    a value the type cannot hold is an error naming ``key``."""
    if tname.startswith("array[") and tname.endswith("]"):
        inner = tname[6:-1]
        if not isinstance(v, (list, tuple)):
            raise MapspecError(f"GGUF metadata {key!r}: type {tname} needs a list, not {v!r}")
        if inner not in VALUE_CODES or inner == "array":
            raise MapspecError(f"GGUF metadata {key!r}: unknown array item type {inner!r}")
        return struct.pack("<IQ", VALUE_CODES[inner], len(v)) + b"".join(encode_value(inner, x, key) for x in v)
    if tname not in VALUE_CODES or tname == "array":
        raise MapspecError(f"GGUF metadata {key!r}: unknown type {tname!r} (known: "
                           f"{', '.join(n for n in VALUE_CODES if n != 'array')}, array[T])")
    if tname == "string":
        if not isinstance(v, str):
            raise MapspecError(f"GGUF metadata {key!r}: type string needs text, not {v!r}")
        return string_bytes(v)
    fmt = VALUE_TYPES[VALUE_CODES[tname]][1]
    if isinstance(v, str) and tname != "bool":  # "1e-05" (YAML 1.1 reads it as text) given an explicit type
        v = _number(v, float if tname.startswith("float") else int)
    if tname == "bool":
        ok, want = isinstance(v, bool), "true or false"
    elif tname.startswith("float"):
        ok, want = isinstance(v, (int, float)) and not isinstance(v, bool), "a number"
    else:
        ok, want = isinstance(v, int) and not isinstance(v, bool), "an integer"
    if not ok:
        raise MapspecError(f"GGUF metadata {key!r}: type {tname} needs {want}, not {v!r}")
    try:
        return struct.pack(fmt, v)
    except struct.error:
        raise MapspecError(f"GGUF metadata {key!r}: {v!r} does not fit {tname}") from None


def _number(text: str, kind):
    try:
        return kind(text.strip())
    except ValueError:
        return text


def typed(key: str, v) -> tuple:
    """(type name, value) of a metadata entry given as a value or {type: T, value: V}."""
    if isinstance(v, Mapping):
        if set(v) != {"type", "value"}:
            raise MapspecError(f"GGUF metadata {key!r}: give a value or {{type: T, value: V}}, not {dict(v)!r}")
        return str(v["type"]), v["value"]
    return infer_type(v, key), v
