"""GGUF files (llama.cpp): a typed key/value header, tensor infos, aligned tensor data.

Layout (version 2 and 3, little-endian; https://github.com/ggml-org/ggml/blob/master/docs/gguf.md)::

    "GGUF" | u32 version | u64 tensor_count | u64 kv_count
    kv_count x  (string key | u32 value type | value)
    tensor_count x (string name | u32 n_dims | u64 ne[n_dims] | u32 ggml type | u64 offset)
    padding to `general.alignment` (default 32) | data area (each tensor at an aligned offset)

A string is ``u64 length | bytes``; an array ``u32 item type | u64 count | items``.
``ne[0]`` is the fastest-varying dimension, so the numpy shape is ``ne`` reversed
(what llama.cpp's converter and gguf-py hand out too).

Float and integer tensors are memory-mapped numpy arrays.  A block-quantized tensor (Q8_0,
Q4_K, ...) is handed out as its raw blocks: a ``uint8`` array of shape ``(*rows, bytes_per_row)``
(gguf-py's convention), ``meta = {"ggml_type": "Q4_K", "shape": (..logical..)}``.  A rename or copy
into another GGUF file writes those blocks unchanged (kernel to kernel, :meth:`GGUFReader.span`);
the ``dequantize`` transform turns them into float32 of the logical shape (or the reader does, for
every quantized tensor, with option ``dequantize: true``).

Metadata is lazy: opening a file records where each key's value lies; :attr:`GGUFReader.metadata`
decodes values on first use.  Every count, length and offset is checked against the bytes left in
the file before anything is allocated.

The writer streams: the header depends only on names, shapes and types, announced up front, so
it is written first and each tensor's bytes follow as they arrive (gguf-py's writer holds them all).
Options: ``metadata`` ({key: value} or {key: {type: T, value: V}}; plain values are typed as bool,
uint32/int32/int64/uint64 by range, float32, string, or an array of one of those), ``alignment``
(default: the template's, else 32), and a GGUF ``template`` whose metadata is kept (the spec's keys win).
"""

from __future__ import annotations

import bisect
import builtins
import struct
import sys
import os
from typing import Mapping, Optional, Sequence

import numpy as np

from .. import dtypes
from ..errors import FormatError, MapspecError
from ..files import MappedFile, check_shape, create_file, read_head
from .base import PositionalWriter, Reader, TensorInfo, announced_dtype, save_with
from ..frameworks.gguf.ggml import BY_DTYPE, BY_NAME, MAX_DIMS, MAX_NAME, TYPES
from ..frameworks.gguf.quant import DEQUANTIZE, encode, dequantize as dequantize_blocks
from ..frameworks.gguf.values import ARRAY as _ARRAY, BOOL as _BOOL, STRING as _STRING
from ..frameworks.gguf.values import VALUE_CODES, VALUE_TYPES, encode_value
from ..frameworks.gguf.values import string_bytes as _string, typed as _typed
from ..frameworks.gguf import outtype as gguf_outtype
from .chunks import c_order_chunks

NAME = "gguf"
MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DEPTH = 4  # nesting of arrays in metadata values


# ggml types: one table for reader, writer, dequantize and the quantizers (mapspec/frameworks/gguf/ggml.py)
WRITE_DTYPES = tuple(BY_DTYPE) + ("uint8",)  # uint8: raw blocks of a quantized type (see meta)
RAW_BLOCKS = True  # records the ggml type of raw quantized blocks (mapspec.rawblocks)


_U64 = struct.Struct("<Q")


def sniff(path: str, head: bytes) -> bool:
    return head[:4] == MAGIC and len(head) >= 8 and struct.unpack("<I", head[4:8])[0] in VERSIONS


