"""PyTorch checkpoints (``torch.save``): the zip format (torch >= 1.6) and legacy pickles.

Reading goes through ``torch.load(path, map_location="cpu", weights_only=True,
mmap=True)``: torch's restricted unpickler, never the full one, so a checkpoint is
data and never code.  A pickle that needs anything outside weights_only's
allow-list is refused with a :class:`FormatError` (we never retry
with weights_only off).  ``mmap=True`` maps the zip's storages instead of reading
them, so names/shapes/dtypes cost no tensor I/O; legacy (pre-zip) pickles cannot be
mapped and are loaded whole by torch.

Naming rules (what ``infos()`` lists):

* A flat ``{name: tensor}`` (``model.state_dict()``) keeps its names.
* **Wrappers.**  At the top level, if exactly one key out of :data:`.torch_load.WRAPPER_KEYS`
  (``state_dict``, ``model_state_dict``, ``model_state``, ``model``, ``module``,
  ``net``, ``network``) holds a mapping with at least one tensor somewhere below,
  and no other top-level value is a tensor, that mapping becomes the new top level:
  its names are exposed unprefixed.  The rule repeats (``{"model": {"module": ...}}``).
  Everything else at the old top level (epoch counters, optimizer state, even
  optimizer tensors) is *not* exposed and is listed in ``reader.skipped``;
  ``reader.wrapper`` records the key path taken (``"state_dict"``, ``"model.module"``)
  and each TensorInfo's ``meta["wrapper"]`` repeats it.  Option ``root=`` overrides:
  ``root="ema_state_dict"`` (or a list of keys) descends explicitly, ``root=""``
  disables unwrapping.
* **Nesting.**  Other nested mappings are flattened with ``.`` joins
  (``{"enc": {"w": t}}`` -> ``enc.w``); lists/tuples are named by index
  (``layers.0``); non-string keys go through ``str``.  Two paths giving the same
  name are a :class:`FormatError`.
* Non-tensor leaves (ints, floats, strings, ``None``, ``torch.Size``...) and tensors
  mapspec cannot hold (complex, quantized, sparse) are listed in ``reader.skipped``
  (``{name: reason}``), never silently dropped without trace.
* A file holding one bare tensor exposes it as ``tensor``.

Writing streams and does not import torch.  The pickle (``data.pkl``) depends only on
the announced names, shapes and dtypes, so it is produced up front from stand-in
objects (a tensor stand-in reduces to ``torch._utils._rebuild_tensor_v2`` exactly as a
real tensor does, storages become the same persistent ids ``torch.save`` emits, torch
globals are written by name), byte for byte what ``torch.save`` pickles.  The zip
container is written by :class:`.torch_zip.ZipStore` in the layout of torch's own
``PyTorchStreamWriter``: stored records, 64-byte aligned data (so ``mmap=True``
loading works), CRC-32 in a data descriptor after each record's data, ZIP64 where
sizes or offsets need it.  ``data.pkl`` goes first, then one ``data/<i>`` record per
tensor as it arrives, copied piece by piece into a 16 MiB buffer when it arrives as a
view that needs copying (transposed, other byte order) and not copied at all when
contiguous.  Nothing larger than that buffer is ever held; torch itself is not needed
to write (importing it alone costs more than a second and ~200 MB).  The result is
what ``torch.save`` of a plain dict writes and loads with ``weights_only=True`` and
``mmap=True``.

Option ``stream=False`` instead collects every tensor and calls ``torch.save`` at
``close()``: that holds the whole model in memory (one reference per array given to
``write``, plus the torch tensors sharing that memory) and is kept only as a
cross-check.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import secrets
import struct
import sys
import warnings
from typing import Any, NamedTuple, Optional, Sequence, Union

import numpy as np

from .. import dtypes
from ..errors import FormatError, MapspecError
from ..files import create_file
from .base import Reader, TensorInfo, Writer, announced_dtype, save_with
from .chunks import c_order_chunks
from .torch_load import check_view, flatten, import_torch, is_zip, load, unwrap
from .torch_zip import ALIGN, ZipStore

NAME = "torch"
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a"  # protocol 2, then the 10-byte magic number torch pickles first
_PICKLE_PROTOCOL = 2  # what torch.save uses
_CHUNK = 16 << 20  # bytes per piece when a tensor arrives as a view that needs copying (transposed, byte order)


class TorchDType(NamedTuple):
    """How a mapspec dtype travels through torch."""

    torch_name: str  # attribute of the torch module (torch.bfloat16)
    storage: Optional[str]  # legacy typed-storage class torch.save pickles, None if it uses UntypedStorage
    numpy_view: Optional[str]  # numpy dtype to view through when torch has no numpy equivalent


DTYPES: dict[str, TorchDType] = {
    "float64": TorchDType("float64", "DoubleStorage", None),
    "float32": TorchDType("float32", "FloatStorage", None),
    "float16": TorchDType("float16", "HalfStorage", None),
    "bfloat16": TorchDType("bfloat16", "BFloat16Storage", "int16"),
    "float8_e4m3fn": TorchDType("float8_e4m3fn", None, "uint8"),
    "float8_e5m2": TorchDType("float8_e5m2", None, "uint8"),
    "int64": TorchDType("int64", "LongStorage", None),
    "int32": TorchDType("int32", "IntStorage", None),
    "int16": TorchDType("int16", "ShortStorage", None),
    "int8": TorchDType("int8", "CharStorage", None),
    "uint64": TorchDType("uint64", None, None),
    "uint32": TorchDType("uint32", None, None),
    "uint16": TorchDType("uint16", None, None),
    "uint8": TorchDType("uint8", "ByteStorage", None),
    "bool": TorchDType("bool", "BoolStorage", None),
}

WRITE_DTYPES = None  # every mapspec dtype has a torch dtype (torch >= 2.3 for uint16/32/64)


def _by_torch_dtype(torch) -> dict:
    """torch.dtype -> mapspec name, for the dtypes this torch build has."""
    out = {}
    for name, d in DTYPES.items():
        td = getattr(torch, d.torch_name, None)
        if td is not None:
            out[td] = name
    return out


def sniff(path: str, head: bytes) -> bool:
    """A torch zip (first member ``<archive>/data.pkl``) or a legacy torch pickle."""
    if head.startswith(_LEGACY_MAGIC):
        return True
    if head[:4] != b"PK\x03\x04" or len(head) < 30:
        return False
    name_len = struct.unpack("<H", head[26:28])[0]
    first = head[30:30 + name_len]
    return first == b"data.pkl" or first.endswith(b"/data.pkl") or (
        30 + name_len > len(head) and b"/" in first)  # name cut off by the 64-byte head


class TorchReader(Reader):
    """A state dict opened through ``torch.load(weights_only=True, mmap=True)``.

    Attributes: ``wrapper`` (key path unwrapped, or None), ``skipped`` ({name: reason}
    for everything in the file not exposed as a tensor), ``mmap`` (False for legacy
    pickles, which torch loads into memory).
    """

    format = NAME

    def __init__(self, path: str, root: Union[None, str, Sequence[str]] = None):
        super().__init__(path)
        torch = import_torch()
        self.mmap = is_zip(path)
        obj = load(path)
        obj, self.wrapper, self.skipped = unwrap(obj, torch, root)
        try:
            pairs, skipped = flatten(obj, torch)
        except MapspecError as e:
            raise FormatError(path, str(e)) from None
        self.skipped.update(skipped)
        names = _by_torch_dtype(torch)
        self._tensors: dict[str, Any] = {}
        meta = {"wrapper": self.wrapper} if self.wrapper else None
        for name, t in pairs:
            if name in self._tensors:
                raise FormatError(path, "two entries of the checkpoint flatten to the same name "
                                  "(a key containing '.' next to a nested mapping?)", tensor=name)
            why = self._unsupported(t, names, torch)
            if why:
                self.skipped[name] = why
                continue
            check_view(path, name, t)
            self._tensors[name] = t
            self._infos[name] = TensorInfo(name, tuple(int(d) for d in t.shape), names[t.dtype], meta)

    @staticmethod
    def _unsupported(t, names: dict, torch) -> Optional[str]:
        if t.layout != torch.strided:
            return f"{t.layout} tensor (only dense tensors are supported)"
        if t.is_quantized:
            return "quantized tensor (dequantize it before saving)"
        if t.dtype not in names:
            return f"dtype {t.dtype} is not supported by mapspec"
        if t.device.type != "cpu":
            return f"tensor on device {t.device.type!r} after map_location='cpu'"
        return None

    def _read(self, info: TensorInfo) -> np.ndarray:
        torch = import_torch()
        t = self._tensors[info.name].detach()
        t = t.resolve_conj().resolve_neg()
        spec = DTYPES[info.dtype]
        try:
            if spec.numpy_view:
                arr = t.view(getattr(torch, spec.numpy_view)).numpy().view(dtypes.to_numpy(info.dtype))
            else:
                arr = t.numpy()
        except (RuntimeError, TypeError) as e:
            raise FormatError(self.path, f"cannot view as numpy: {e}", tensor=info.name) from None
        arr.flags.writeable = False  # storages may be shared between names; never modify in place
        return arr

    def tensor(self, name: str):
        """The torch tensor itself (for callers that work in torch)."""
        self.info(name)
        return self._tensors[name]

    def close(self) -> None:
        self._tensors = {}


# -- writing ---------------------------------------------------------------

class _Global:
    """Stand-in for a module attribute torch.save pickles by name (``torch._utils._rebuild_tensor_v2``,
    ``torch.FloatStorage``, ``torch.bfloat16``): written as a GLOBAL opcode without importing torch."""

    __slots__ = ("module", "name")

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle insists that a reduce function be callable
        raise TypeError(f"{self.module}.{self.name} is a pickling stand-in")


_GLOBALS: dict = {}


def _global(module: str, name: str) -> _Global:
    """One stand-in per global, so that repeated uses are memoized as torch's pickle memoizes them."""
    key = (module, name)
    if key not in _GLOBALS:
        _GLOBALS[key] = _Global(module, name)
    return _GLOBALS[key]


