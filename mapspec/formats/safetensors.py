"""safetensors files: an 8-byte header length, a JSON header, then raw tensor bytes.

Layout (https://github.com/huggingface/safetensors)::

    u64 little-endian N | N bytes of UTF-8 JSON | data area
    JSON: {"__metadata__": {str: str}?,
           "<name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}

Offsets are relative to the start of the data area; values are little-endian and
C-ordered.

Why our own reader, with the ``safetensors`` library only as a test oracle:
``safetensors.numpy.load_file`` copies every tensor into memory and cannot
represent bfloat16/float8 in numpy at all; ``safe_open(framework="np")`` likewise
copies per tensor.  Reading the header ourselves lets us hand out zero-copy,
read-only numpy views over one memory map (:class:`~mapspec.files.MappedFile`),
including bfloat16 and float8 through ``ml_dtypes``, and check every offset and
length against the real file size before anything is touched.

Why our own writer: ``safetensors.*.save_file`` takes a complete ``{name: tensor}``
dict, i.e. the whole model in memory at once.  The header depends only on names,
shapes and dtypes, which the engine announces up front, so we write the header
first and then stream each tensor's bytes as it arrives (non-contiguous arrays in
bounded chunks), keeping memory bounded by one tensor.

Acceptance rules (checked in this order, each failure a :class:`FormatError`
naming the byte offset): header length <= 100 MB (the library's limit) and inside
the file; header is a UTF-8 JSON object without duplicate keys; every entry has a
known dtype code, a shape of non-negative integers and ``data_offsets`` of two
integers ``begin <= end`` inside the data area with ``end - begin == numel *
itemsize``; no two tensors overlap.  Gaps between tensors are tolerated (the
library itself writes none).
"""

from __future__ import annotations

import json
import struct
import sys
from typing import Iterator, Mapping, Optional, Sequence

import numpy as np

from .. import dtypes
from ..errors import FormatError, MapspecError
from ..files import MappedFile, check_shape, create_file
from .base import PositionalWriter, Reader, TensorInfo, announced_dtype, save_with
from .chunks import c_order_chunks

NAME = "safetensors"
MAX_HEADER = 100_000_000  # bytes; the safetensors library refuses larger headers too
_ALIGN = 8  # the library pads the JSON header with spaces to a multiple of 8 bytes
_CHUNK = 16 << 20  # bytes per write when a non-contiguous array must be copied
PAGE = 4096  # the page size the data area's start is matched to (see data_phase)