class _Cursor:
    """Reads little-endian fields from a memory map, each checked against the file size."""

    def __init__(self, f: MappedFile, pos: int):
        self.f, self.pos = f, pos

    def fixed(self, fmt: str, what: str):
        n = struct.calcsize(fmt)
        self.f.check_span(self.pos, n, what)
        (v,) = struct.unpack_from(fmt, self.f.buffer, self.pos)
        self.pos += n
        return v

    def left(self) -> int:
        return self.f.size - self.pos

    def string(self, what: str, decode: bool = True):
        at = self.pos
        n = self.fixed("<Q", what)
        if n > self.left():
            raise FormatError(self.f.path, f"{what}: a string of {n} bytes runs past the end of the file",
                              offset=at)
        raw = self.f.buffer[self.pos:self.pos + n]
        self.pos += n
        if not decode:
            return None
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(self.f.path, f"{what} is not UTF-8", offset=at) from None

    def value(self, vtype: int, what: str, decode: bool, depth: int = 0):
        at = self.pos
        if vtype not in VALUE_TYPES:
            raise FormatError(self.f.path, f"{what}: unknown value type {vtype}", offset=at)
        if vtype == _STRING:
            return self.string(what, decode)
        if vtype != _ARRAY:
            return self.fixed(VALUE_TYPES[vtype][1], what)
        if depth >= MAX_DEPTH:
            raise FormatError(self.f.path, f"{what}: arrays nested more than {MAX_DEPTH} deep", offset=at)
        itype = self.fixed("<I", what)
        count = self.fixed("<Q", what)
        if itype not in VALUE_TYPES:
            raise FormatError(self.f.path, f"{what}: unknown array item type {itype}", offset=at)
        fmt = VALUE_TYPES[itype][1]
        least = struct.calcsize(fmt) if fmt else (8 if itype == _STRING else 12)
        if count * least > self.left():
            raise FormatError(self.f.path, f"{what}: an array of {count} items cannot fit in the "
                              f"{self.left()} bytes left in the file", offset=at)
        if fmt:  # numbers: one slice, decoded by numpy on demand
            start = self.pos
            self.pos += count * least
            if not decode:
                return None
            arr = np.frombuffer(self.f.buffer, dtype=np.dtype(fmt), count=count, offset=start)
            return [bool(x) for x in arr] if itype == _BOOL else arr.tolist()
        if decode:
            return [self.value(itype, what, True, depth + 1) for _ in range(count)]
        if itype == _STRING:  # skipping (on open) a string array, maybe millions of items: one tight loop
            self._skip_strings(count, what)
            return None
        for _ in range(count):  # skipping (on open): walk the items without keeping them
            self.value(itype, what, False, depth + 1)
        return None

    def _skip_strings(self, count: int, what: str) -> None:
        buf, pos, size, length = self.f.buffer, self.pos, self.f.size, _U64.unpack_from
        for _ in range(count):
            if pos + 8 > size:
                raise FormatError(self.f.path, f"{what}: the string array runs past the end of the file",
                                  offset=pos)
            pos += 8 + length(buf, pos)[0]
            if pos > size:
                raise FormatError(self.f.path, f"{what}: a string runs past the end of the file", offset=pos)
        self.pos = pos


class RawValue:
    """A template's metadata value (a string or an array) as its bytes in the template: copied to the
    output in chunks, never decoded, so that a template's millions of array items cost no memory."""

    __slots__ = ("path", "start", "end")

    def __init__(self, path: str, start: int, end: int):
        self.path, self.start, self.end = path, start, end

    def __len__(self) -> int:
        return self.end - self.start

    def copy_to(self, fh, chunk: int = 1 << 20) -> None:
        with builtins.open(self.path, "rb") as src:
            src.seek(self.start)
            left = self.end - self.start
            while left:
                piece = src.read(min(chunk, left))
                if not piece:
                    raise MapspecError(f"{self.path}: the template changed while its metadata was copied")
                fh.write(piece)
                left -= len(piece)


