"""Keras HDF5 weights: the legacy ``.h5`` layout and the Keras 3 ``.weights.h5`` layout.

**Legacy** (Keras 1/2 ``save_weights("x.h5")``, Keras 3 ``model.save("x.h5")``): a
group (the root, or ``model_weights`` in a full-model file) has attribute
``layer_names`` (in model order; chunked as ``layer_names0``, ``layer_names1``...
when large); each layer group has ``weight_names`` (``conv1/kernel:0`` in Keras 2,
``conv1/kernel`` in Keras 3) and each weight name is a dataset path below that
layer group (``conv1/conv1/kernel:0``).  Keras loads these **by position**: the
n-th layer with weights gets the n-th group, its weights in ``weight_names`` order.

Exposed names: ``<layer>/<weight>``, where ``<weight>`` is the weight name without
a leading ``<layer>/`` and without a ``:<digits>`` suffix (``conv1/kernel:0`` in
layer ``conv1`` -> ``conv1/kernel``).  Order: ``layer_names`` then ``weight_names``.

**Keras 3** (``model.save_weights("x.weights.h5")``): one group per saveable object,
named by its *path in the model*, not by layer name: ``layers/conv2d/vars/0``,
``layers/conv2d_1/vars/1`` (container members are named by snake-cased class name,
deduplicated with ``_1``, ``_2``...; attributes of subclassed models by attribute
name).  Variables are stored by index, in ``trainable + non_trainable`` order.
Recent Keras 3 (3.15 here) also stores the layer's name as attribute ``name`` on each
``vars`` group; older Keras 3 files lack it.

Exposed names: ``<layer label>/<variable name>``:

* layer label: the ``name`` attributes of the ``vars`` groups along the path (outer
  model excluded), joined with ``/`` -- ``conv1``, or ``block1/conv1`` for a nested
  model; where the attribute is missing, the path component (``conv2d_1``).
* variable name: when the group's path component, stripped of its ``_<n>`` suffix,
  is a built-in class in :data:`KERAS3_VARIABLES` *and* the number of stored
  variables selects one unambiguous list there (``conv2d`` with 2 -> kernel, bias;
  with 1 -> kernel; ``batch_normalization`` with 4 -> gamma, beta, moving_mean,
  moving_variance), that name; otherwise ``vars/<i>`` (``my_block/vars/0``).  The
  class cannot be known from the file in other cases (custom layers, attribute
  paths, a BatchNormalization with only one of scale/center), so we do not guess.
* names that would still collide fall back to the dataset's full HDF5 path.

Keras 3 files do not record model order (HDF5 lists groups alphabetically); infos are
in natural path order (``conv2d_2`` before ``conv2d_10``).  Each TensorInfo's
``meta`` has ``h5path`` (dataset path), ``layer`` and, when known, ``keras_class``.

Writing: the legacy layout by default, the Keras 3 layout when the output name
ends with ``.weights.h5`` (also recognised inside the temporary name
``.x.weights.h5.<random>.tmp`` that atomic output uses) or with
``layout="keras3"``/``"legacy"``.  Option ``template`` (a Keras weights file of
either layout, a full-model ``.h5``, or a ``keras.Model``) fixes the exact structure
Keras expects; see :class:`KerasWriter`.  Datasets are written as tensors arrive.

Safety: like Keras' own loader we refuse soft/external links, external and virtual
datasets and "shape bomb" datasets whose declared size is far larger than what is
stored; contiguous datasets are handed out as zero-copy memory-mapped views.
Because libhdf5 itself can hang or crash on damaged files, the reader first parses
each file in a child process (see :func:`probe`; option ``isolate=False`` skips it).
"""

from __future__ import annotations

import builtins
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, NamedTuple, Optional, Sequence

import numpy as np

from .. import dtypes
from ..errors import FormatError, MapspecError
from ..files import MappedFile, read_head
from .base import Reader, TensorInfo, Writer, announced_dtype, save_with

NAME = "keras"
LEGACY, KERAS3 = "legacy", "keras3"
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


def sniff(path: str, head: bytes) -> bool:
    return head.startswith(_HDF5_MAGIC)


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
        try:
            v = obj.attrs.get(attr)
        except _H5_ERRORS:
            return None
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        return v if isinstance(v, str) else None

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