# safetensors dtype code <-> mapspec dtype name.
CODES: dict[str, str] = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8",
    "BOOL": "bool",
}
NAMES: dict[str, str] = {v: k for k, v in CODES.items()}
# Codes the format defines that mapspec cannot hold (sub-byte and exotic types).
UNSUPPORTED = ("C64", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2")

WRITE_DTYPES = None  # every dtype in mapspec.dtypes has a safetensors code


def sniff(path: str, head: bytes) -> bool:
    """An 8-byte length followed by ``{``: the library's own check, plus a sane length."""
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= MAX_HEADER and head[8:9] == b"{"


def no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise DuplicateKey(k)
        for text in (k, v) if isinstance(v, str) else (k,):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # JSON's "\ud800": a lone surrogate, not text
                raise _Surrogate(text) from None
        out[k] = v
    return out


class _Surrogate(Exception):
    pass


class DuplicateKey(MapspecError):
    """A JSON object naming one key twice (the key is the message); the caller names the file."""


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


class Header:
    """The parsed and checked JSON header of a safetensors file."""

    def __init__(self, path: str, size: int, raw_len: bytes, raw_json_reader):
        self.path = path
        if size < 8:
            raise FormatError(path, f"file has {size} bytes; a safetensors file starts with an 8-byte header "
                              "length", offset=0)
        (n,) = struct.unpack("<Q", raw_len)
        if n > MAX_HEADER:
            raise FormatError(path, f"header length {n} exceeds the limit of {MAX_HEADER} bytes "
                              "(corrupt file or not safetensors)", offset=0)
        if 8 + n > size:
            raise FormatError(path, f"header length {n} runs past the end of the file ({size} bytes; "
                              "truncated file?)", offset=0)
        self.header_len = n
        self.data_start = 8 + n
        self.data_size = size - self.data_start
        raw = raw_json_reader(8, n)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise FormatError(path, f"header is not UTF-8 ({e.reason})", offset=8 + e.start) from None
        if not text.startswith("{"):
            raise FormatError(path, "header does not start with '{' (not a safetensors file)", offset=8)
        try:
            obj = json.loads(text, object_pairs_hook=no_duplicates)
        except DuplicateKey as e:
            raise FormatError(path, f"header names {e.args[0]!r} twice", offset=8) from None
        except _Surrogate as e:
            raise FormatError(path, f"header holds {e.args[0]!r}, which has a lone surrogate escape (not Unicode "
                              f"text)", offset=8) from None
        except json.JSONDecodeError as e:
            raise FormatError(path, f"header is not valid JSON: {e.msg}", offset=8 + e.pos) from None
        except ValueError as e:  # e.g. an integer of more than 4300 digits
            raise FormatError(path, f"header is not acceptable JSON ({str(e).split(':')[0]})", offset=8) from None
        except RecursionError:
            raise FormatError(path, "header JSON is nested too deeply", offset=8) from None
        if not isinstance(obj, dict):
            raise FormatError(path, "header is not a JSON object", offset=8)
        meta = obj.pop("__metadata__", None)
        if meta is not None and not (isinstance(meta, dict)
                                     and all(isinstance(v, str) for v in meta.values())):
            raise FormatError(path, "__metadata__ must map strings to strings", offset=8)
        self.metadata: dict[str, str] = dict(meta or {})
        entries = [self._entry(name, spec) for name, spec in obj.items()]
        # File order: by position in the data area (what the writer wrote first comes
        # first); ties (empty tensors) keep their JSON order.
        entries.sort(key=lambda e: (e[3], e[4]))
        prev_end, prev_name = 0, None
        for name, _, _, begin, end in entries:
            if begin < prev_end:
                raise FormatError(path, f"data_offsets [{begin}, {end}] overlap tensor {prev_name!r} "
                                  f"(which ends at {prev_end})", offset=self.data_start + begin, tensor=name)
            if end > begin:
                prev_end, prev_name = end, name
        self.entries = entries

    def _entry(self, name: str, spec) -> tuple:
        path = self.path
        if not isinstance(spec, dict):
            raise FormatError(path, "header entry is not an object", offset=8, tensor=name)
        code = spec.get("dtype")
        if not isinstance(code, str) or code not in CODES:
            why = "is not supported by mapspec" if code in UNSUPPORTED else "is unknown"
            raise FormatError(path, f"dtype code {code!r} {why} (known: {', '.join(CODES)})", offset=8,
                              tensor=name)
        shape = spec.get("shape")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise FormatError(path, f"shape {shape!r} is not a list of non-negative integers", offset=8,
                              tensor=name)
        offs = spec.get("data_offsets")
        if not (isinstance(offs, list) and len(offs) == 2 and all(_is_int(o) for o in offs)):
            raise FormatError(path, f"data_offsets {offs!r} is not a pair of integers", offset=8, tensor=name)
        begin, end = offs
        if not 0 <= begin <= end:
            raise FormatError(path, f"data_offsets [{begin}, {end}] are not ordered non-negative integers",
                              offset=8, tensor=name)
        if end > self.data_size:
            raise FormatError(path, f"data_offsets end {end} is past the end of the data area "
                              f"({self.data_size} bytes; truncated file?)", offset=self.data_start + begin,
                              tensor=name)
        dname = CODES[code]
        want = check_shape(path, shape, dtypes.itemsize(dname), f"tensor {name!r}", offset=8)
        if end - begin != want:
            raise FormatError(path, f"shape {shape} of {code} needs {want} bytes but data_offsets "
                              f"[{begin}, {end}] span {end - begin}", offset=self.data_start + begin,
                              tensor=name)
        return name, tuple(shape), dname, begin, end


class SafetensorsReader(Reader):
    """Lazy reader: header parsed on open, values are views over one memory map."""

    format = NAME

    def __init__(self, path: str):
        super().__init__(path)
        self._file = MappedFile(path)
        try:
            size = self._file.size
            head = self._file.bytes(0, 8, "header length") if size >= 8 else b""
            self.header = Header(path, size, head, lambda off, n: self._file.bytes(off, n, "JSON header"))
        except BaseException:
            self._file.close()
            raise
        self.metadata = self.header.metadata
        self._where: dict[str, int] = {}
        for name, shape, dname, begin, _ in self.header.entries:
            self._infos[name] = TensorInfo(name, shape, dname)
            self._where[name] = self.header.data_start + begin

    def _read(self, info: TensorInfo) -> np.ndarray:
        dt = dtypes.to_numpy(info.dtype)
        if info.numel == 0:
            return np.empty(info.shape, dtype=dt)
        arr = self._file.array(self._where[info.name], dt, info.shape, f"tensor {info.name!r}")
        if sys.byteorder == "big" and dt.itemsize > 1:  # the format is little-endian
            arr = arr.byteswap()
        return arr

    def span(self, name: str) -> Optional[tuple]:
        """(file descriptor, offset, byte count) of a tensor's bytes, exactly as a safetensors
        writer would write them (None on a big-endian machine, where values need swapping)."""
        info = self.info(name)
        if sys.byteorder == "big" or self._file.size == 0:
            return None
        return self._file.fileno(), self._where[name], info.nbytes

    def release(self, name: str) -> None:
        """Drop the tensor's mapped pages from this process's memory (see :meth:`Reader.release`)."""
        info = self._infos.get(name)
        if info is not None:
            self._file.drop(self._where[name], info.nbytes)

    def close(self) -> None:
        self._file.close()


# -- writing ---------------------------------------------------------------

def _chunks(arr: np.ndarray, limit: Optional[int] = None) -> Iterator[memoryview]:
    """The bytes of ``arr`` in C order, little-endian, as pieces of at most ~``limit`` bytes
    (default :data:`_CHUNK`, read at call time); see :func:`~mapspec.formats.chunks.c_order_chunks`."""
    return c_order_chunks(arr, _CHUNK if limit is None else limit, byteorder="<")


def data_phase(infos: Sequence[TensorInfo], copy_phases: Optional[Mapping[str, int]]) -> Optional[int]:
    """Where in its page the data area should start so that most copied bytes keep their place in the page.

    ``copy_phases`` maps the tensors that will be copied file to file (:meth:`SafetensorsWriter.copy_at`)
    to their source offset modulo :data:`PAGE`.  A kernel copy (``copy_file_range``) between offsets at
    the same place in their pages moves whole pages; at different places it splits every page in two,
    which cost ~50 % more system time here (measured: 64 MiB tensors, 0.29 s vs 0.44 s of CPU a GiB);
    file systems that clone (XFS, btrfs) can share blocks only at matching, block-aligned offsets.
    The answer is the phase shared by the most copied bytes among those that keep the data area 8-byte
    aligned (what the library writes); None if nothing is copied."""
    if not copy_phases:
        return None
    weight: dict = {}
    offset = 0
    for info in infos:
        n = info.numel * dtypes.itemsize(announced_dtype(info))
        p = copy_phases.get(info.name)
        if p is not None and n:
            q = (int(p) - offset) % PAGE
            if q % _ALIGN == 0:
                weight[q] = weight.get(q, 0) + n
        offset += n
    return max(weight, key=lambda q: (weight[q], -q)) if weight else None


def header_bytes(infos: Sequence[TensorInfo], metadata: Optional[Mapping[str, str]] = None,
                 copy_phases: Optional[Mapping[str, int]] = None) -> tuple:
    """(the 8-byte length + padded JSON header, total data size) for tensors in ``infos`` order.

    Offsets follow ``infos`` order, so each tensor's place in the file is known up front
    (:meth:`SafetensorsWriter.write_at`).  The JSON is padded with spaces to a multiple of 8 bytes,
    as the library pads it; with ``copy_phases`` (see :func:`data_phase`) further, up to a page, so
    that the data area starts where the copied tensors' bytes sit in their pages (the format allows
    any whitespace after the JSON; the library and mapspec's reader read it)."""
    head: dict = {}
    if metadata:
        bad = [k for k, v in metadata.items() if not (isinstance(k, str) and isinstance(v, str))]
        if bad:
            raise MapspecError(f"safetensors metadata must map strings to strings; bad entries: {bad}")
        head["__metadata__"] = dict(metadata)
    offset = 0
    for info in infos:
        if info.name == "__metadata__":
            raise MapspecError("a safetensors file cannot hold a tensor named '__metadata__'; rename it")
        code = NAMES[announced_dtype(info)]
        n = info.numel * dtypes.itemsize(announced_dtype(info))
        head[info.name] = {"dtype": code, "shape": [int(d) for d in info.shape],
                           "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(head, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % _ALIGN)
    phase = data_phase(infos, copy_phases)
    if phase is not None:
        text += b" " * ((phase - 8 - len(text)) % PAGE)
    return struct.pack("<Q", len(text)) + text, offset


class SafetensorsWriter(PositionalWriter):
    """Streaming writer: the header goes out at once, each tensor's bytes as they arrive.

    Either ``write`` in the announced order, or ``write_at`` in any order from several
    threads: every tensor's offset follows from the header, and its bytes go there with
    ``os.pwrite`` (which, like numpy's copies, releases the GIL).
    Options: ``metadata={str: str}`` becomes the ``__metadata__`` entry (omitted if not given);
    ``copy_phases`` (from the engine, not the user: see :func:`data_phase`) places the data area.
    """

    format = NAME

    def __init__(self, path: str, infos: Sequence[TensorInfo], metadata: Optional[Mapping[str, str]] = None,
                 copy_phases: Optional[Mapping[str, int]] = None, **options):
        super().__init__(path, infos)
        if len(set(self._order)) != len(self._order):
            raise MapspecError(f"{path}: the same tensor name is announced twice")
        blob, self._data_size = header_bytes(self.infos, metadata, copy_phases)
        self._end = len(blob) + self._data_size
        self._fh = create_file(path)
        self._fh.write(blob)
        self._offsets: dict[str, int] = {}
        pos = len(blob)
        for info in self.infos:
            self._offsets[info.name] = pos
            pos += info.numel * dtypes.itemsize(announced_dtype(info))

    def write(self, name: str, array: np.ndarray) -> None:
        array = np.asarray(array)
        info = self._check(name, array)
        self._check_dtype(name, info, array, why="the header is already written (cast it before writing)")
        for piece in _chunks(array):
            self._fh.write(piece)

    def write_at(self, name: str, array: np.ndarray) -> None:
        """Write one tensor at its place in the file; any order, any thread, each tensor once."""
        array = np.asarray(array)
        info = self._fits(name, array)
        self._check_dtype(name, info, array, why="the header is already written (cast it before writing)")
        self._place(name)
        self._put(name, _chunks(array))

    def copy_at(self, name: str, info: TensorInfo, span: tuple) -> None:
        """Write tensor ``name`` by copying its bytes from another file (``span`` as
        :meth:`SafetensorsReader.span` gives it), like :meth:`write_at`: any order, any thread."""
        want = self._expected.get(name)
        if want is None or tuple(want.shape) != tuple(info.shape) or announced_dtype(want) != info.dtype \
                or span[2] != want.nbytes:
            raise MapspecError(f"{self.path}: tensor {name!r} does not match what was announced")
        self._place(name)
        self._copy(name, span)

    def close(self) -> None:
        if self._all_placed():
            self._fh.close()
            return
        super().close()
        pos = self._fh.tell()
        self._fh.close()
        if pos != self._end:  # pragma: no cover - would be a bug in _chunks
            raise MapspecError(f"{self.path}: wrote {pos} bytes, expected {self._end}")

    def abort(self) -> None:
        self._fh.close()


# Options a user may give (spec source/target options; --source-option, --template-option, --target-option, inspect --option); anything else is an error.
READ_OPTIONS = ()
WRITE_OPTIONS = ("metadata",)
POSITIONAL = SafetensorsWriter.positional  # the writer has write_at/copy_at (apply --jobs writes in parallel)
COPY_PHASES = True  # create() takes copy_phases= from the engine (see data_phase)


def open(path: str, **options) -> SafetensorsReader:  # noqa: A001 - the format API's name
    return SafetensorsReader(path)


def create(path: str, infos: Sequence[TensorInfo], **options) -> SafetensorsWriter:
    return SafetensorsWriter(path, infos, **options)


def save(path: str, tensors, **options) -> None:
    save_with(create, path, tensors, **options)