class _Storage:
    """Stand-in for a storage: pickled as torch.save's persistent id, never as an object."""

    def __init__(self, pid: tuple):
        self.pid = pid


class _Tensor:
    """Stand-in for a contiguous tensor: reduces exactly like ``torch.Tensor`` does."""

    def __init__(self, rebuild, args: tuple):
        self._reduce = (rebuild, args)

    def __reduce_ex__(self, protocol):
        return self._reduce


class _Pickler(pickle._Pickler):
    """Python's own pure-Python pickler, taught to write :class:`_Global` stand-ins as GLOBAL opcodes.

    (The C pickler cannot be taught that: it imports a global's module to check it.  The
    pickle is small, kilobytes per thousand tensors, so the Python implementation costs
    nothing noticeable.)
    """

    dispatch = dict(pickle._Pickler.dispatch)

    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, _Storage) else None

    def _save_global_standin(self, obj: _Global) -> None:
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("ascii"))
        self.memoize(obj)

    dispatch[_Global] = _save_global_standin


def _strides(shape: Sequence[int]) -> tuple:
    out, step = [], 1
    for d in reversed(shape):
        out.append(step)
        step *= max(int(d), 1)
    return tuple(reversed(out))


def data_pickle(infos: Sequence[TensorInfo], wrap: Optional[str] = None) -> bytes:
    """The ``data.pkl`` torch.save would write for ``{name: tensor}`` in ``infos`` order, without torch.

    Tensor ``i`` lives in storage ``data/i``.  Dtypes with a legacy typed storage
    (float32 -> FloatStorage, ...) use ``_rebuild_tensor_v2`` like torch.save;
    the others (float8, uint16/32/64) use ``_rebuild_tensor_v3`` with an
    UntypedStorage and an explicit dtype, again as torch.save does.  The bytes equal
    torch.save's (checked by the tests against torch itself).
    """
    state: dict = {}
    for i, info in enumerate(infos):
        spec = DTYPES[announced_dtype(info)]
        shape = tuple(int(d) for d in info.shape)
        hooks = collections.OrderedDict()
        if spec.storage:
            pid = ("storage", _global("torch", spec.storage), str(i), "cpu", info.numel)
            args = (_Storage(pid), 0, shape, _strides(shape), False, hooks)
            state[info.name] = _Tensor(_global("torch._utils", "_rebuild_tensor_v2"), args)
        else:
            nbytes = info.numel * dtypes.itemsize(announced_dtype(info))
            pid = ("storage", _global("torch.storage", "UntypedStorage"), str(i), "cpu", nbytes)
            args = (_Storage(pid), 0, shape, _strides(shape), False, hooks, _global("torch", spec.torch_name))
            state[info.name] = _Tensor(_global("torch._utils", "_rebuild_tensor_v3"), args)
    obj = {wrap: state} if wrap else state
    buf = io.BytesIO()
    _Pickler(buf, protocol=_PICKLE_PROTOCOL).dump(obj)
    return buf.getvalue()