def _probe_main(path: str, fd: Optional[int] = None) -> int:
    """Child side of the probe: 0 if the file parses and reads, 3 (message on stdout) on FormatError;
    ``fd``: read this inherited descriptor (an unnamed file) instead of ``path``."""
    try:
        r = KerasReader(path, isolate=False, fileobj=None if fd is None else builtins.open(fd, "rb", closefd=False))
        try:
            for node in r.nodes()[:1]:
                r.attrs(node)  # parses model_config, a variable-length string
            for name, info in r.infos().items():
                ds = r._datasets[name]
                if info.numel and r._mapped(ds, dtypes.to_numpy(info.dtype), info) is None:
                    r.read(name)
        finally:
            r.close()
    except FormatError as e:
        print(json.dumps({"message": e.bare, "offset": e.offset, "tensor": e.tensor}))
        return 3
    return 0


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
    code = ("import sys; from mapspec.formats.keras import _probe_main; "
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


class KerasReader(Reader):
    """Lazy reader of either layout (``layout`` attribute says which).

    ``isolate`` (default True) parses the file in a child process first (see
    :func:`probe`); pass False only for files you trust or have already probed.
    ``fileobj``: read this open binary file (an unnamed temporary file: a ``.keras`` archive's
    weights) instead of ``path``, which then only names it in messages.
    """

    format = NAME

    def __init__(self, path: str, isolate: bool = True, timeout: float = PROBE_TIMEOUT, fileobj=None):
        super().__init__(path)
        self._fileobj = fileobj
        if isolate:
            probe(path, timeout, None if fileobj is None else fileobj.fileno())
        self._h5 = H5(path, fileobj)
        self._map: Optional[MappedFile] = None
        try:
            self._open()
        except _H5_ERRORS as e:  # HDF5 failing deep inside a check (``in``, attribute access...)
            self._h5.close()
            raise FormatError(path, f"corrupt HDF5 structure: {type(e).__name__}: {e}") from None
        except BaseException:
            self._h5.close()
            raise

    def _open(self) -> None:
        h5 = self._h5
        root = _legacy_root(h5)
        self.raw_weight_names: dict[str, list] = {}
        if root is not None:
            self.layout = LEGACY
            entries, self.layer_names, self.raw_weight_names = legacy_entries(h5, root)
            self._root = root
        elif "layers" in h5.file or "vars" in h5.file:
            self.layout = KERAS3
            entries = keras3_entries(h5)
            self.layer_names = list(dict.fromkeys(e.layer for e in entries))
            self._root = h5.file
        else:
            raise FormatError(self.path, "HDF5 file without Keras weights: no layer_names attribute (legacy "
                              ".h5), no model_weights group and no layers/ or vars/ group (Keras 3 "
                              ".weights.h5)")
        self._datasets: dict[str, Any] = {}
        self.entries: dict[str, Entry] = {}
        for e in entries:
            if e.name in self.entries:
                raise FormatError(self.path, f"two weights are both named {e.name!r} (datasets "
                                  f"{self.entries[e.name].h5path!r} and {e.h5path!r})", tensor=e.name)
            ds = h5.get(h5.file, e.h5path, "dataset")
            dname = _dtype_name(self.path, ds)
            meta = {"h5path": e.h5path, "layer": e.layer}
            if e.keras_class:
                meta["keras_class"] = e.keras_class
            self.entries[e.name] = e
            self._datasets[e.name] = ds
            self._infos[e.name] = TensorInfo(e.name, tuple(int(d) for d in ds.shape), dname, meta)

    def nodes(self) -> list[str]:
        return list(self.layer_names)

    def attrs(self, node: str) -> dict:
        """For a full-model legacy file, the layer's config (``class_name`` plus its config dict)."""
        text = self._h5.scalar_string(self._h5.file, "model_config")
        if not text:
            return {}
        try:
            cfg = json.loads(text)
        except (ValueError, RecursionError):
            raise FormatError(self.path, "root attribute model_config is not valid JSON") from None
        layers = cfg.get("config", {}) if isinstance(cfg, dict) else {}
        layers = layers.get("layers", []) if isinstance(layers, dict) else layers
        for layer in layers if isinstance(layers, list) else []:
            if isinstance(layer, dict) and isinstance(layer.get("config"), dict) \
                    and layer["config"].get("name") == node:
                return {"class_name": layer.get("class_name"), **layer["config"]}
        return {}

    def _read(self, info: TensorInfo) -> np.ndarray:
        ds = self._datasets[info.name]
        want = dtypes.to_numpy(info.dtype)
        if info.numel == 0:
            return np.empty(info.shape, dtype=want)
        view = self._mapped(ds, want, info)
        if view is not None:
            return view
        try:
            arr = np.asarray(ds[()])
        except _H5_ERRORS as e:
            raise FormatError(self.path, f"cannot read dataset: {e}", tensor=info.name) from None
        if arr.shape != info.shape or arr.dtype.itemsize != want.itemsize:
            raise FormatError(self.path, f"dataset read as {arr.shape} {arr.dtype}, header said {info.shape}",
                              tensor=info.name)
        if info.dtype == "bfloat16":
            return arr.view(want).reshape(info.shape)
        if not arr.dtype.isnative:
            arr = arr.astype(arr.dtype.newbyteorder("="))
        return arr

    def _mapped(self, ds, want: np.dtype, info: TensorInfo) -> Optional[np.ndarray]:
        """A zero-copy view for a contiguous, unfiltered, native-order dataset (None otherwise)."""
        try:
            if ds.chunks is not None or ds.compression or ds.id.get_offset() is None:
                return None
            offset = ds.id.get_offset()
            stored = ds.id.get_storage_size()
            native = ds.dtype.isnative or ds.dtype.kind == "V"
        except _H5_ERRORS:
            return None
        if not native or stored != info.nbytes:
            return None
        if self._map is None:
            self._map = MappedFile(self.path, None if self._fileobj is None else self._fileobj.fileno())
        return self._map.array(offset, want, info.shape, f"tensor {info.name!r}")

    def close(self) -> None:
        self._datasets = {}
        self._h5.close()
        if self._map is not None:
            self._map.close()


# -- writing -----------------------------------------------------------------

def _is_keras3_name(path: str) -> bool:
    return os.path.basename(str(path)).endswith(".weights.h5")


class Plan(NamedTuple):
    """Where every tensor goes: dataset paths and the group skeleton with attributes."""

    datasets: dict  # tensor name -> dataset path
    groups: list  # [(group path, {attr: value})], parents before children
    shapes: dict  # tensor name -> expected shape (from a template) or None


def _template_reader(template, layout: str) -> tuple:
    """(KerasReader, temp dir to clean or None) for a template path, an open KerasReader (the writer closes
    it after planning) or a keras Model."""
    if isinstance(template, (str, os.PathLike)):
        return KerasReader(str(template)), None
    if isinstance(template, KerasReader):
        return template, None
    if hasattr(template, "save_weights") and hasattr(template, "layers"):
        tmp = tempfile.mkdtemp(prefix="mapspec-keras-")
        if layout == KERAS3:
            p = os.path.join(tmp, "template.weights.h5")
            template.save_weights(p)
        else:
            p = os.path.join(tmp, "template.h5")
            _legacy_template_from_model(template, p)
        return KerasReader(p, isolate=False), tmp  # we just wrote it
    raise MapspecError(f"option template must be a Keras weights file or a keras Model, not "
                       f"{type(template).__name__}")


def _legacy_template_from_model(model, path: str) -> None:
    """The legacy skeleton of ``model`` (layer order and weight names), values zero, via h5py only."""
    h5py = _h5py()
    with h5py.File(path, "w") as f:
        _put_strings(f, "layer_names", [layer.name for layer in model.layers])
        for layer in model.layers:
            g = f.create_group(layer.name)
            weights = list(layer.trainable_weights) + list(layer.non_trainable_weights)
            names = [str(getattr(w, "path", None) or w.name) for w in weights]
            _put_strings(g, "weight_names", names)
            for n, w in zip(names, weights):
                g.create_dataset(n, shape=tuple(w.shape), dtype="f4")


def _put_strings(obj, attr: str, values: Sequence[str]) -> None:
    """Write a list-of-strings attribute as Keras does (bytes; chunked when over 64 KB)."""
    data = np.asarray([v.encode("utf-8") for v in values]) if values else np.asarray([], dtype="S1")
    if data.nbytes <= _ATTR_LIMIT:
        obj.attrs[attr] = data
        return
    n = 1
    while True:
        chunks = np.array_split(data, n)
        if all(c.nbytes <= _ATTR_LIMIT for c in chunks):
            break
        n += 1
    for i, c in enumerate(chunks):
        obj.attrs[f"{attr}{i}"] = c


def _legacy_plan(infos: Sequence[TensorInfo], template: Optional["KerasReader"], path: str) -> tuple:
    """(Plan, layer_names, {layer: weight_names}, root attrs) for the legacy layout."""
    names = [i.name for i in infos]
    if template is not None:
        if template.layout != LEGACY:
            raise MapspecError(f"{path}: a Keras 3 .weights.h5 template does not record the layer order the "
                               "legacy .h5 layout needs; give a legacy .h5 template or the keras Model")
        _match_template(path, infos, template)
        layers = list(template.layer_names)
        raw = template.raw_weight_names
        strip = template._root.name.strip("/")  # "" or "model_weights": we write at the root
        datasets = {e.name: e.h5path[len(strip) + 1:] if strip else e.h5path for e in template.entries.values()}
        extra = [k for k in raw if k not in layers]  # top_level_model_weights
        root_attrs = {k: template._h5.scalar_string(template._root, k) for k in ("backend", "keras_version")}
        groups = [(layer, {}) for layer in layers + extra]
        return Plan(datasets, groups, {n: template.info(n).shape for n in names}), layers, raw, root_attrs
    layers: list[str] = []
    per: dict[str, list] = {}
    datasets = {}
    for n in names:
        if "/" not in n:
            raise MapspecError(f"{path}: tensor {n!r} is not named <layer>/<weight> (e.g. conv1/kernel); "
                               "the legacy Keras layout needs a layer for every weight (or give option template)")
        layer, weight = n.split("/", 1)
        if layer not in per:
            layers.append(layer)
            per[layer] = []
        per[layer].append(weight)
    raw = {}
    for layer, weights in per.items():
        if all(w in WEIGHT_RANK for w in weights):
            weights = sorted(weights, key=lambda w: WEIGHT_RANK[w])
        raw[layer] = [f"{layer}/{w}" for w in weights]
        for w in weights:
            datasets[f"{layer}/{w}"] = f"{layer}/{layer}/{w}"
    groups = [(layer, {}) for layer in layers]
    return Plan(datasets, groups, {n: None for n in names}), layers, raw, {}


def _match_template(path: str, infos: Sequence[TensorInfo], template: "KerasReader") -> None:
    have = {i.name for i in infos}
    want = set(template.names())
    missing = [n for n in template.names() if n not in have]
    extra = [i.name for i in infos if i.name not in want]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"the template needs {len(missing)} tensor(s) not written: {', '.join(missing[:10])}")
        if extra:
            parts.append(f"{len(extra)} tensor(s) not in the template: {', '.join(extra[:10])}")
        raise MapspecError(f"{path}: output does not match the Keras template {template.path}: "
                           + "; ".join(parts))
    for i in infos:
        t = template.info(i.name).shape
        if tuple(i.shape) != tuple(t):
            raise MapspecError(f"{path}: tensor {i.name!r} has shape {tuple(i.shape)} but the Keras template "
                               f"expects {tuple(t)}")


