"""numpy ``.npz`` archives: a zip of ``.npy`` members, one per tensor.

Reading: member headers are parsed eagerly (a few bytes each); values are
memory-mapped straight out of the zip when a member is stored uncompressed (what
``np.savez`` writes), and decompressed on demand otherwise.  Pickled (object)
arrays are refused.  Writing streams one member at a time.
"""

from __future__ import annotations

import ast
import struct
import zipfile
import zlib
from typing import Sequence

import numpy as np

from .. import dtypes
from ..errors import FormatError
from ..files import MappedFile, check_shape
from .base import Reader, TensorInfo, Writer, save_with

NAME = "npz"
# What the zipfile module raises on damaged archives: structure errors, unsupported
# features (NotImplementedError: zip version, compression method), encrypted members
# (RuntimeError), deflate errors (zlib.error), empty member names (IndexError), ...
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, struct.error,
               NotImplementedError, RuntimeError, IndexError, KeyError, OverflowError, zlib.error)
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # zip local file header, 30 bytes
_NPY_MAGIC = b"\x93NUMPY"
_INFLATE_CHUNK = 1 << 20  # bytes decompressed per step
_MAX_DEFLATE_RATIO = 1040  # deflate expands at most ~1032:1; a larger claim is a lie


def sniff(path: str, head: bytes) -> bool:
    return head[:4] == b"PK\x03\x04" and path.lower().endswith(".npz")


def _parse_npy_header(raw: bytes, path: str, where: int, member: str):
    """(dtype, shape, fortran_order, header_length) of an .npy header, strictly checked."""
    if raw[:6] != _NPY_MAGIC or len(raw) < 10:
        raise FormatError(path, f"member {member!r} is not an .npy array", offset=where)
    major = raw[6]
    if major == 1:
        (hlen,) = struct.unpack("<H", raw[8:10])
        start = 10
    elif major in (2, 3):
        if len(raw) < 12:
            raise FormatError(path, f"member {member!r}: truncated .npy header", offset=where)
        (hlen,) = struct.unpack("<I", raw[8:12])
        start = 12
    else:
        raise FormatError(path, f"member {member!r}: unknown .npy version {major}", offset=where)
    if hlen > 1 << 20:
        raise FormatError(path, f"member {member!r}: .npy header length {hlen} is absurd", offset=where)
    if len(raw) < start + hlen:
        raise FormatError(path, f"member {member!r}: truncated .npy header", offset=where)
    text = raw[start:start + hlen].decode("latin1")
    try:
        # The .npy header is a Python dict literal of strings, booleans, ints and tuples;
        # literal_eval evaluates literals only (no names, no calls).
        header = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise FormatError(path, f"member {member!r}: unreadable .npy header", offset=where) from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise FormatError(path, f"member {member!r}: .npy header lacks descr/fortran_order/shape", offset=where)
    shape = header["shape"]
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                               for d in shape):
        raise FormatError(path, f"member {member!r}: bad shape {shape!r} in .npy header", offset=where)
    try:
        dt = np.dtype(header["descr"]) if isinstance(header["descr"], str) else None
    except (TypeError, ValueError, SyntaxError, KeyError, RecursionError, MemoryError):
        # numpy parses comma strings ("f4,i8") with its own literal parser; anything it cannot read is bad
        raise FormatError(path, f"member {member!r}: dtype {header['descr']!r} is not a numpy type",
                          offset=where) from None
    if dt is None or dt.hasobject:
        raise FormatError(path, f"member {member!r}: dtype {header['descr']!r} is not a plain numeric type "
                          f"(pickled object arrays are refused)", offset=where)
    try:
        name = dtypes.name_of(dt)
    except KeyError:
        raise FormatError(path, f"member {member!r}: unsupported dtype {dt.str!r}", offset=where) from None
    check_shape(path, shape, dt.itemsize, f"member {member!r}", offset=where)
    return dt, shape, bool(header["fortran_order"]), start + hlen, name