def _contiguous_native(array: np.ndarray) -> np.ndarray:
    """A C-contiguous, native-byte-order version of ``array`` (no copy if it already is)."""
    dt = array.dtype
    if dt.byteorder not in ("=", "|") and dt.itemsize > 1 and dt != dt.newbyteorder("="):
        array = array.astype(dt.newbyteorder("="))
    return np.ascontiguousarray(array).reshape(array.shape)  # ascontiguousarray makes 0-d arrays 1-d


def _archive_name(path: str) -> str:
    """The records' folder: the file's name without suffix, as torch.save uses ("archive" if unusable)."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return stem if stem and stem.isascii() and stem.isprintable() else "archive"


def _file_writer(path: str, final_path: Optional[str] = None) -> tuple:
    """(the :class:`ZipStore` writing ``path``, its open file)."""
    fh = create_file(path)
    return ZipStore(fh, _archive_name(final_path or path)), fh


class TorchWriter(Writer):
    """Writes a flat state dict ``{name: tensor}`` (options: ``wrap="state_dict"`` nests it under
    that key; ``stream=False`` collects everything and calls ``torch.save`` at ``close()``).

    The streaming path does not import torch: the pickle comes from :func:`data_pickle` and
    the zip container from :class:`ZipStore`, and each tensor's bytes go to the file piece by
    piece (:func:`~mapspec.formats.chunks.c_order_chunks`), so memory stays bounded by a
    16 MiB buffer for views that need copying (transposed, other byte order) and nothing
    at all for contiguous ones.  The result loads with ``torch.load(weights_only=True)``,
    with or without ``mmap``.  Loading uint16/32/64 or float8 tensors needs a torch that has
    those dtypes (2.3 / 2.1).
    """

    format = NAME

    def __init__(self, path: str, infos: Sequence[TensorInfo], wrap: Optional[str] = None, stream: bool = True,
                 final_path: Optional[str] = None, **options):
        super().__init__(path, infos)
        if len(set(self._order)) != len(self._order):
            raise MapspecError(f"{path}: the same tensor name is announced twice")
        self._wrap = wrap
        self._zip = None
        self._fh = None
        self._torch = None
        self._collected: Optional[dict] = None
        self.streaming = False
        if stream:
            try:
                self._zip, self._fh = _file_writer(path, final_path)
                self.streaming = True
            except (AttributeError, TypeError):  # a record writer that cannot stream: fall back to torch.save
                self._zip = None
        if self.streaming:
            try:
                blob = data_pickle(self.infos, wrap)
                self._zip.add("data.pkl", [blob], len(blob))
                for name, value in ((".format_version", b"1"), (".storage_alignment", str(ALIGN).encode()),
                                    ("byteorder", sys.byteorder.encode())):
                    self._zip.add(name, [value], len(value))
            except BaseException:
                self.abort()
                raise
        else:
            self._torch = torch = import_torch()
            for info in self.infos:  # fail before collecting anything
                td = getattr(torch, DTYPES[announced_dtype(info)].torch_name, None)
                if td is None:
                    raise MapspecError(f"{path}: this torch ({torch.__version__}) cannot hold "
                                       f"{announced_dtype(info)}; cast tensor {info.name!r} to another dtype")
            self._collected = {}

    def write(self, name: str, array: np.ndarray) -> None:
        array = np.asarray(array)
        info = self._check(name, array)
        want = self._check_dtype(name, info, array)
        if self.streaming:
            try:
                self._zip.add(f"data/{self._next - 1}", c_order_chunks(array, _CHUNK, byteorder="="),
                              info.numel * dtypes.itemsize(want))
            except OSError as e:
                raise MapspecError(f"{self.path}: writing tensor {name!r} failed: {e.strerror or e}") from None
            return
        torch = self._torch
        arr = _contiguous_native(array)
        with warnings.catch_warnings():  # read-only (memory-mapped) input: torch only reads it here
            warnings.simplefilter("ignore", UserWarning)
            raw = torch.from_numpy(arr.reshape(-1).view(np.uint8))  # shares arr's memory
        td = getattr(torch, DTYPES[want].torch_name)
        self._collected[name] = raw.view(td).reshape(arr.shape)

    def close(self) -> None:
        super().close()
        if self.streaming:
            try:
                self._zip.add("version", [b"3\n"], 2)
                sid = f"{secrets.randbelow(10 ** 40):040d}".encode()  # as torch.save: 40 random digits
                self._zip.add(".data/serialization_id", [sid], len(sid))
                self._zip.finish()
                self._fh.close()
            except OSError as e:
                raise MapspecError(f"{self.path}: finishing the archive failed: {e.strerror or e}") from None
            finally:
                self._zip = None
        else:
            obj = {self._wrap: self._collected} if self._wrap else self._collected
            self._torch.save(obj, self.path)
            self._collected = None

    def abort(self) -> None:
        self._zip = None
        self._collected = None
        if self._fh is not None:
            self._fh.close()


# Options a user may give (spec source/target options; --source-option, --template-option, --target-option, inspect --option); anything else is an error.
READ_OPTIONS = ("root",)
WRITE_OPTIONS = ("wrap", "stream")


def open(path: str, **options) -> TorchReader:  # noqa: A001 - the format API's name
    """Options: ``root`` (key or list of keys to descend; ``""`` disables unwrapping)."""
    return TorchReader(path, root=options.get("root"))


def create(path: str, infos: Sequence[TensorInfo], **options) -> TorchWriter:
    return TorchWriter(path, infos, **options)


def save(path: str, tensors, **options) -> None:
    save_with(create, path, tensors, **options)