def _keras3_plan(infos: Sequence[TensorInfo], template: Optional["KerasReader"], path: str) -> Plan:
    names = [i.name for i in infos]
    if template is not None:
        if template.layout != KERAS3:
            raise MapspecError(f"{path}: writing the Keras 3 layout needs a Keras 3 .weights.h5 template "
                               "(model.save_weights('x.weights.h5')) or the keras Model, not a legacy .h5")
        _match_template(path, infos, template)
        h5 = template._h5
        groups = []
        for owner in _vars_groups(h5):
            comps = owner.split("/") if owner else []
            for i in range(1, len(comps) + 1):
                groups.append(("/".join(comps[:i]), {}))
            vpath = f"{owner}/vars" if owner else "vars"
            vg = h5.get(h5.file, vpath, "group")
            name = h5.scalar_string(vg, "name")
            groups.append((vpath, {"name": name} if name is not None else {}))
        seen, ordered = set(), []
        for g, a in groups:
            if g not in seen:
                seen.add(g)
                ordered.append((g, a))
        datasets = {e.name: e.h5path for e in template.entries.values()}
        return Plan(datasets, ordered, {n: template.info(n).shape for n in names})
    bad = [n for n in names if not re.fullmatch(r"(?:.+/)?vars/[^/]+", n)]
    if bad:
        raise MapspecError(f"{path}: the Keras 3 layout stores variables by model path and index "
                           f"(layers/conv2d/vars/0), which names like {bad[0]!r} do not give; pass option "
                           "template= (a .weights.h5 saved by model.save_weights from the target model, or the "
                           "keras Model itself), or name tensors by their HDF5 path")
    return Plan({n: n for n in names}, [], {n: None for n in names})