class NpzReader(Reader):
    format = NAME

    def __init__(self, path: str):
        super().__init__(path)
        self._file = MappedFile(path)
        try:
            self._zip = zipfile.ZipFile(path)
            members = self._zip.infolist()
        except _ZIP_ERRORS as e:
            self._file.close()
            raise FormatError(path, f"not a readable zip archive: {e}") from None
        try:
            self._scan(members)
        except BaseException:
            self.close()
            raise

    def _scan(self, members) -> None:
        path = self.path
        self._where: dict[str, tuple] = {}
        for zi in members:
            if not zi.filename:
                raise FormatError(path, "a zip member has an empty name", offset=zi.header_offset)
            if zi.is_dir():
                continue
            key = zi.filename[:-4] if zi.filename.endswith(".npy") else zi.filename
            if key in self._where:
                raise FormatError(path, f"two zip members hold tensor {key!r} ({self._where[key][0].filename!r} "
                                  f"and {zi.filename!r})", offset=zi.header_offset, tensor=key)
            if zi.compress_type == zipfile.ZIP_DEFLATED and \
                    zi.file_size > _MAX_DEFLATE_RATIO * zi.compress_size + 1024:
                raise FormatError(path, f"member {zi.filename!r} claims {zi.file_size} bytes from "
                                  f"{zi.compress_size} compressed bytes, more than deflate can expand (corrupt "
                                  f"file or zip bomb)", offset=zi.header_offset)
            if zi.compress_type == zipfile.ZIP_STORED:
                data_start = self._data_offset(zi)
                head = self._file.bytes(data_start, min(zi.file_size, 4096), f"member {zi.filename!r}")
            else:
                try:
                    with self._zip.open(zi) as f:
                        head = f.read(4096)
                except _ZIP_ERRORS as e:
                    raise FormatError(path, f"member {zi.filename!r}: {e}", offset=zi.header_offset) from None
                data_start = None
            dt, shape, fortran, hlen, dname = _parse_npy_header(head, path, zi.header_offset, zi.filename)
            count = 1
            for d in shape:
                count *= d
            if hlen + count * dt.itemsize != zi.file_size:
                raise FormatError(path, f"member {zi.filename!r}: header says {shape} {dname} "
                                  f"({count * dt.itemsize} bytes) but the member holds {zi.file_size - hlen}",
                                  offset=zi.header_offset)
            self._infos[key] = TensorInfo(key, tuple(shape), dname)
            self._where[key] = (zi, dt, fortran, data_start, hlen)

    def _data_offset(self, zi: zipfile.ZipInfo) -> int:
        raw = self._file.bytes(zi.header_offset, _LOCAL_HEADER.size, f"zip header of {zi.filename!r}")
        fields = _LOCAL_HEADER.unpack(raw)
        if fields[0] != b"PK\x03\x04":
            raise FormatError(self.path, f"bad zip local header for {zi.filename!r}", offset=zi.header_offset)
        name_len, extra_len = fields[9], fields[10]
        return zi.header_offset + _LOCAL_HEADER.size + name_len + extra_len

    def _read(self, info: TensorInfo) -> np.ndarray:
        zi, dt, fortran, data_start, hlen = self._where[info.name]
        if data_start is not None:
            flat = self._file.array(data_start + hlen, dt, (info.numel,), f"tensor {info.name!r}")
        else:
            flat = self._inflate(zi, dt, hlen, info)
        arr = flat.reshape(info.shape, order="F" if fortran else "C")
        if not dt.isnative:
            arr = arr.astype(dt.newbyteorder("="))
        return arr

    def _inflate(self, zi, dt: np.dtype, hlen: int, info: TensorInfo) -> np.ndarray:
        """A deflated member, decompressed in bounded chunks straight into its array (peak memory: the
        tensor plus one chunk, never twice the tensor)."""
        nbytes = info.numel * dt.itemsize
        try:
            out = np.empty(info.numel, dtype=dt)
        except MemoryError:
            raise FormatError(self.path, f"member {zi.filename!r} needs {nbytes:,} bytes of memory to decompress; "
                              f"store it uncompressed (np.savez, not savez_compressed) so that it can be "
                              f"memory-mapped", tensor=info.name) from None
        view = memoryview(out.view(np.uint8).reshape(-1))
        done = 0
        try:
            with self._zip.open(zi) as f:
                f.seek(hlen)
                while done < nbytes:
                    chunk = f.read(min(_INFLATE_CHUNK, nbytes - done))
                    if not chunk:
                        break
                    view[done:done + len(chunk)] = chunk
                    done += len(chunk)
                extra = f.read(1)
        except _ZIP_ERRORS as e:
            raise FormatError(self.path, f"{e}", tensor=info.name) from None
        if done != nbytes or extra:
            raise FormatError(self.path, "member data is truncated" if done != nbytes else
                              "member holds more data than its header says", tensor=info.name)
        return out

    def close(self) -> None:
        self._zip.close()
        self._file.close()


class NpzWriter(Writer):
    format = NAME

    def __init__(self, path: str, infos: Sequence[TensorInfo], **options):
        super().__init__(path, infos)
        for i in self.infos:
            if i.dtype and not dtypes.in_numpy(i.dtype):
                raise FormatError(path, f"npz cannot hold {i.dtype} (numpy saves it as raw bytes); "
                                  f"add a cast to float32 for this tensor", tensor=i.name)
        self._zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True)

    def write(self, name: str, array: np.ndarray) -> None:
        self._check(name, array)
        with self._zip.open(name + ".npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, np.asarray(array), allow_pickle=False)

    def close(self) -> None:
        super().close()
        self._zip.close()

    def abort(self) -> None:
        try:
            self._zip.close()
        except Exception:  # the file is being discarded anyway
            pass


# Options a user may give (spec source/target options; --source-option, --template-option, --target-option, inspect --option); anything else is an error.
READ_OPTIONS = ()
WRITE_OPTIONS = ()


def open(path: str, **options) -> NpzReader:  # noqa: A001 - the format API's name
    return NpzReader(path)


def create(path: str, infos: Sequence[TensorInfo], **options) -> NpzWriter:
    return NpzWriter(path, infos, **options)


def save(path: str, tensors, **options) -> None:
    save_with(create, path, tensors, **options)
