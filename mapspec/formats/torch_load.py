"""Reading a PyTorch checkpoint: ``torch.load`` with torch's restricted unpickler, and the naming rules.

:func:`load` opens a file with ``weights_only=True`` (and ``mmap=True`` for the zip format) and turns
whatever torch raises on a corrupt or hostile file into one :class:`FormatError`; :func:`unwrap` applies
the wrapper rule (``{"state_dict": {...}, "epoch": 3}``) and :func:`flatten` names the nested tensors,
as the :mod:`mapspec.formats.torch` docstring describes; :func:`check_view` refuses views that claim
more bytes than their storage.  Used by :class:`~mapspec.formats.torch.TorchReader`.
"""

from __future__ import annotations

import builtins
import pickle
import re
import struct
import warnings
import zipfile
from typing import Optional, Sequence, Union

from ..errors import FormatError, MapspecError

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model_state", "model", "module", "net", "network")
BARE_TENSOR_NAME = "tensor"


def import_torch():
    try:
        import torch
    except ModuleNotFoundError:
        raise MapspecError("the torch format needs PyTorch; install it (pip install torch)") from None
    return torch


# What torch.load can raise on a corrupt or hostile file (found by fuzzing torch
# 2.13 with truncations and byte flips of both formats; AssertionError comes from
# torch's legacy loader, UnicodeDecodeError is a ValueError).
_LOAD_ERRORS = (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, KeyError, IndexError, TypeError,
                AttributeError, OverflowError, AssertionError, struct.error, zipfile.BadZipFile, OSError,
                MemoryError, RecursionError, NotImplementedError, ImportError)


def _load_error(path: str, e: BaseException) -> FormatError:
    msg = str(e)
    glob = re.search(r"GLOBAL (\S+)", msg)
    if isinstance(e, pickle.UnpicklingError) and glob:
        return FormatError(path, f"the checkpoint's pickle needs {glob.group(1)}, which is outside torch's "
                           "weights_only allow-list: loading it would run code from the file, and mapspec "
                           "refuses. If you trust the file, re-save just the tensors in a trusted "
                           "environment (torch.save(model.state_dict(), ...)) or convert it to safetensors")
    if isinstance(e, pickle.UnpicklingError) and ("Can only" in msg or "persistent_load" in msg
                                                  or "Unsupported" in msg):
        detail = msg.split("\n")[-3] if msg.count("\n") >= 3 else msg
        return FormatError(path, f"the checkpoint's pickle builds objects outside torch's weights_only "
                           f"allow-list ({detail.strip()[:200]}); mapspec refuses to load it")
    if isinstance(e, MemoryError):
        return FormatError(path, "the checkpoint claims more memory than is available (corrupt file?)")
    first = msg.strip().splitlines()[0][:300] if msg.strip() else type(e).__name__
    return FormatError(path, f"not a readable torch checkpoint (truncated or corrupt?): "
                       f"{type(e).__name__}: {first}")


def is_zip(path: str) -> bool:
    try:
        with builtins.open(path, "rb") as f:
            return f.read(4) == b"PK\x03\x04"
    except OSError as e:
        raise FormatError(path, f"cannot open: {e.strerror}") from None


def load(path: str):
    """``torch.load`` with weights_only=True (mmap for the zip format); errors as FormatError."""
    torch = import_torch()
    mmap = is_zip(path)
    try:
        with warnings.catch_warnings():  # torch warns about odd pickle protocols in corrupt files
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except _LOAD_ERRORS as e:
        raise _load_error(path, e) from None


def _has_tensor(obj, torch, seen: Optional[set] = None) -> bool:
    """Is there a tensor anywhere below ``obj`` (containers visited once each)?"""
    seen = set() if seen is None else seen
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, torch.Tensor):
            return True
        if isinstance(o, (dict, list, tuple)) and id(o) not in seen:
            seen.add(id(o))
            stack.extend(o.values() if isinstance(o, dict) else o)
    return False


def unwrap(obj, torch, root: Union[None, str, Sequence[str]] = None) -> tuple:
    """(object to flatten, wrapper key path or None, {skipped name: reason}) by the wrapper rule."""
    skipped: dict[str, str] = {}
    path: list[str] = []
    if root is not None:
        keys = [root] if isinstance(root, str) else list(root)
        for k in [k for k in keys if k != ""]:
            if not isinstance(obj, dict) or k not in obj:
                have = ", ".join(map(str, list(obj)[:20])) if isinstance(obj, dict) else type(obj).__name__
                raise MapspecError(f"option root: key {k!r} not found under {'.'.join(path) or 'the top level'} "
                                   f"(keys: {have})")
            skipped.update({_join(path, str(o)): f"outside root {'.'.join(path + [k])!r}" for o in obj if o != k})
            obj = obj[k]
            path.append(str(k))
        return obj, (".".join(path) or None), skipped
    descended: set = set()
    while isinstance(obj, dict) and id(obj) not in descended:  # a dict holding itself is not descended twice
        descended.add(id(obj))
        if any(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        hits = [k for k in WRAPPER_KEYS if k in obj and isinstance(obj[k], dict) and _has_tensor(obj[k], torch)]
        if len(hits) != 1:
            break
        k = hits[0]
        skipped.update({_join(path, str(o)): f"outside the wrapper {'.'.join(path + [k])!r}"
                        for o in obj if o != k})
        obj = obj[k]
        path.append(k)
    return obj, (".".join(path) or None), skipped


def _join(prefix: Sequence[str], key: str) -> str:
    return ".".join([*prefix, key]) if prefix else key


def flatten(obj, torch) -> tuple:
    """([(name, tensor)] in order, {skipped name: reason}) for a nested checkpoint object.

    Iterative (no recursion limit), and each container is expanded once, so a
    hostile pickle with cycles or exponentially shared sub-lists stays linear.
    """
    out: list = []
    skipped: dict[str, str] = {}
    if isinstance(obj, torch.Tensor):
        return [(BARE_TENSOR_NAME, obj)], skipped
    if not isinstance(obj, (dict, list, tuple)):
        raise MapspecError(f"holds a {type(obj).__name__}, not a state dict or tensors")
    seen: set = set()
    stack: list = [("", obj)]
    while stack:
        name, o = stack.pop()
        if isinstance(o, torch.Tensor):
            out.append((name, o))
        elif isinstance(o, (dict, list, tuple)):
            if id(o) in seen:
                skipped[name] = "a container seen before under another name (shared or cyclic)"
                continue
            seen.add(id(o))
            items = o.items() if isinstance(o, dict) else enumerate(o)
            children = [(f"{name}.{k}" if name else str(k), v) for k, v in items]
            stack.extend(reversed(children))
        else:
            skipped[name] = f"not a tensor ({type(o).__name__})"
    return out, skipped


def check_view(path: str, name: str, t) -> None:
    """Refuse a view whose logical size exceeds its storage (stride 0, overlapping strides): 2 KB of
    storage could otherwise claim gigabytes that a conversion would write out."""
    logical = t.numel() * t.element_size()
    try:
        storage = t.untyped_storage().nbytes() - t.storage_offset() * t.element_size()
    except (RuntimeError, NotImplementedError):
        return
    if logical > max(storage, 0):
        raise FormatError(path, f"tensor is a view of shape {tuple(t.shape)} and strides {tuple(t.stride())} "
                          f"claiming {logical:,} bytes over {max(storage, 0):,} bytes of storage (a stride-0 or "
                          f"overlapping view); save it with .contiguous() / .clone() first", tensor=name)