class KerasWriter(Writer):
    """Writes Keras HDF5 weights, one dataset per ``write`` call.

    Options:

    ``layout``
        ``"legacy"`` or ``"keras3"``; default by output name (``.weights.h5`` -> keras3).
    ``template``
        A Keras weights file (legacy ``.h5``, full-model ``.h5`` or ``.weights.h5``)
        or a ``keras.Model``.  Its tensor names must equal the announced ones (same
        shapes); the output copies its structure exactly: layer order, weight-less
        layers and raw weight names (legacy), group paths and ``name`` attributes
        (Keras 3).

    Without a template, legacy output takes layers in order of first appearance
    (names ``<layer>/<weight>``, the first ``/`` splits), weights within a layer in
    Keras' creation order when all names are in :data:`WEIGHT_RANK`, else as
    announced; Keras 3 output needs names that are HDF5 paths (``layers/conv2d/vars/0``).
    """

    format = NAME

    def __init__(self, path: str, infos: Sequence[TensorInfo], layout: Optional[str] = None, template=None,
                 final_path: Optional[str] = None, **options):
        super().__init__(path, infos)
        h5py = _h5py()
        layout = layout or (KERAS3 if _is_keras3_name(final_path or path) else LEGACY)
        if layout not in (LEGACY, KERAS3):
            raise MapspecError(f"{path}: unknown Keras layout {layout!r} (use 'legacy' or 'keras3')")
        self.layout = layout
        for i in self.infos:
            dn = announced_dtype(i)
            if dn not in WRITE_DTYPES or (layout == LEGACY and dn == "bfloat16"):
                raise MapspecError(f"{path}: tensor {i.name!r} is {dn}, which the Keras {layout} layout cannot "
                                   "hold in a form Keras reads; cast it to float32"
                                   + (" or write a .weights.h5 file" if dn == "bfloat16" else ""))
        tpl, tmpdir = (None, None)
        if template is not None:
            tpl, tmpdir = _template_reader(template, layout)
        try:
            if layout == LEGACY:
                self.plan, layers, raw, root_attrs = _legacy_plan(self.infos, tpl, path)
            else:
                self.plan = _keras3_plan(self.infos, tpl, path)
        finally:
            if tpl is not None:
                tpl.close()
            if tmpdir is not None:
                shutil.rmtree(tmpdir, ignore_errors=True)
        try:
            self._f = h5py.File(path, "w", locking=False)
        except OSError as e:
            raise MapspecError(f"{path}: cannot create: {e}") from None
        f = self._f
        for g, attrs in self.plan.groups:
            grp = f.require_group(g)
            for k, v in attrs.items():
                grp.attrs[k] = v
        if layout == LEGACY:
            _put_strings(f, "layer_names", layers)
            f.attrs["backend"] = (root_attrs.get("backend") or LEGACY_BACKEND).encode()
            f.attrs["keras_version"] = (root_attrs.get("keras_version") or LEGACY_KERAS_VERSION).encode()
            for layer, weights in raw.items():
                _put_strings(f.require_group(layer), "weight_names", weights)

    def write(self, name: str, array: np.ndarray) -> None:
        array = np.asarray(array)
        info = self._check(name, array)
        want = self._check_dtype(name, info, array)
        dpath = self.plan.datasets[name]
        parent, _, leaf = dpath.rpartition("/")
        grp = self._f.require_group(parent) if parent else self._f
        if want == "bfloat16":
            ds = grp.create_dataset(leaf, data=np.ascontiguousarray(array).reshape(array.shape))
            ds.attrs["dtype"] = "bfloat16"  # how Keras 3 marks bfloat16 (stored as 2-byte opaque)
        else:
            grp.create_dataset(leaf, data=array)

    def close(self) -> None:
        super().close()
        self._f.close()

    def abort(self) -> None:
        try:
            self._f.close()
        except Exception:  # the file is being discarded anyway
            pass


