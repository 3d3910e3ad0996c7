"""Keras HDF5 weights, the tensors: :class:`KerasReader` and :class:`KerasWriter` over the layouts of
:mod:`.keras_hdf5`.  The format is :mod:`mapspec.formats.keras`.
"""

from __future__ import annotations

import builtins
import json
import os
import re
import shutil
import tempfile
from typing import Any, NamedTuple, Optional, Sequence

import numpy as np

from .. import dtypes
from ..errors import FormatError, MapspecError
from ..files import MappedFile
from .base import Reader, TensorInfo, Writer, announced_dtype
from .keras_hdf5 import (H5, KERAS3, KERAS3_ROOTS, LEGACY, LEGACY_BACKEND, LEGACY_KERAS_VERSION, NAME, PROBE_TIMEOUT,
                         WEIGHT_RANK, WRITE_DTYPES, _ATTR_LIMIT, _H5_ERRORS, Entry, _dtype_name, _h5py, _legacy_root,
                         _vars_groups, keras3_entries, legacy_entries, probe)


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
        elif any(r in h5.file for r in KERAS3_ROOTS):
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
    if names and not any(n.split("/", 1)[0] in KERAS3_ROOTS for n in names):
        raise MapspecError(f"{path}: a Keras 3 .weights.h5 keeps its variables under layers/ (the model's own under "
                           f"vars/), which names like {names[0]!r} leave out: neither Keras nor mapspec would read "
                           f"the file; name them layers/{names[0]}, or pass option template=")
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