class GGUFReader(Reader):
    """Lazy GGUF reader: tensor infos on open, metadata values and tensor data on demand."""

    format = NAME

    def __init__(self, path: str, dequantize: bool = False):
        super().__init__(path)
        if not isinstance(dequantize, bool):
            raise MapspecError(f"{path}: option dequantize must be true or false, not {dequantize!r}")
        self._dequantize = dequantize
        self._file = f = MappedFile(path)
        try:
            self._parse(f)
        except BaseException:
            f.close()
            raise
        self._metadata: Optional[dict] = None

    def _parse(self, f: MappedFile) -> None:
        c = _Cursor(f, 0)
        f.check_span(0, 24, "GGUF header")
        if bytes(f.buffer[:4]) != MAGIC:
            raise FormatError(self.path, "does not start with GGUF (not a GGUF file)", offset=0)
        c.pos = 4
        self.version = c.fixed("<I", "version")
        if self.version not in VERSIONS and self.version.to_bytes(4, "big") in (b"\2\0\0\0", b"\3\0\0\0"):
            raise FormatError(self.path, "a big-endian GGUF file; mapspec reads little-endian GGUF only",
                              offset=4)
        if self.version not in VERSIONS:
            raise FormatError(self.path, f"GGUF version {self.version} is not supported (only "
                              f"{', '.join(map(str, VERSIONS))})", offset=4)
        n_tensors = c.fixed("<Q", "tensor count")
        n_kv = c.fixed("<Q", "metadata count")
        # Each key/value needs at least 8+4+1 bytes, each tensor info 8+4+4+8 bytes.
        if n_kv * 13 > c.left() or n_tensors * 24 > c.left():
            raise FormatError(self.path, f"header claims {n_tensors} tensors and {n_kv} metadata keys, more "
                              f"than the {f.size} bytes of the file can hold (corrupt file)", offset=8)
        self._kv: dict[str, tuple] = {}  # key -> (value type, offset of the value)
        self._ends: dict[str, int] = {}  # key -> offset just past its value
        for _ in range(n_kv):
            at = c.pos
            key = c.string("metadata key")
            vtype = c.fixed("<I", f"metadata {key!r} type")
            if key in self._kv:
                raise FormatError(self.path, f"metadata key {key!r} appears twice", offset=at)
            self._kv[key] = (vtype, c.pos)
            c.value(vtype, f"metadata {key!r}", decode=False)
            self._ends[key] = c.pos
        self.alignment = DEFAULT_ALIGNMENT
        if "general.alignment" in self._kv:
            vtype, pos = self._kv["general.alignment"]
            a = _Cursor(f, pos).value(vtype, "general.alignment", True) if vtype != _ARRAY else None
            if vtype != VALUE_CODES["uint32"] or not a or a & (a - 1):
                raise FormatError(self.path, f"general.alignment must be a uint32 power of two, not {a!r}",
                                  offset=pos)
            self.alignment = a
        entries = []
        for _ in range(n_tensors):
            at = c.pos
            name = c.string("tensor name")
            n_dims = c.fixed("<I", f"tensor {name!r} dimension count")
            if n_dims > MAX_DIMS:
                raise FormatError(self.path, f"tensor {name!r} has {n_dims} dimensions; GGUF allows at most "
                                  f"{MAX_DIMS}", offset=at, tensor=name)
            ne = [c.fixed("<Q", f"tensor {name!r} dimensions") for _ in range(n_dims)]
            code = c.fixed("<I", f"tensor {name!r} type")
            offset = c.fixed("<Q", f"tensor {name!r} offset")
            if name in self._infos:
                raise FormatError(self.path, f"tensor {name!r} appears twice", offset=at, tensor=name)
            entries.append((name, ne, code, offset, at))
            self._infos[name] = None  # placeholder: keeps file order, catches duplicates
        self.data_start = -(-c.pos // self.alignment) * self.alignment
        self._where: dict[str, tuple] = {}
        spans = []
        for name, ne, code, offset, at in entries:
            t = TYPES.get(code)
            if t is None:
                raise FormatError(self.path, f"unknown ggml type {code}", offset=at, tensor=name)
            shape = tuple(reversed(ne))
            check_shape(self.path, shape, 1, f"tensor {name!r}", offset=at)
            if ne and ne[0] % t.block:
                raise FormatError(self.path, f"{t.name} stores blocks of {t.block} values but the row length "
                                  f"is {ne[0]}", offset=at, tensor=name)
            numel = 1
            for d in ne:
                numel *= d
            nbytes = numel // t.block * t.nbytes
            if offset % self.alignment:
                raise FormatError(self.path, f"data offset {offset} is not a multiple of the alignment "
                                  f"{self.alignment}", offset=at, tensor=name)
            f.check_span(self.data_start + offset, nbytes, f"tensor {name!r}")
            spans.append((offset, offset + nbytes, name))
            if t.dtype:
                info = TensorInfo(name, shape, t.dtype)
                self._where[name] = (self.data_start + offset, dtypes.to_numpy(t.dtype), shape, nbytes)
            else:
                raw = shape[:-1] + ((ne[0] // t.block * t.nbytes,) if ne else (t.nbytes,))
                info = TensorInfo(name, raw, "uint8", {"ggml_type": t.name, "shape": shape})
                self._where[name] = (self.data_start + offset, np.dtype(np.uint8), raw, nbytes)
                if self._dequantize and ne:
                    if t.name not in DEQUANTIZE:
                        raise FormatError(self.path, f"mapspec cannot dequantize {t.name} (it can: "
                                          f"{', '.join(DEQUANTIZE)}); read without option dequantize to copy its "
                                          f"raw blocks", offset=at, tensor=name)
                    info = TensorInfo(name, shape, "float32", {"ggml_type": t.name, "dequantized": True})
            self._infos[name] = info
        _check_overlaps(self.path, self.data_start, spans)

    @property
    def metadata(self) -> dict:
        """Every metadata key -> its value (numbers, text, lists), decoded on first use."""
        if self._metadata is None:
            self._metadata = {k: _Cursor(self._file, pos).value(t, f"metadata {k!r}", True)
                              for k, (t, pos) in self._kv.items()}
        return self._metadata

    def metadata_value(self, key: str):
        """One metadata key's value (None if absent), without decoding the others (a vocabulary's arrays)."""
        if self._metadata is not None or key not in self._kv:
            return (self._metadata or {}).get(key)
        t, pos = self._kv[key]
        return _Cursor(self._file, pos).value(t, f"metadata {key!r}", True)

    def metadata_types(self) -> dict:
        """Every metadata key -> its GGUF type name (``uint32``, ``array[string]``, ...)."""
        out = {}
        for k, (t, pos) in self._kv.items():
            name = VALUE_TYPES[t][0]
            if t == _ARRAY:
                name += f"[{VALUE_TYPES[_Cursor(self._file, pos).fixed('<I', k)][0]}]"
            out[k] = name
        return out

    def typed_metadata(self) -> dict:
        """{key: (type name, value)}: what a writer needs to reproduce the metadata exactly."""
        types, values = self.metadata_types(), self.metadata
        return {k: (types[k], values[k]) for k in self._kv}

    def copied_metadata(self) -> dict:
        """{key: (type name, value)} as :meth:`typed_metadata`, but strings and arrays as :class:`RawValue`
        spans of this file: what a writer copies from a template, in bounded memory."""
        types, out = self.metadata_types(), {}
        for k, (t, pos) in self._kv.items():
            out[k] = (types[k], RawValue(self.path, pos, self._ends[k]) if t in (_STRING, _ARRAY) else
                      _Cursor(self._file, pos).value(t, f"metadata {k!r}", True))
        return out

    def _read(self, info: TensorInfo) -> np.ndarray:
        offset, dt, shape, _ = self._where[info.name]
        arr = self._file.array(offset, dt, shape, f"tensor {info.name!r}")
        if info.meta and info.meta.get("dequantized"):
            return dequantize_blocks(arr, info.meta["ggml_type"])
        if sys.byteorder == "big" and dt.itemsize > 1:
            arr = arr.byteswap()
        return arr

    def span(self, name: str) -> Optional[tuple]:
        """(fd, offset, byte count) of a tensor's stored bytes; None if dequantized or byte-swapped."""
        info, (offset, dt, _, nbytes) = self.info(name), self._where[name]
        if (info.meta or {}).get("dequantized") or (sys.byteorder == "big" and dt.itemsize > 1):
            return None
        return self._file.fileno(), offset, nbytes

    def release(self, name: str) -> None:
        where = self._where.get(name)
        if where is not None:
            self._file.drop(where[0], where[3])

    def close(self) -> None:
        self._file.close()


def _check_overlaps(path: str, data_start: int, spans: list) -> None:
    """No two tensors share a byte.  A zero-size tensor holds no byte, yet its offset must still be a
    place in the data section (checked with the span) that is not strictly inside another tensor's
    bytes: at another tensor's first byte or just past its last is fine (gguf-py's writer puts an
    empty tensor at the running offset, which is where the next tensor starts)."""
    full = sorted(s for s in spans if s[1] > s[0])
    for (b0, e0, n0), (b1, e1, n1) in zip(full, full[1:]):
        if b1 < e0:
            raise FormatError(path, f"tensor data overlaps tensor {n0!r}", offset=data_start + b1, tensor=n1)
    starts = [b for b, _, _ in full]
    for b, e, name in spans:
        if e == b:
            i = bisect.bisect_left(starts, b) - 1  # the last tensor starting before b
            if i >= 0 and full[i][1] > b:
                raise FormatError(path, f"empty tensor placed at data offset {b}, inside the bytes of tensor "
                                  f"{full[i][2]!r} ({full[i][0]}..{full[i][1]})", offset=data_start + b, tensor=name)


# -- writing ------------------------------------------------------------------------------

def header_bytes(infos: Sequence[TensorInfo], metadata: Mapping[str, tuple], alignment: int,
                 encodings: Optional[Mapping[str, str]] = None) -> tuple:
    """(header pieces padded to the alignment: bytes, or :class:`RawValue` spans of a template,
    [data offset of each tensor], data size).  ``encodings``: {tensor: ggml type name} for tensors
    stored in another type than they arrive in (``outtype``)."""
    out = [MAGIC, struct.pack("<IQQ", 3, len(infos), len(metadata))]
    for key, (tname, v) in metadata.items():
        tcode = VALUE_CODES["array"] if tname.startswith("array[") else VALUE_CODES.get(tname, -1)
        out.append(_string(key) + struct.pack("<I", max(tcode, 0)))
        out.append(v if isinstance(v, RawValue) else encode_value(tname, v, key))  # a template's value: as it is
    offsets, pos = [], 0
    for info in infos:
        code, ne, nbytes = tensor_layout(info, (encodings or {}).get(info.name))
        if len(info.name.encode("utf-8")) > MAX_NAME:
            raise MapspecError(f"GGUF tensor name {info.name!r} is longer than {MAX_NAME} bytes "
                               f"(llama.cpp's limit); rename it")
        out.append(_string(info.name) + struct.pack(f"<I{len(ne)}QIQ", len(ne), *ne, code, pos))
        offsets.append(pos)
        pos += -(-nbytes // alignment) * alignment
    out.append(b"\0" * (-sum(map(len, out)) % alignment))
    return out, offsets, pos


def tensor_layout(info: TensorInfo, encoding: Optional[str] = None) -> tuple:
    """(ggml type code, ne (fastest first), byte size) of an announced tensor (stored as ggml type
    ``encoding`` if given)."""
    if encoding is not None:
        t = TYPES[BY_NAME[encoding]]
        return BY_NAME[encoding], list(reversed(info.shape)), info.numel // t.block * t.nbytes
    dname = announced_dtype(info)
    meta = info.meta or {}
    if dname == "uint8" and meta.get("ggml_type"):
        code = BY_NAME.get(meta["ggml_type"])
        t = TYPES.get(code) if code is not None else None
        logical = tuple(meta.get("shape") or ())
        if t is None or t.dtype is not None or not logical:
            raise MapspecError(f"tensor {info.name!r}: {meta['ggml_type']!r} is not a block-quantized ggml type")
        if logical[:-1] != tuple(info.shape[:-1]) or logical[-1] % t.block or \
                logical[-1] // t.block * t.nbytes != info.shape[-1]:
            raise MapspecError(f"tensor {info.name!r}: raw {t.name} blocks of shape {tuple(info.shape)} do not "
                               f"hold a tensor of shape {logical} (only renames keep quantized blocks; "
                               f"dequantize it before reshaping)")
        return code, list(reversed(logical)), TensorInfo(info.name, info.shape, "uint8").nbytes
    if dname not in BY_DTYPE:
        raise MapspecError(f"tensor {info.name!r}: GGUF has no {dname} type (it holds "
                           f"{', '.join(BY_DTYPE)} and quantized blocks from a GGUF source); cast it")
    return BY_DTYPE[dname], list(reversed(info.shape)), info.nbytes


def _allow_option(path: str, allow) -> frozenset:
    """The writer option ``allow`` (``--target-option allow=underflow``): numeric-safety kinds accepted
    when ``outtype`` stores values in a narrower type."""
    from ..numeric import ALLOW

    words = [allow] if isinstance(allow, str) else list(allow or ())
    words = [w.strip() for item in words for w in str(item).split(",") if w.strip()]
    bad = [w for w in words if w not in ALLOW]
    if bad:
        raise MapspecError(f"{path}: GGUF option allow: {bad[0]!r} is not one of {', '.join(ALLOW)}")
    return frozenset(words)


_SAME = {("F32", "float32"), ("F16", "float16")}  # (stored type, arriving dtype) whose bytes need no encoding


class GGUFWriter(PositionalWriter):
    """Streaming GGUF writer (version 3); see the module docstring for its options.

    Either ``write`` in the announced order, or ``write_at`` / ``copy_at`` in any order from several
    threads (each tensor's offset follows from the header; ``apply --jobs``)."""

    format = NAME
    RAW_BLOCKS = RAW_BLOCKS

    def __init__(self, path: str, infos: Sequence[TensorInfo], metadata: Optional[Mapping] = None,
                 alignment: Optional[int] = None, template: Optional[str] = None, outtype: Optional[str] = None,
                 allow=(), **options):
        super().__init__(path, infos)
        self._allow = _allow_option(path, allow)
        if len(set(self._order)) != len(self._order):
            raise MapspecError(f"{path}: the same tensor name is announced twice")
        meta: dict = dict(template_metadata(template)) if template is not None else {}
        if alignment is None:  # the template's, else the format's default
            alignment = meta.get("general.alignment", ("uint32", DEFAULT_ALIGNMENT))[1]
        if isinstance(alignment, bool) or not isinstance(alignment, int) or alignment <= 0 or \
                alignment & (alignment - 1) or alignment > 1 << 20:
            raise MapspecError(f"{path}: GGUF alignment must be a power of two up to 1 MiB, not {alignment!r}")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise MapspecError(f"{path}: GGUF metadata must be a mapping of keys to values")
        for k, v in (metadata or {}).items():
            if not isinstance(k, str) or not k:
                raise MapspecError(f"{path}: GGUF metadata keys must be non-empty text, not {k!r}")
            meta[k] = _typed(k, v)
        self._types = gguf_outtype.encodings(self.infos, outtype, path)  # {name: ggml type} with outtype
        if outtype is not None:
            meta.update(gguf_outtype.metadata(outtype))
        meta.pop("general.alignment", None)
        if alignment != DEFAULT_ALIGNMENT:
            meta["general.alignment"] = ("uint32", alignment)
        self.alignment = alignment
        head, offsets, self._data_size = header_bytes(self.infos, meta, alignment, self._types)
        head_size = sum(map(len, head))
        self._end = head_size + self._data_size
        self._offsets = {i.name: head_size + o for i, o in zip(self.infos, offsets)}
        self._fh = create_file(path)
        for piece in head:
            piece.copy_to(self._fh) if isinstance(piece, RawValue) else self._fh.write(piece)

    def stored(self, name: str) -> tuple:
        """(bytes, ggml type name) of a tensor this writer encodes (``outtype``), else (None, None)."""
        t = self._types.get(name)
        if t is None:
            return None, None
        return tensor_layout(self._expected[name], t)[2], t

    def _pieces(self, name: str, array: np.ndarray):
        """The stored bytes of a tensor, in pieces (encoded into its outtype type if it has one)."""
        t = self._types.get(name)
        if t is None or (t, dtypes.name_of(array.dtype)) in _SAME:
            return c_order_chunks(array, 16 << 20, byteorder="<")
        return encode(array, t, f"tensor {name!r}", self._allow)

    def write(self, name: str, array: np.ndarray) -> None:
        array = np.asarray(array)
        info = self._check(name, array)
        self._check_dtype(name, info, array, why="the header is already written (cast it before writing)")
        for piece in self._pieces(name, array):
            self._fh.write(piece)
        self._fh.write(b"\0" * (-self._fh.tell() % self.alignment))  # the header is padded too

    def write_at(self, name: str, array: np.ndarray) -> None:
        """Write one tensor at its place in the file; any order, any thread, each tensor once."""
        array = np.asarray(array)
        info = self._fits(name, array)
        self._check_dtype(name, info, array, why="the header is already written (cast it before writing)")
        self._place(name)
        self._put(name, self._pieces(name, array))

    def copy_at(self, name: str, info: TensorInfo, span: tuple) -> None:
        """Write tensor ``name`` from another file's bytes (``span``: descriptor, offset, byte count, as a
        safetensors reader gives it), like :meth:`write_at`; encoded on the way if its type asks."""
        want = self._expected.get(name)
        if want is None or tuple(want.shape) != tuple(info.shape) or announced_dtype(want) != info.dtype \
                or span[2] != want.nbytes:
            raise MapspecError(f"{self.path}: tensor {name!r} does not match what was announced")
        t = self._types.get(name)
        self._place(name)
        if t is None or (t, info.dtype) in _SAME:
            self._copy(name, span)
        else:
            self._put(name, self._encoded(name, info, span, t))

    def _encoded(self, name: str, info: TensorInfo, span: tuple, t: str):
        """The stored bytes of a tensor read from ``span`` and encoded into ggml type ``t``, in pieces."""
        fd, src = span[0], span[1]
        row = max(1, info.shape[-1] if info.shape else 1) * dtypes.itemsize(info.dtype)
        step = max(1, (16 << 20) // row) * row
        dt = dtypes.to_numpy(info.dtype).newbyteorder("<")
        for at in range(0, span[2], step):
            raw = _pread(fd, min(step, span[2] - at), src + at)
            rows = np.frombuffer(raw, dt).reshape(-1, info.shape[-1] if info.shape else 1)
            yield from encode(rows, t, f"tensor {name!r}", self._allow)

    def close(self) -> None:
        if self._all_placed():
            self._fh.truncate(self._end)  # the padding after the last tensor
            self._fh.close()
            return
        super().close()
        pos = self._fh.tell()
        self._fh.close()
        if pos != self._end:  # pragma: no cover - would be a bug in the layout
            raise MapspecError(f"{self.path}: wrote {pos} bytes, expected {self._end}")

    def abort(self) -> None:
        self._fh.close()


def _pread(fd: int, n: int, pos: int) -> bytes:
    parts = []
    while n > 0:
        b = os.pread(fd, n, pos)
        if not b:
            raise MapspecError(f"tensor data ends {n} bytes early in the source file")
        parts.append(b)
        n -= len(b)
        pos += len(b)
    return b"".join(parts) if len(parts) != 1 else parts[0]


def template_metadata(template: str) -> dict:
    """The typed metadata of a GGUF template ({} when the template is another format)."""
    if not sniff(template, read_head(template)):
        return {}
    with GGUFReader(template) as r:
        return r.copied_metadata()


READ_OPTIONS = ("dequantize",)
WRITE_OPTIONS = ("metadata", "alignment", "outtype", "allow")
POSITIONAL = GGUFWriter.positional  # the writer has write_at/copy_at (apply --jobs writes in parallel)


def open(path: str, **options) -> GGUFReader:  # noqa: A001 - the format API's name
    """Option ``dequantize`` (default false): quantized tensors as float32 of their logical shape
    (the ``dequantize`` transform's kernels) instead of raw blocks."""
    return GGUFReader(path, dequantize=options.get("dequantize", False))


def create(path: str, infos: Sequence[TensorInfo], **options) -> GGUFWriter:
    return GGUFWriter(path, infos, **options)


def save(path: str, tensors, **options) -> None:
    save_with(create, path, tensors, **options)
