"""MXNet ``.params`` files (an NDArray list, as ``mx.nd.save`` writes), read and written without MXNet.

Layout (apache/mxnet ``src/ndarray/ndarray.cc``, ``NDArray::Save``/``Load``; all little-endian)::

    u64 0x112 (kMXAPINDArrayListMagic) | u64 reserved (0)
    u64 count | count arrays
    u64 name count (0 or count) | per name: u64 length, UTF-8 bytes

    array, V2/V3 (MXNet >= 0.11; V3 = numpy shape semantics, which allows 0-d arrays):
      u32 magic 0xF993FAC9 (V2) / 0xF993FACA (V3) | i32 storage type (0 dense; 1 row_sparse, 2 csr)
      | i32 ndim | i64 dims[ndim] | i32 dev_type, i32 dev_id | i32 type flag | raw C-order data
    array, V1: u32 0xF993FAC8 | i32 ndim | i64 dims | context | type flag | data
    array, legacy (before V1): u32 ndim (in place of the magic) | u32 dims | context | type flag | data

A "none" array (storage type -1, or ndim 0 in V2 / -1 in V3) has no context or data;
MXNet cannot load such a file into Python, so we refuse it too.  Sparse arrays are refused
with a clear error.

Names are ``arg:NAME`` (learned arguments) or ``aux:NAME`` (auxiliary states such as a
BatchNorm's moving mean/var), as ``mx.model.save_checkpoint`` writes them; Gluon files
have bare names and a plain list has none (MXNet's naming rules:
:mod:`mapspec.frameworks.mxnet.params`).  The reader strips the prefix
(``TensorInfo.meta["prefix"]`` keeps it: "arg", "aux", or None for a bare name) and
names an unnamed list's arrays "0", "1", ...

The writer puts the prefix back, deciding per tensor, first rule that applies:

1. a name that already starts with ``arg:``/``aux:`` keeps it;
2. ``info.meta["prefix"]`` when it is "arg" or "aux" (a tensor read from a .params);
3. with ``template`` (a ``-symbol.json`` path, a :class:`~mapspec.frameworks.mxnet.graph.Graph`
   or a symbol reader): "aux" for the symbol's auxiliary states, "arg" for its other variables;
4. the name: ``..._moving_mean``/``..._moving_var`` (and Gluon's ``_running_mean``/``_running_var``)
   are "aux", everything else "arg".

``prefixes=False`` writes bare names instead (a Gluon-style file).  dtypes go through
the ``TYPE_FLAGS`` table (mshadow's TypeFlag: float32 0, float64 1, float16 2, uint8 3,
int32 4, int8 5, int64 6, bool 7, int16 8, uint16 9, uint32 10, uint64 11, bfloat16 12);
the reader takes all of them, the writer only those MXNet 1.x can load (not 8-11).
The writer writes the V2 array header MXNet 1.x writes by default; ``version=3`` writes V3 headers
(numpy semantics, needed for 0-d arrays, loadable by MXNet only under ``npx.set_np()``).

Reading options: ``symbol=`` a ``-symbol.json`` whose op attributes ``attrs(op)``
serves; by default the sibling ``PREFIX-symbol.json`` of ``PREFIX-NNNN.params`` when it
exists (``symbol=False`` turns that off).  The symbol is loaded on first use.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path
from typing import Iterator, Mapping, NamedTuple, Optional, Sequence

import numpy as np

from .. import dtypes
from ..errors import FormatError, MapspecError
from ..files import MappedFile, check_shape, create_file
from ..frameworks.mxnet.params import PREFIXES, role_by_name, split_name, symbol_file_name
from .base import Reader, TensorInfo, Writer, announced_dtype, save_with

NAME = "mxnet"
LIST_MAGIC = 0x112
V1_MAGIC = 0xF993FAC8
V2_MAGIC = 0xF993FAC9
V3_MAGIC = 0xF993FACA
MAX_NDIM = 32  # MXNet's shapes are far smaller; a larger "ndim" means corruption
_CHUNK = 16 << 20

# mshadow type flag <-> mapspec dtype name (mshadow/base.h, TypeFlag).
TYPE_FLAGS: dict[int, str] = {
    0: "float32", 1: "float64", 2: "float16", 3: "uint8", 4: "int32", 5: "int8", 6: "int64", 7: "bool",
    8: "int16", 9: "uint16", 10: "uint32", 11: "uint64", 12: "bfloat16",
}
FLAG_OF: dict[str, int] = {v: k for k, v in TYPE_FLAGS.items()}
# MXNet 1.x declares int16/uint16/uint32/uint64 (8-11) but cannot load them ("Unknown type enum 8"),
# so the writer refuses them; the reader accepts them (MXNet 2 writes them).
WRITE_DTYPES = ("float32", "float64", "float16", "uint8", "int32", "int8", "int64", "bool", "bfloat16")
STORAGE_TYPES = {0: "default (dense)", 1: "row_sparse", 2: "csr"}
# Context dev_type values MXNet writes (kCPU, kGPU, kCPUPinned, kCPUShared).
DEV_TYPES = {1: "cpu", 2: "gpu", 3: "cpu_pinned", 5: "cpu_shared"}


def sniff(path: str, head: bytes) -> bool:
    return len(head) >= 16 and struct.unpack("<QQ", head[:16]) == (LIST_MAGIC, 0)


# -- reading ---------------------------------------------------------------------

class ArrayHeader(NamedTuple):
    """Where one array of the list lives and what it is."""

    offset: int  # of its header
    version: str  # "v1", "v2", "v3", "legacy"
    shape: tuple
    dtype: str
    data_offset: int
    nbytes: int


class _Cursor:
    """Bounds-checked little-endian reads over a MappedFile."""

    def __init__(self, file: MappedFile):
        self.file = file
        self.pos = 0

    def take(self, fmt: str, what: str) -> tuple:
        st = struct.Struct("<" + fmt)
        self.file.check_span(self.pos, st.size, what)
        vals = st.unpack_from(self.file.buffer, self.pos)
        self.pos += st.size
        return vals


class ParamsReader(Reader):
    """Lazy reader: one structural scan of the headers on open; values are views over a memory map."""

    format = NAME

    def __init__(self, path: str, symbol=None):
        super().__init__(path)
        self._file = MappedFile(path)
        try:
            self.headers = self._scan()
        except BaseException:
            self._file.close()
            raise
        self._symbol_opt = symbol
        self._symbol = None  # loaded on first attrs()/nodes()

    # -- structure --------------------------------------------------------
    def _scan(self) -> dict:
        cur = _Cursor(self._file)
        size = self._file.size
        if size < 24:
            raise FormatError(self.path, f"file has {size} bytes; an MXNet .params file starts with a 24-byte "
                              f"header", offset=0)
        magic, reserved = cur.take("QQ", "list header")
        if magic != LIST_MAGIC:
            raise FormatError(self.path, f"list magic is {magic:#x}, not {LIST_MAGIC:#x} (not an MXNet "
                              f".params/NDArray file)", offset=0)
        if reserved != 0:
            raise FormatError(self.path, f"reserved field is {reserved}, not 0 (corrupt file)", offset=8)
        (count,) = cur.take("Q", "array count")
        # Every array takes at least 4 (legacy ndim 1...) + 8 + 4 bytes; bound count by the size.
        if count > (size - cur.pos) // 16:
            raise FormatError(self.path, f"array count {count} cannot fit in the {size - cur.pos} bytes that "
                              f"follow (corrupt or truncated file)", offset=16)
        arrays = [self._array(cur, i) for i in range(count)]
        names_at = cur.pos
        (n_names,) = cur.take("Q", "name count")
        if n_names not in (0, count):
            raise FormatError(self.path, f"name count {n_names} differs from the array count {count} "
                              f"(corrupt file)", offset=names_at)
        raw_names = []
        for i in range(n_names):
            at = cur.pos
            (length,) = cur.take("Q", f"length of name #{i}")
            if length > size - cur.pos:
                raise FormatError(self.path, f"name #{i} claims {length} bytes but only {size - cur.pos} "
                                  f"remain (truncated or corrupt file)", offset=at)
            raw = self._file.bytes(cur.pos, length, f"name #{i}")
            cur.pos += length
            try:
                raw_names.append(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                raise FormatError(self.path, f"name #{i} is not UTF-8 ({e.reason})", offset=at + 8 + e.start) \
                    from None
        headers: dict[str, ArrayHeader] = {}
        full: dict[str, str] = {}
        for i, h in enumerate(arrays):
            raw = raw_names[i] if raw_names else str(i)
            name, prefix = split_name(raw) if raw_names else (raw, None)
            if name in headers:
                raise FormatError(self.path, f"two arrays have the name {name!r} once the arg:/aux: prefix is "
                                  f"removed ({full[name]!r} and {raw!r}); rename one of them", offset=h.offset,
                                  tensor=name)
            headers[name] = h
            full[name] = raw
            self._infos[name] = TensorInfo(name, h.shape, h.dtype, {"prefix": prefix})
        self.raw_names = full
        return headers

    def _array(self, cur: _Cursor, i: int) -> ArrayHeader:
        at = cur.pos
        what = f"header of array #{i}"
        (magic,) = cur.take("I", what)
        if magic in (V2_MAGIC, V3_MAGIC):
            version = "v2" if magic == V2_MAGIC else "v3"
            (stype,) = cur.take("i", what)
            if stype == -1:  # what MXNet writes for an empty 'none' NDArray
                raise FormatError(self.path, f"array #{i} is an empty 'none' NDArray (no shape); MXNet cannot "
                                  f"load it either", offset=at + 4)
            if stype != 0:
                kind = STORAGE_TYPES.get(stype)
                why = (f"has storage type {kind} ({stype}), which mapspec does not read; save it dense in MXNet "
                       f"(arr.tostype('default')) first" if kind
                       else f"has unknown storage type {stype} (corrupt file)")
                raise FormatError(self.path, f"array #{i} {why}", offset=at + 4)
            (ndim,) = cur.take("i", what)
            if version == "v2" and ndim == 0 or version == "v3" and ndim == -1:
                raise FormatError(self.path, f"array #{i} is an empty 'none' NDArray (no shape); MXNet cannot "
                                  f"load it either", offset=at + 8)
            shape = self._dims(cur, i, ndim, "q", at + 8)
        elif magic == V1_MAGIC:
            version = "v1"
            (ndim,) = cur.take("i", what)
            if ndim == 0:
                raise FormatError(self.path, f"array #{i} is an empty 'none' NDArray (no shape)", offset=at + 4)
            shape = self._dims(cur, i, ndim, "q", at + 4)
        elif 0 < magic <= MAX_NDIM:
            version = "legacy"
            shape = self._dims(cur, i, magic, "I", at)
        else:
            raise FormatError(self.path, f"array #{i} starts with {magic:#010x}, which is neither an NDArray "
                              f"magic (V1 {V1_MAGIC:#x}, V2 {V2_MAGIC:#x}, V3 {V3_MAGIC:#x}) nor a legacy "
                              f"dimension count (corrupt file)", offset=at)
        ctx_at = cur.pos
        dev_type, dev_id = cur.take("ii", what)
        if dev_type not in DEV_TYPES or not 0 <= dev_id < 1 << 16:
            raise FormatError(self.path, f"array #{i} has device ({dev_type}, {dev_id}); expected a dev_type in "
                              f"{sorted(DEV_TYPES)} and a small dev_id (corrupt file)", offset=ctx_at)
        flag_at = cur.pos
        (flag,) = cur.take("i", what)
        if flag not in TYPE_FLAGS:
            raise FormatError(self.path, f"array #{i} has type flag {flag}, which is unknown (known: "
                              + ", ".join(f"{k} {v}" for k, v in TYPE_FLAGS.items()) + ")", offset=flag_at)
        dtype = TYPE_FLAGS[flag]
        nbytes = dtypes.itemsize(dtype)
        for d in shape:
            nbytes *= d
        self._file.check_span(cur.pos, nbytes, f"data of array #{i} (shape {shape}, {dtype})")
        check_shape(self.path, shape, dtypes.itemsize(dtype), f"array #{i}", offset=at)  # (0, 2**62): empty, impossible
        data_at = cur.pos
        cur.pos += nbytes
        return ArrayHeader(at, version, shape, dtype, data_at, nbytes)

    def _dims(self, cur: _Cursor, i: int, ndim: int, code: str, at: int) -> tuple:
        if not 0 <= ndim <= MAX_NDIM:
            raise FormatError(self.path, f"array #{i} claims {ndim} dimensions; at most {MAX_NDIM} are "
                              f"plausible (corrupt file)", offset=at)
        dims = cur.take(code * ndim, f"shape of array #{i}") if ndim else ()
        if any(d < 0 for d in dims):
            raise FormatError(self.path, f"array #{i} has shape {dims} with a negative (unknown) size",
                              offset=at)
        return tuple(int(d) for d in dims)

    # -- data -------------------------------------------------------------
    def _read(self, info: TensorInfo) -> np.ndarray:
        h = self.headers[info.name]
        dt = dtypes.to_numpy(h.dtype)
        if info.numel == 0:
            return np.empty(h.shape, dtype=dt)
        arr = self._file.array(h.data_offset, dt, h.shape, f"tensor {info.name!r}")
        if sys.byteorder == "big" and dt.itemsize > 1:  # the files are little-endian
            arr = arr.byteswap()
        return arr

    # -- attributes from the symbol ---------------------------------------------
    def symbol_path(self) -> Optional[str]:
        """The ``-symbol.json`` whose attributes this reader serves, or None."""
        opt = self._symbol_opt
        if opt is False:
            return None
        if opt is not None:
            return str(opt)
        sibling = symbol_file_name(Path(self.path).name)
        if sibling:
            sib = Path(self.path).with_name(sibling)
            if sib.is_file():
                return str(sib)
        return None

    @property
    def symbol(self):
        """The symbol :class:`~mapspec.frameworks.mxnet.graph.Graph` (None without one)."""
        if self._symbol is None:
            path = self.symbol_path()
            if path is None:
                return None
            from ..frameworks.mxnet.graph import load_symbol  # noqa: PLC0415 - only when attributes are asked for
            if not Path(path).is_file():
                raise FormatError(path, "no such symbol file (given as symbol= for "
                                  f"{self.path})")
            self._symbol = load_symbol(path)
        return self._symbol

    def attrs(self, node: str) -> dict:
        graph = self.symbol
        if graph is None:
            raise FormatError(self.path, f"attributes of {node!r} need the network's -symbol.json: open the "
                              f".params with symbol=PATH (none found beside it)")
        n = graph.node(node)
        return {"op": n.op, **n.attrs}

    def nodes(self) -> list[str]:
        graph = self.symbol
        return [] if graph is None else [n.name for n in graph.nodes if n.op != "null"]

    def close(self) -> None:
        self._file.close()


# -- writing ---------------------------------------------------------------------

def _template_aux(template) -> tuple:
    """(aux names, arg names) of a template: a symbol path, a Graph, or a reader with prefix metadata."""
    if template is None:
        return None, None
    from ..frameworks.mxnet.graph import Graph, load_symbol  # noqa: PLC0415
    from .mxnet_symbol import SymbolReader  # noqa: PLC0415
    if isinstance(template, (str, Path)):
        graph = load_symbol(template)
        return set(graph.aux_names), set(graph.arg_names)
    if isinstance(template, Graph):
        return set(template.aux_names), set(template.arg_names)
    if isinstance(template, SymbolReader):
        return set(template.graph.aux_names), set(template.graph.arg_names)
    if isinstance(template, Reader):
        aux, arg = set(), set()
        for name, info in template.infos().items():
            prefix = (info.meta or {}).get("prefix")
            (aux if prefix == "aux" else arg).add(name)
        return aux, arg
    raise MapspecError(f"template must be a -symbol.json path, a symbol Graph or a reader, not "
                       f"{type(template).__name__}")


def decide_prefix(info: TensorInfo, aux: Optional[set] = None, arg: Optional[set] = None) -> tuple:
    """(bare name, "arg"/"aux") by the rules in the module docstring."""
    name, explicit = split_name(info.name)
    if explicit:
        return name, explicit
    meta = info.meta.get("prefix") if isinstance(info.meta, Mapping) else None
    if meta in PREFIXES:
        return name, meta
    if aux is not None and name in aux:
        return name, "aux"
    if arg is not None and name in arg:
        return name, "arg"
    return name, role_by_name(name)


def array_header(shape: Sequence[int], dtype: str, version: int = 2) -> bytes:
    """The bytes MXNet writes before an array's data (dense, on cpu(0))."""
    magic = {2: V2_MAGIC, 3: V3_MAGIC}[version]
    dims = tuple(int(d) for d in shape)
    return (struct.pack("<Iii", magic, 0, len(dims)) + struct.pack(f"<{len(dims)}q", *dims)
            + struct.pack("<iii", 1, 0, FLAG_OF[dtype]))


