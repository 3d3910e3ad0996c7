"""The index of a sharded checkpoint (``*.index.json``): reading it, and the names of its shards.

Below both :mod:`.sharded` (the format: reader and writer) and :mod:`.shard_output` (publishing the
shards and index as one), which build on it.
"""

from __future__ import annotations

import builtins
import json
import os
import re

from ..errors import FormatError
from .safetensors import DuplicateKey, no_duplicates  # one duplicate-key check for both JSON headers


SUFFIX = ".index.json"


MAX_INDEX = 64 << 20  # bytes; a 100k-tensor index is ~10 MB


# Shard format -> (the index file save_pretrained writes, the shard file extension).
DEFAULT_NAMES = {"safetensors": ("model.safetensors.index.json", ".safetensors"),
                 "torch": ("pytorch_model.bin.index.json", ".bin")}


SHARD_FORMATS = tuple(DEFAULT_NAMES)


MAX_INT_DIGITS = 20  # an index's numbers are byte counts: 2**64 has 20 digits


class _HugeInt(ValueError):
    pass


def _bounded_int(text: str) -> int:
    """``int`` of a JSON number, refused past :data:`MAX_INT_DIGITS` (Python's own limit is a traceback)."""
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _HugeInt(len(text.lstrip("-")))
    return int(text)


def read_index(path: str) -> tuple[dict, dict]:
    """(weight_map, metadata) of an index file, checked."""
    try:
        size = os.path.getsize(path)
        if size > MAX_INDEX:
            raise FormatError(path, f"index is {size} bytes; more than the limit of {MAX_INDEX} (not an index?)")
        with builtins.open(path, "rb") as f:
            raw = f.read(MAX_INDEX + 1)
    except OSError as e:
        raise FormatError(path, f"cannot read: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError(path, f"index is not UTF-8 ({e.reason})", offset=e.start) from None
    try:
        obj = json.loads(text, object_pairs_hook=no_duplicates, parse_int=_bounded_int)
    except DuplicateKey as e:
        raise FormatError(path, f"the index names {e.args[0]!r} twice") from None
    except _HugeInt as e:
        raise FormatError(path, f"the index holds an integer of {e.args[0]} digits (its numbers are byte counts: at "
                          f"most {MAX_INT_DIGITS} digits)") from None
    except json.JSONDecodeError as e:
        raise FormatError(path, f"index is not valid JSON: {e.msg} (truncated or damaged index?)",
                          offset=e.pos) from None
    except RecursionError:
        raise FormatError(path, "index JSON is nested too deeply") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("weight_map"), dict):
        raise FormatError(path, "an index is a JSON object with a \"weight_map\" object {tensor: shard file}")
    meta = obj.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise FormatError(path, "the index's \"metadata\" is not an object")
    wm = obj["weight_map"]
    for name, shard in wm.items():
        if not isinstance(shard, str):
            raise FormatError(path, f"weight_map gives {shard!r} as the shard; a file name is a string",
                              tensor=name)
    if not wm:
        raise FormatError(path, "the index's weight_map is empty")
    return wm, dict(meta or {})


def split_name(final_index: str, shard_fmt: str) -> tuple[str, str]:
    """(stem, extension) of the shard names: model.safetensors.index.json -> (model, .safetensors)."""
    from .registry import FORMATS

    base = os.path.basename(final_index)[:-len(SUFFIX)]
    for ext in FORMATS[shard_fmt].suffixes:
        if base.lower().endswith(ext) and len(base) > len(ext):
            return base[:-len(ext)], base[-len(ext):]
    return base or "model", DEFAULT_NAMES[shard_fmt][1]


def stale_shards(index: str, stem: str, ext: str, keep) -> list[str]:
    """The shards ``index`` names that look like ours (``stem-0000k-of-0000n.ext``) and are not in ``keep``."""
    try:
        old, _ = read_index(index)
    except (FormatError, OSError):
        return []
    pattern = re.compile(re.escape(stem) + r"-\d{5}-of-\d{5}" + re.escape(ext))
    return sorted({s for s in old.values() if pattern.fullmatch(s) and s not in set(keep)})