# Options a user may give (spec source/target options; --source-option, --template-option, --target-option, inspect --option); anything else is an error.
READ_OPTIONS = ("isolate", "timeout")
WRITE_OPTIONS = ("layout",)


MAX_TIMEOUT = 86400.0  # seconds


def open(path: str, **options) -> KerasReader:  # noqa: A001 - the format API's name
    """Options: ``isolate`` (default True: parse in a child process first), ``timeout`` (seconds, > 0).

    Both are safety options: a spec may not set them (the spec loader refuses), only the command line.
    A ``.keras`` archive (a zip) named as format ``keras`` is read by :mod:`.keras_archive`."""
    isolate, timeout = reader_options(path, options)
    from . import keras_archive

    if keras_archive.sniff(path, read_head(path)):
        return keras_archive.KerasArchiveReader(path, isolate=isolate, timeout=timeout)
    return KerasReader(path, isolate=isolate, timeout=timeout)


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


def create(path: str, infos: Sequence[TensorInfo], **options) -> KerasWriter:
    if str(options.get("final_path") or path).lower().endswith(".keras"):
        from . import keras_archive

        if options.pop("layout", None) not in (None, KERAS3):
            raise MapspecError(f"{path}: a .keras archive holds the Keras 3 layout only")
        return keras_archive.create(path, infos, **options)
    return KerasWriter(path, infos, **options)


def save(path: str, tensors, **options) -> None:
    save_with(create, path, tensors, **options)
