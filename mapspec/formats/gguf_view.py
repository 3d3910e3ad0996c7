"""A GGUF file's metadata as ``inspect`` shows it: every key, its type and value, long arrays summarised
(as gguf-py's ``gguf-dump`` does).

Table: one row per key: key, type (``uint32``, ``string``, ``array[string]``), count (arrays), value;
an array shows its first :data:`TABLE_ITEMS` items then ``...``; text longer than :data:`TEXT` characters
is cut with ``...``.

JSON (``inspect --json``, key ``metadata``): ``{key: {"type": T, "value": V}}``; an array also has
``"count"``; one of more than :data:`JSON_ITEMS` items has ``"head"`` (its first :data:`JSON_ITEMS`
items) and no ``"value"``.  A float that is NaN or infinite is given as the text ``"nan"``, ``"inf"``,
``"-inf"`` (JSON has no such numbers).
"""

from __future__ import annotations

import math

import numpy as np

TABLE_ITEMS = 8
TEXT = 72
JSON_ITEMS = 64


def _short(v, tname: str = "") -> str:
    if "float32" in tname and isinstance(v, float):
        v = np.float32(v)  # the shortest text of the stored float32 (1e-05, not 9.99999974738e-06)
    text = repr(v) if isinstance(v, str) else str(v)
    return text if len(text) <= TEXT else text[:TEXT - 3] + "..."


def rows(reader) -> list:
    """[key, type, count, value] for the table."""
    out = []
    for key, (tname, v) in reader.typed_metadata().items():
        if isinstance(v, list):
            items = ", ".join(_short(x, tname) for x in v[:TABLE_ITEMS]) + (", ..." if len(v) > TABLE_ITEMS else "")
            out.append([key, tname, f"{len(v):,}", f"[{items}]"])
        else:
            out.append([key, tname, "", _short(v, tname)])
    return out


def _json_value(v):
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if v != v else ("inf" if v > 0 else "-inf")
    if isinstance(v, list):
        return [_json_value(x) for x in v]
    return v


def as_json(reader) -> dict:
    out = {}
    for key, (tname, v) in reader.typed_metadata().items():
        if isinstance(v, list):
            entry = {"type": tname, "count": len(v)}
            entry["head" if len(v) > JSON_ITEMS else "value"] = _json_value(v[:JSON_ITEMS])
        else:
            entry = {"type": tname, "value": _json_value(v)}
        out[key] = entry
    return out
