"""Keras HDF5 weights, the file level: safe HDF5 access, the legacy and Keras 3 layouts, and the
child-process probe that parses a file before this process trusts libhdf5 with it.

The format is :mod:`mapspec.formats.keras`; the reader and writer are in :mod:`.keras_weights`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from .. import dtypes
from ..errors import FormatError, MapspecError


NAME = "keras"
LEGACY, KERAS3 = "legacy", "keras3"
# The top-level groups that make an HDF5 file Keras 3 weights (the layers' variables, the model's own): a
# file with neither is not read as Keras weights, by Keras or by mapspec.
KERAS3_ROOTS = ("layers", "vars")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_BOMB_FLOOR = 256 << 20  # bytes; below this a dataset may be read whatever its storage
_BOMB_RATIO = 1000  # declared bytes / stored bytes above which a compressed dataset is refused
_ATTR_LIMIT = 64512  # HDF5 object header limit Keras chunks attributes by

# Snake-cased Keras 3 class -> {number of stored variables: their names in order}.
# Verified against keras 3.15 by tests/formats/test_keras.py (layer.weights order).
_KERNEL_BIAS = {1: ("kernel",), 2: ("kernel", "bias")}
KERAS3_VARIABLES: dict[str, dict[int, tuple]] = {
    **{c: _KERNEL_BIAS for c in (
        "dense", "conv1d", "conv2d", "conv3d", "conv1d_transpose", "conv2d_transpose", "conv3d_transpose",
        "depthwise_conv1d", "depthwise_conv2d")},
    "separable_conv1d": {2: ("depthwise_kernel", "pointwise_kernel"),
                         3: ("depthwise_kernel", "pointwise_kernel", "bias")},
    "separable_conv2d": {2: ("depthwise_kernel", "pointwise_kernel"),
                         3: ("depthwise_kernel", "pointwise_kernel", "bias")},
    "batch_normalization": {4: ("gamma", "beta", "moving_mean", "moving_variance"),
                            2: ("moving_mean", "moving_variance")},
    "layer_normalization": {2: ("gamma", "beta")},
    "group_normalization": {2: ("gamma", "beta")},
    "p_re_lu": {1: ("alpha",)},
    "embedding": {1: ("embeddings",)},
}

# Legacy writing without a template: the order Keras creates a layer's weights in.
# A layer whose weight names are all listed here is sorted by rank; otherwise the
# announced order is kept.
WEIGHT_RANK = {"kernel": 0, "depthwise_kernel": 0, "embeddings": 0, "gamma": 0, "alpha": 0,
               "pointwise_kernel": 1, "recurrent_kernel": 1, "beta": 1, "bias": 2,
               "moving_mean": 3, "moving_variance": 4}

# Root attributes of legacy files written without a template.  Kernels are in the
# cross-correlation convention of TensorFlow and every Keras 3 backend; Keras 2
# loaders flip conv kernels for "theano" and raise KeyError on backend names they
# do not know (such as "torch"), and convert layouts when keras_version is "1".
LEGACY_BACKEND = "tensorflow"
LEGACY_KERAS_VERSION = "3.0.0"

# HDF5 cannot hold bfloat16/float8 natively; Keras 3 stores bfloat16 as 2-byte opaque
# data with attribute dtype="bfloat16" (the legacy loader cannot read that back).
WRITE_DTYPES = tuple(n for n in dtypes.known() if not n.startswith("float8"))
NAMED_TEMP = True  # libhdf5 resolves the real path of the file it creates: no unnamed (O_TMPFILE) output


def _h5py():
    try:
        import h5py
    except ModuleNotFoundError:
        raise MapspecError("the keras format needs h5py; install it (pip install h5py)") from None
    return h5py


# h5py/HDF5 raise these on corrupt files (OSError for most library errors).
_H5_ERRORS = (OSError, ValueError, KeyError, RuntimeError, TypeError, IndexError, OverflowError)


def _natural(s: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", s)]


class Entry(NamedTuple):
    name: str
    h5path: str  # dataset path inside the file
    layer: str  # layer label the name starts with
    keras_class: Optional[str] = None


# -- safe HDF5 access --------------------------------------------------------

class H5:
    """An h5py file with checked access: hard links only, no external/virtual data."""

    def __init__(self, path: str, fileobj=None):
        h5py = self.h5py = _h5py()
        self.path = path
        try:
            self.file = h5py.File(path if fileobj is None else fileobj, "r", locking=False)
        except _H5_ERRORS as e:
            raise FormatError(path, f"not a readable HDF5 file: {e}") from None

    def _link_ok(self, group, key: str, where: str) -> None:
        h5py = self.h5py
        try:
            kind = group.get(key, default=None, getlink=True)
        except _H5_ERRORS as e:
            raise FormatError(self.path, f"cannot read link {where!r}: {e}") from None
        if kind is None:
            raise FormatError(self.path, f"{where!r} does not exist")
        if isinstance(kind, (h5py.SoftLink, h5py.ExternalLink)):
            raise FormatError(self.path, f"{where!r} is a {type(kind).__name__}; links are refused "
                              "(they can point into other files)")

    def get(self, group, rel: str, kind: str):
        """``group[rel]`` after checking every link on the way; ``kind`` is "group" or "dataset"."""
        h5py = self.h5py
        cur = group
        parts = rel.split("/")
        if not all(parts):
            raise FormatError(self.path, f"invalid HDF5 path {rel!r} under {group.name!r}")
        for i, part in enumerate(parts):
            where = f"{cur.name.rstrip('/')}/{part}"
            if not isinstance(cur, h5py.Group):
                raise FormatError(self.path, f"{cur.name!r} is not a group (looking for {rel!r})")
            self._link_ok(cur, part, where)
            try:
                cur = cur[part]
            except _H5_ERRORS as e:
                raise FormatError(self.path, f"cannot open {where!r}: {e}") from None
        want = h5py.Group if kind == "group" else h5py.Dataset
        if not isinstance(cur, want):
            raise FormatError(self.path, f"{cur.name!r} is not a {kind}")
        if kind == "dataset":
            self.check_dataset(cur)
        return cur

    def check_dataset(self, ds) -> None:
        try:
            external, virtual = ds.external, ds.is_virtual
            shape, itemsize = ds.shape, ds.dtype.itemsize
            stored = ds.id.get_storage_size()
            chunks = ds.chunks
        except _H5_ERRORS as e:
            raise FormatError(self.path, f"cannot read dataset header: {e}", tensor=ds.name) from None
        if external:
            raise FormatError(self.path, "dataset stores its data in external files; refused", tensor=ds.name)
        if virtual:
            raise FormatError(self.path, "virtual dataset (maps other files); refused", tensor=ds.name)
        if shape is None:
            raise FormatError(self.path, "dataset has a null dataspace", tensor=ds.name)
        declared = itemsize
        for d in shape:
            declared *= int(d)
        if declared > _BOMB_FLOOR:
            if chunks is None and stored != declared:
                raise FormatError(self.path, f"dataset declares {declared} bytes but stores {stored}; "
                                  "refused (truncated file or shape bomb)", tensor=ds.name)
            if declared > _BOMB_RATIO * stored:
                raise FormatError(self.path, f"dataset declares {declared} bytes but stores only {stored}; "
                                  "refused as a likely decompression/shape bomb", tensor=ds.name)

    def strings(self, obj, attr: str) -> Optional[list]:
        """A list-of-strings attribute (Keras' chunked form ``attr0``, ``attr1``... too); None if absent."""
        try:
            attrs = obj.attrs
            if attr in attrs:
                raw = [attrs[attr]]
            elif f"{attr}0" in attrs:
                raw, i = [], 0
                while f"{attr}{i}" in attrs:
                    raw.append(attrs[f"{attr}{i}"])
                    i += 1
            else:
                return None
        except _H5_ERRORS as e:
            raise FormatError(self.path, f"cannot read attribute {attr!r} of {obj.name!r}: {e}") from None
        out = []
        for value in raw:
            items = [value] if isinstance(value, (str, bytes)) else (
                list(np.asarray(value).ravel()) if isinstance(value, np.ndarray) else None)
            if items is None:
                raise FormatError(self.path, f"attribute {attr!r} of {obj.name!r} is not a list of strings")
            for it in items:
                if isinstance(it, bytes):
                    try:
                        it = it.decode("utf-8")
                    except UnicodeDecodeError:
                        raise FormatError(self.path, f"attribute {attr!r} of {obj.name!r} is not UTF-8") from None
                if not isinstance(it, str):
                    raise FormatError(self.path, f"attribute {attr!r} of {obj.name!r} holds "
                                      f"{type(it).__name__}, not strings")
                out.append(it)
        return out

    def scalar_string(self, obj, attr: str) -> Optional[str]:
        return _attr_str(obj, attr)

    def close(self) -> None:
        try:
            self.file.close()
        except _H5_ERRORS:  # pragma: no cover - closing a corrupt file
            pass


# -- layouts -----------------------------------------------------------------

def _legacy_root(h5: H5):
    """The group holding ``layer_names`` (root or ``model_weights``), or None."""
    if h5.strings(h5.file, "layer_names") is not None:
        return h5.file
    if "model_weights" in h5.file:
        g = h5.get(h5.file, "model_weights", "group")
        if h5.strings(g, "layer_names") is not None:
            return g
    return None


def _strip_weight(layer: str, weight: str) -> str:
    w = re.sub(r":\d+$", "", weight)
    return w[len(layer) + 1:] if w.startswith(layer + "/") else w


def legacy_entries(h5: H5, root) -> tuple:
    """(entries, layer names, {layer: raw weight_names}) of a legacy layout below ``root``."""
    layers = h5.strings(root, "layer_names")
    groups = list(layers)
    if "top_level_model_weights" in root and "top_level_model_weights" not in groups:
        groups.append("top_level_model_weights")  # Keras 3 model-level variables
    entries: list[Entry] = []
    raw: dict[str, list] = {}
    prefix = root.name.rstrip("/")
    for layer in groups:
        if layer not in root:
            raise FormatError(h5.path, f"layer_names lists {layer!r} but there is no group {layer!r} "
                              f"in {root.name!r}")
        g = h5.get(root, layer, "group")
        names = h5.strings(g, "weight_names")
        if names is None:
            raise FormatError(h5.path, f"layer group {g.name!r} has no weight_names attribute "
                              "(not a Keras weights file, or a damaged one)")
        raw[layer] = names
        for w in names:
            h5.get(g, w, "dataset")  # exists, hard-linked, not external
            entries.append(Entry(f"{layer}/{_strip_weight(layer, w)}", f"{prefix}/{layer}/{w}".lstrip("/"),
                                 layer))
    return entries, layers, raw


def _vars_groups(h5: H5) -> list:
    """Paths ("" for the root) of every group that has a ``vars`` child, walking hard links only."""
    h5py = h5.h5py
    out, stack = [], [("", h5.file)]
    seen = set()
    while stack:
        path, g = stack.pop()
        if g.id in seen:  # h5py object ids compare by (file, object address): hard-link cycles/DAGs
            continue
        seen.add(g.id)
        try:
            keys = list(g.keys())
        except _H5_ERRORS as e:
            raise FormatError(h5.path, f"cannot list group {g.name!r}: {e}") from None
        for k in keys:
            child = f"{path}/{k}" if path else k
            h5._link_ok(g, k, "/" + child)
            try:
                obj = g[k]
            except _H5_ERRORS as e:
                raise FormatError(h5.path, f"cannot open {child!r}: {e}") from None
            if isinstance(obj, h5py.Group):
                if k == "vars":
                    out.append(path)
                else:
                    stack.append((child, obj))
    return sorted(out, key=_natural)


def keras3_entries(h5: H5) -> list:
    """Entries of a Keras 3 ``.weights.h5`` file, named by the rules in the module docstring."""
    owners = _vars_groups(h5)
    owner_set = set(owners)
    labels: dict[str, str] = {}
    entries: list[Entry] = []
    for owner in owners:
        vars_path = f"{owner}/vars" if owner else "vars"
        vg = h5.get(h5.file, vars_path, "group")
        # Label: name attributes of the saveables along the path (outermost model excluded).
        parts = []
        comps = owner.split("/") if owner else []
        for i in range(1, len(comps) + 1):
            prefix = "/".join(comps[:i])
            if prefix in owner_set:
                g = h5.get(h5.file, f"{prefix}/vars", "group")
                parts.append(h5.scalar_string(g, "name") or comps[i - 1])
        label = "/".join(parts) if parts else (h5.scalar_string(vg, "name") or "")
        labels[owner] = label
        keys = sorted(vg.keys(), key=_natural)
        cls = re.sub(r"_\d+$", "", comps[-1]) if comps else None
        varnames = None
        if keys == [str(i) for i in range(len(keys))]:
            varnames = KERAS3_VARIABLES.get(cls, {}).get(len(keys)) if cls else None
        known = cls if varnames else None
        for i, k in enumerate(keys):
            h5.get(vg, k, "dataset")
            var = varnames[i] if varnames else f"vars/{k}"
            name = f"{label}/{var}" if label else var
            entries.append(Entry(name, f"{vars_path}/{k}", label, known))
    counts: dict[str, int] = {}
    for e in entries:
        counts[e.name] = counts.get(e.name, 0) + 1
    return [e if counts[e.name] == 1 else e._replace(name=e.h5path) for e in entries]


def _dtype_name(path: str, ds) -> str:
    dt = ds.dtype
    if dt.kind == "V" and dt.itemsize == 2 and _attr_str(ds, "dtype") == "bfloat16":
        return "bfloat16"
    try:
        return dtypes.name_of(dt)
    except (KeyError, TypeError):
        raise FormatError(path, f"dataset dtype {dt} is not a supported numeric type", tensor=ds.name) from None


def _attr_str(obj, key: str) -> Optional[str]:
    try:
        v = obj.attrs.get(key)
    except _H5_ERRORS:
        return None
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    return v if isinstance(v, str) else None


# -- isolation from HDF5's own parser bugs -------------------------------------------
#
# libhdf5 is not hardened against damaged files: a single flipped byte in a global
# heap (where variable-length strings such as Keras 3's ``name`` attributes live)
# makes it loop forever inside one C call, and crafted files have crashed it
# (HDFGroup/hdf5 issues #4111, #6125).  No Python-level check can interrupt that.
# So by default a reader first parses the file in a short-lived child process (same
# code, ``isolate=False``), which also reads every variable-length attribute we may
# use and every dataset we cannot memory-map; only if that finishes cleanly does
# the parent parse it.  HDF5 parsing is deterministic, so the parent then takes
# the same, proven path.  Cost: one interpreter start (~0.2 s) per file opened.

PROBE_TIMEOUT = 120.0  # seconds; a sound weights file parses in well under one


def probe(path: str, timeout: float = PROBE_TIMEOUT, fd: Optional[int] = None) -> None:
    """Parse ``path`` (or the open file ``fd``, which the child inherits) in a child process first;
    FormatError if it fails, hangs or crashes there."""
    import subprocess
    import sys

    if not sys.executable:  # embedded interpreter: no way to start a child; parse in-process
        return
    pkg_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    code = ("import sys; from mapspec.formats.keras_weights import _probe_main; "
            "sys.exit(_probe_main(sys.argv[1], *map(int, sys.argv[2:])))")
    try:
        done = subprocess.run([sys.executable, "-c", code, path, *([str(fd)] if fd is not None else [])],
                              capture_output=True, text=True, timeout=timeout, env=env,
                              pass_fds=(fd,) if fd is not None else ())
    except subprocess.TimeoutExpired:
        raise FormatError(path, f"the HDF5 library did not finish parsing this file within {timeout:g} s; "
                          "it is damaged or crafted (libhdf5 can loop forever on a corrupt heap). "
                          "Refused") from None
    if done.returncode == 0:
        return
    if done.returncode == 3:
        try:
            err = json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            err = {"message": done.stdout.strip()[-300:]}
        raise FormatError(path, err.get("message") or "unreadable", offset=err.get("offset"),
                          tensor=err.get("tensor"))
    last = (done.stderr.strip().splitlines() or [""])[-1][:300]
    how = f"was killed by signal {-done.returncode}" if done.returncode < 0 else \
        f"failed (exit status {done.returncode}: {last})"
    raise FormatError(path, f"parsing this file in a child process {how}; the file is damaged or crafted "
                      "in a way that breaks libhdf5. Refused")


MAX_TIMEOUT = 86400.0  # seconds


def reader_options(path: str, options: dict) -> tuple:
    """(isolate, timeout) from reader options, checked."""
    isolate = options.get("isolate", True)
    if not isinstance(isolate, bool):
        raise MapspecError(f"{path}: option isolate must be true or false, not {isolate!r}")
    timeout = options.get("timeout", PROBE_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= MAX_TIMEOUT:
        raise MapspecError(f"{path}: option timeout must be a number of seconds in (0, {MAX_TIMEOUT:g}], not "
                           f"{timeout!r}")
    return isolate, float(timeout)