def _chunks(arr: np.ndarray) -> Iterator[memoryview]:
    """``arr``'s bytes in C order, little-endian, in pieces of bounded size (zero-copy when possible)."""
    little = arr.dtype.itemsize == 1 or arr.dtype.byteorder == "<" or (
        arr.dtype.byteorder in ("=", "|") and sys.byteorder == "little")
    if arr.flags.c_contiguous and little:
        yield memoryview(arr.reshape(-1).view(np.uint8))
        return
    if arr.ndim == 0 or arr.nbytes <= _CHUNK or arr[0].nbytes > _CHUNK:
        blocks = [arr] if arr.ndim == 0 or arr.nbytes <= _CHUNK else (arr[i] for i in range(arr.shape[0]))
    else:
        step = max(1, _CHUNK // arr[0].nbytes)
        blocks = (arr[i:i + step] for i in range(0, arr.shape[0], step))
    for b in blocks:
        if b.nbytes > _CHUNK and b.ndim > 0:
            yield from _chunks(b)
            continue
        b = np.ascontiguousarray(b)
        if not little:
            b = b.byteswap()
        yield memoryview(b.reshape(-1).view(np.uint8))


class ParamsWriter(Writer):
    """Streaming writer: list header at once, each array as it arrives, the names at the end.

    Options: ``template`` (aux/arg decision, see the module docstring), ``prefixes``
    (default True; False writes bare names), ``version`` (2, the default, or 3).
    """

    format = NAME

    def __init__(self, path: str, infos: Sequence[TensorInfo], template=None, prefixes: bool = True,
                 version: int = 2, **options):
        super().__init__(path, infos)
        if version not in (2, 3):
            raise MapspecError(f"{path}: version must be 2 (MXNet 1.x default) or 3 (numpy semantics), "
                               f"not {version!r}")
        self.version = version
        aux, arg = _template_aux(template)
        names: list[str] = []
        seen: dict[str, str] = {}
        for info in self.infos:
            bare, prefix = decide_prefix(info, aux, arg)
            full = f"{prefix}:{bare}" if prefixes else bare
            if full in seen:
                raise MapspecError(f"{path}: tensors {seen[full]!r} and {info.name!r} would both be saved as "
                                   f"{full!r}")
            seen[full] = info.name
            names.append(full)
            dt = announced_dtype(info)
            if dt not in WRITE_DTYPES:
                why = "cannot load" if dt in FLAG_OF else "has no type for"
                raise FormatError(path, f"MXNet 1.x {why} {dt}; cast this tensor to one of "
                                  f"{', '.join(WRITE_DTYPES)}", tensor=info.name)
            if not info.shape and version == 2:
                raise FormatError(path, "a 0-d (scalar) array cannot be stored in MXNet 1.x's V2 format (MXNet "
                                  "would read it as 'none'); reshape it to (1,) or write with version=3",
                                  tensor=info.name)
        self.names = names
        self._fh = create_file(path)
        self._fh.write(struct.pack("<QQQ", LIST_MAGIC, 0, len(self.infos)))

    def write(self, name: str, array: np.ndarray) -> None:
        array = np.asarray(array)
        info = self._check(name, array)
        want = self._check_dtype(name, info, array)
        self._fh.write(array_header(array.shape, want, self.version))
        for piece in _chunks(array):
            self._fh.write(piece)

    def close(self) -> None:
        super().close()
        self._fh.write(struct.pack("<Q", len(self.names)))
        for full in self.names:
            raw = full.encode("utf-8")
            self._fh.write(struct.pack("<Q", len(raw)))
            self._fh.write(raw)
        self._fh.close()

    def abort(self) -> None:
        self._fh.close()


# Options a user may give (spec source/target options; --source-option, --template-option, --target-option, inspect --option); anything else is an error.
READ_OPTIONS = ("symbol",)
WRITE_OPTIONS = ("prefixes", "version")


def open(path: str, symbol=None, **options) -> ParamsReader:  # noqa: A001 - the format API's name
    return ParamsReader(path, symbol=symbol)


def create(path: str, infos: Sequence[TensorInfo], template=None, **options) -> ParamsWriter:
    return ParamsWriter(path, infos, template=template, **options)


def save(path: str, tensors, **options) -> None:
    save_with(create, path, tensors, **options)
