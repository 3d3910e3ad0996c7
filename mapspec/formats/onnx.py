"""ONNX models: the initializers of the main graph, read and replaced without the onnx package.

An ``.onnx`` file is one protobuf ``ModelProto`` (onnx.proto): field 7 is the ``GraphProto``,
whose field 5 repeats ``TensorProto`` initializers::

    TensorProto: dims = 1 (int64, packed or not) | data_type = 2 | name = 8 | raw_data = 9
                 float_data = 4 | int32_data = 5 | int64_data = 7 | double_data = 10 | uint64_data = 11
                 external_data = 13 (key = 1, value = 2: location, offset, length) | data_location = 14

The file is scanned with :mod:`mapspec.formats.protowire` (bounds-checked, no 2 GB protobuf
limit): ``raw_data``, packed ``float_data``/``double_data`` and external data are memory-mapped
views; the varint fields (``int32_data`` for the small types, ``int64_data``, ``uint64_data``) are
decoded on read.  External data must lie inside the model's directory (no absolute path, no
``..``, no symbolic link out of it) and inside its file.

The writer needs a template model: it copies every field of the template, re-framing the graph,
and replaces each initializer by the converted tensor (names, shapes and dtypes must match the
template's).  Tensors are written as ``raw_data`` inline, or as external data in ``OUTPUT.data``
beside the output (put in place just before it, under the output's rules: no overwrite without
``--force``; see :func:`.base.companion`) with option ``external_data: true``, or
automatically when the inline model would pass protobuf's 2 GB limit (tensors of at least
``size_threshold`` bytes, default 1024, go out then).
"""

from __future__ import annotations

import builtins
import contextlib
import os
import sys
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import numpy as np

from .. import dtypes
from ..errors import FormatError, MapspecError
from ..paths import within
from ..files import MappedFile, check_shape, companion
from .base import Reader, TensorInfo, Writer, announced_dtype, save_with
from .chunks import c_order_chunks
from .protowire import LEN, VARINT, Wire, encode_varint, len_field, signed64, tag

NAME = "onnx"
MODEL_GRAPH, GRAPH_INITIALIZER = 7, 5
T_DIMS, T_TYPE, T_FLOAT, T_INT32, T_INT64, T_NAME, T_RAW, T_DOUBLE, T_UINT64, T_EXTERNAL, T_LOCATION = \
    1, 2, 4, 5, 7, 8, 9, 10, 11, 13, 14
MAX_DIMS = 32
MAX_TENSORS = 1_000_000
PROTOBUF_LIMIT = 2 ** 31 - 1  # bytes; protobuf refuses larger messages, so bigger models need external data

# ONNX TensorProto.DataType -> mapspec dtype; the storage field for the typed (non-raw) encoding.
TYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
         10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16", 17: "float8_e4m3fn",
         19: "float8_e5m2"}
CODES = {v: k for k, v in TYPES.items()}
WRITE_DTYPES = tuple(CODES)
NAMED_TEMP = True  # the writer puts its external data in a temporary file beside the output's
COMPANION_SUFFIXES = (".data",)  # files the writer may put beside OUTPUT: OUTPUT.data (the output guard checks them)
_TYPED_FIELD = {"float32": T_FLOAT, "float64": T_DOUBLE, "int64": T_INT64, "uint32": T_UINT64,
                "uint64": T_UINT64}  # every other type lives in int32_data (float16/bfloat16 as bits)


def sniff(path: str, head: bytes) -> bool:
    """An ONNX model starts with ir_version (field 1, a small varint) and a ModelProto field."""
    if len(head) < 4 or head[0] != 0x08 or not 1 <= head[1] <= 30:
        return False
    return head[2] in (0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72)


class _Tensor(NamedTuple):
    name: str
    shape: tuple
    dtype: str
    kind: str  # "raw", "packed" (float/double_data), "varint", "external"
    offset: int  # where the bytes are (raw/packed: in the model; external: in `location`)
    nbytes: int  # raw/packed/external: byte length; varint: field span end
    location: Optional[str] = None
    field: int = 0


class OnnxReader(Reader):
    """Lazy reader of the main graph's initializers (names as ONNX gives them)."""

    format = NAME

    def __init__(self, path: str):
        super().__init__(path)
        self._file = MappedFile(path)
        self._external: dict[str, MappedFile] = {}
        try:
            self._wire = Wire(self._file, "ONNX", "an ONNX model")
            self._tensors: dict[str, _Tensor] = {}
            self._parse()
        except BaseException:
            self.close()
            raise

    def _parse(self) -> None:
        w, size = self._wire, self._file.size
        self.graph_span = None
        for field, wire, value, tag_at, end in w.fields(0, size, "the model"):
            if field == MODEL_GRAPH:
                w.expect(field, wire, LEN, tag_at, "the model")
                self.graph_span = (tag_at, value, end)
        if self.graph_span is None:
            raise FormatError(self.path, "no graph in this ONNX model (field 7 missing; not an ONNX file?)", offset=0)
        _, start, end = self.graph_span
        self.initializer_spans = []
        for field, wire, value, tag_at, tend in w.fields(start, end, "the graph"):
            if field == GRAPH_INITIALIZER:
                w.expect(field, wire, LEN, tag_at, "the graph")
                if len(self._tensors) >= MAX_TENSORS:
                    raise FormatError(self.path, f"more than {MAX_TENSORS} initializers", offset=tag_at)
                t = self._tensor(value, tend)
                if t.name in self._tensors:
                    raise FormatError(self.path, "initializer appears twice", offset=tag_at, tensor=t.name)
                self._tensors[t.name] = t
                self.initializer_spans.append((tag_at, tend, t.name))
                self._infos[t.name] = TensorInfo(t.name, t.shape, t.dtype)

    def _tensor(self, start: int, end: int) -> _Tensor:
        w = self._wire
        dims, code, name, data, ext, location = [], None, None, None, {}, 0
        for field, wire, value, tag_at, fend in w.fields(start, end, "an initializer"):
            if field == T_DIMS:
                if wire == VARINT:
                    dims.append(signed64(value))
                else:
                    w.expect(field, wire, LEN, tag_at, "an initializer's dims")
                    pos = value
                    while pos < fend:
                        d, pos = w.varint(pos, fend, "an initializer's dims")
                        dims.append(signed64(d))
                if len(dims) > MAX_DIMS:
                    raise FormatError(self.path, f"an initializer has more than {MAX_DIMS} dimensions", offset=tag_at)
            elif field == T_TYPE:
                w.expect(field, wire, VARINT, tag_at, "an initializer")
                code = value
            elif field == T_NAME:
                w.expect(field, wire, LEN, tag_at, "an initializer")
                name = self._text(value, fend, tag_at)
            elif field in (T_RAW, T_FLOAT, T_DOUBLE, T_INT32, T_INT64, T_UINT64):
                if data is not None and data[0] != field:
                    raise FormatError(self.path, "an initializer holds its values in two fields", offset=tag_at)
                if wire == LEN:
                    data = (field, value, fend)
                elif field in (T_INT32, T_INT64, T_UINT64) and wire == VARINT:
                    # unpacked repeated varints: kept as the span of the whole tensor, decoded on read
                    data = (field, None, None)
                else:
                    raise FormatError(self.path, f"field {field} of an initializer is not packed; mapspec reads "
                                      f"packed or raw values", offset=tag_at)
            elif field == T_EXTERNAL:
                w.expect(field, wire, LEN, tag_at, "an initializer")
                key = val = None
                for f2, w2, v2, t2, e2 in w.fields(value, fend, "external_data"):
                    if f2 in (1, 2):
                        w.expect(f2, w2, LEN, t2, "external_data")
                        if f2 == 1:
                            key = self._text(v2, e2, t2)
                        else:
                            val = self._text(v2, e2, t2)
                if key is not None:
                    ext[key] = val or ""
            elif field == T_LOCATION:
                w.expect(field, wire, VARINT, tag_at, "an initializer")
                location = value
        where = f"initializer {name!r}"
        if name is None:
            raise FormatError(self.path, "an initializer has no name", offset=start)
        if code not in TYPES:
            raise FormatError(self.path, f"data type {code} is not supported by mapspec (known: "
                              f"{', '.join(f'{k} {v}' for k, v in TYPES.items())})", offset=start, tensor=name)
        dname = TYPES[code]
        if any(d < 0 for d in dims):
            raise FormatError(self.path, f"shape {tuple(dims)} has a negative dimension", offset=start, tensor=name)
        nbytes = check_shape(self.path, dims, dtypes.itemsize(dname), where, offset=start)
        shape = tuple(dims)
        if location == 1:
            return self._external_tensor(name, shape, dname, nbytes, ext, start)
        if data is None:
            if nbytes:
                raise FormatError(self.path, f"holds no values for shape {shape}", offset=start, tensor=name)
            return _Tensor(name, shape, dname, "raw", start, 0)
        field, at, fend = data
        if field == T_RAW or field in (T_FLOAT, T_DOUBLE):
            want = nbytes if field == T_RAW else TensorInfo(name, shape, None).numel * (4 if field == T_FLOAT else 8)
            if field == T_FLOAT and dname != "float32" or field == T_DOUBLE and dname != "float64":
                raise FormatError(self.path, f"{dname} values stored in field {field}", offset=start, tensor=name)
            if fend - at != want:
                raise FormatError(self.path, f"shape {shape} of {dname} needs {want} bytes but the data has "
                                  f"{fend - at}", offset=at, tensor=name)
            return _Tensor(name, shape, dname, "raw", at, want)
        if TensorInfo(name, shape, None).numel > end - start:  # every varint takes at least one byte
            raise FormatError(self.path, f"shape {shape} needs more values than the initializer's "
                              f"{end - start} bytes can hold", offset=start, tensor=name)
        return _Tensor(name, shape, dname, "varint", start, end, field=field)

    def _external_tensor(self, name, shape, dname, nbytes, ext: dict, start: int) -> _Tensor:
        loc = ext.get("location")
        if not loc:
            raise FormatError(self.path, "external data without a location", offset=start, tensor=name)
        try:
            offset = int(ext.get("offset") or 0)
            length = int(ext["length"]) if ext.get("length") else nbytes
        except ValueError:
            raise FormatError(self.path, f"external data offset/length are not integers: {ext}", offset=start,
                              tensor=name) from None
        if offset < 0 or length != nbytes:
            raise FormatError(self.path, f"external data length {length} (offset {offset}) does not match shape "
                              f"{shape} of {dname} ({nbytes} bytes)", offset=start, tensor=name)
        t = _Tensor(name, shape, dname, "external", offset, nbytes, location=loc)
        self._external_data(t, start)
        return t

    def _external_data(self, t: _Tensor, at: int) -> Path:
        """The external data file of ``t``, checked to hold its bytes: on open (so that ``inspect`` refuses
        what ``apply`` would) and again before reading (the file may have changed since)."""
        full = self._resolve(t.location, t.name, at)
        try:
            size = full.stat().st_size if full.is_file() else None
        except OSError:
            size = None
        if size is None:
            raise FormatError(self.path, f"external data file {t.location!r} is missing", tensor=t.name)
        if t.offset + t.nbytes > size:
            raise FormatError(self.path, f"external data {t.location!r} needs bytes {t.offset}.."
                              f"{t.offset + t.nbytes} but that file has only {size} bytes (truncated or corrupt)",
                              offset=at, tensor=t.name)
        return full

    def _resolve(self, loc: str, name: str, start: int) -> Path:
        base = Path(self.path).resolve().parent
        p = Path(loc)
        if p.is_absolute() or ".." in p.parts or "\\" in loc or "\0" in loc:
            raise FormatError(self.path, f"external data location {loc!r} leaves the model's directory "
                              f"(refused)", offset=start, tensor=name)
        full = (base / p).resolve()
        if not within(full, [base], itself=False):
            raise FormatError(self.path, f"external data location {loc!r} resolves outside the model's "
                              f"directory (refused)", offset=start, tensor=name)
        return full

    def _text(self, start: int, end: int, at: int) -> str:
        try:
            return bytes(self._file.buffer[start:end]).decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(self.path, "a name is not UTF-8", offset=at) from None

    def _read(self, info: TensorInfo) -> np.ndarray:
        t = self._tensors[info.name]
        dt = dtypes.to_numpy(t.dtype)
        if t.kind == "raw":
            if not t.nbytes:
                return np.empty(t.shape, dtype=dtypes.to_numpy(t.dtype))
            arr = self._file.array(t.offset, dt, t.shape, f"initializer {t.name!r}")
        elif t.kind == "external":
            f = self._external.get(t.location)
            if f is None:
                f = self._external[t.location] = MappedFile(self._external_data(t, 0))
            if not t.nbytes:
                return np.empty(t.shape, dtype=dtypes.to_numpy(t.dtype))
            arr = f.array(t.offset, dt, t.shape, f"initializer {t.name!r} in {t.location}")
        else:
            arr = self._varints(t)
        if sys.byteorder == "big" and arr.dtype.itemsize > 1:
            arr = arr.byteswap()
        return arr

    def _varints(self, t: _Tensor) -> np.ndarray:
        w, values = self._wire, []
        n = TensorInfo(t.name, t.shape, None).numel
        for field, wire, value, tag_at, fend in w.fields(t.offset, t.nbytes, "an initializer"):
            if field != t.field:
                continue
            if wire == VARINT:
                values.append(value)
            else:
                pos = value
                while pos < fend:
                    v, pos = w.varint(pos, fend, f"initializer {t.name!r}")
                    values.append(v)
            if len(values) > n:
                break
        if len(values) != n:
            raise FormatError(self.path, f"shape {t.shape} needs {n} values but the data has {len(values)}",
                              tensor=t.name)
        bits = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[dtypes.itemsize(t.dtype)]
        raw = np.array([v & ((1 << (8 * np.dtype(bits).itemsize)) - 1) for v in values], dtype=bits)
        return raw.view(dtypes.to_numpy(t.dtype)).reshape(t.shape)

    def release(self, name: str) -> None:
        t = self._tensors.get(name)
        if t is not None and t.kind == "raw":
            self._file.drop(t.offset, t.nbytes)
        elif t is not None and t.kind == "external" and t.location in self._external:
            self._external[t.location].drop(t.offset, t.nbytes)

    def close(self) -> None:
        for f in getattr(self, "_external", {}).values():
            f.close()
        self._file.close()


# -- writing ------------------------------------------------------------------------------

def _tensor_head(info: TensorInfo, external: Optional[tuple]) -> bytes:
    """Every field of the new TensorProto but the inline data's bytes (those follow a raw_data header)."""
    dname = announced_dtype(info)
    out = bytearray()
    for d in info.shape:
        out += tag(T_DIMS, VARINT) + encode_varint(int(d))
    out += tag(T_TYPE, VARINT) + encode_varint(CODES[dname])
    name = info.name.encode("utf-8")
    out += len_field(T_NAME, len(name)) + name
    if external is None:
        out += len_field(T_RAW, info.nbytes)
        return bytes(out)
    location, offset = external
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(info.nbytes))):
        entry = len_field(1, len(key)) + key.encode() + len_field(2, len(value.encode())) + value.encode()
        out += len_field(T_EXTERNAL, len(entry)) + entry
    out += tag(T_LOCATION, VARINT) + encode_varint(1)
    return bytes(out)


class OnnxWriter(Writer):
    """Template-driven ONNX writer: the template's model with its initializers replaced (streaming)."""

    format = NAME
    ALIGN = 64  # external data offsets

    def __init__(self, path: str, infos: Sequence[TensorInfo], template: Optional[str] = None,
                 final_path: Optional[str] = None, external_data: Optional[bool] = None,
                 size_threshold: int = 1024, **options):
        super().__init__(path, infos)
        if template is None:
            raise MapspecError(f"{path}: writing ONNX needs a template model (target: {{template: model.onnx}} "
                               f"or --template): mapspec replaces its initializers")
        if isinstance(size_threshold, bool) or not isinstance(size_threshold, int) or size_threshold < 0:
            raise MapspecError(f"{path}: size_threshold must be a non-negative integer")
        if external_data not in (None, True, False):
            raise MapspecError(f"{path}: external_data must be true, false or left out (automatic)")
        self._tmpl = OnnxReader(template)
        try:
            self._plan(template, final_path or path, external_data, size_threshold)
        except BaseException:
            self._tmpl.close()
            raise

    def _plan(self, template: str, final: str, external: Optional[bool], threshold: int) -> None:
        t = self._tmpl
        names = [n for _, _, n in t.initializer_spans]
        given = {i.name: i for i in self.infos}
        missing = [n for n in names if n not in given]
        extra = [n for n in given if n not in set(names)]
        if missing or extra:
            raise MapspecError(f"{self.path}: the tensors must be exactly the template's initializers "
                               + (f"(missing: {', '.join(missing[:5])}) " if missing else "")
                               + (f"(not in the template: {', '.join(extra[:5])})" if extra else ""))
        for n in names:
            want, got = t.infos()[n], given[n]
            if tuple(want.shape) != tuple(got.shape) or want.dtype != announced_dtype(got):
                raise MapspecError(f"{self.path}: tensor {n!r} is {tuple(got.shape)} {announced_dtype(got)} but the "
                                   f"template {template} has {tuple(want.shape)} {want.dtype}")
        self._order = names  # the template's order
        inline = sum(given[n].nbytes for n in names) + t._file.size
        if external is None:
            external = inline > PROTOBUF_LIMIT - (64 << 20)
        self._data_name = Path(final).name + ".data"
        self._data_tmp = None
        heads, offset = {}, 0
        for n in names:
            info = given[n]
            if external and info.nbytes >= threshold:
                heads[n] = (_tensor_head(info, (self._data_name, offset)), False)
                offset += -(-info.nbytes // self.ALIGN) * self.ALIGN
            else:
                heads[n] = (_tensor_head(info, None), True)
        self._heads = heads
        # new graph length: the template graph with each initializer's body replaced
        _, gstart, gend = t.graph_span
        glen = gend - gstart
        for tag_at, tend, n in t.initializer_spans:
            head, inl = heads[n]
            body = len(head) + (given[n].nbytes if inl else 0)
            glen += len(len_field(GRAPH_INITIALIZER, body)) + body - (tend - tag_at)
        if glen > PROTOBUF_LIMIT and not external:
            raise MapspecError(f"{self.path}: the model would be {glen} bytes, over protobuf's 2 GB limit; "
                               f"set external_data: true (or leave it out)")
        self._glen = glen
        self._final_data = str(Path(final).with_name(self._data_name))
        try:
            self._fh = builtins.open(self.path, "wb")
            if offset:  # put in place with the model, under the output's rules (base.companion)
                self._data_tmp = companion(self._final_data)
                self._dfh = builtins.open(self._data_tmp, "wb")
        except OSError as e:
            raise MapspecError(f"{self.path}: cannot create: {e.strerror}") from None
        # everything of the template before the graph, then the graph header, then graph fields
        # up to the first initializer
        gtag, _, _ = t.graph_span
        self._copy(0, gtag)
        self._fh.write(len_field(MODEL_GRAPH, glen))
        self._pos = gstart  # next template byte to copy inside the graph

    def _copy(self, start: int, end: int) -> None:
        buf = self._tmpl._file.buffer
        for s in range(start, end, 16 << 20):
            self._fh.write(buf[s:min(end, s + (16 << 20))])

    def write(self, name: str, array: np.ndarray) -> None:
        array = np.asarray(array)
        info = self._check(name, array)  # in the template's order
        self._check_dtype(name, info, array, why="the template fixes it (cast it before writing)")
        tag_at, tend, _ = self._tmpl.initializer_spans[self._next - 1]
        self._copy(self._pos, tag_at)
        self._pos = tend
        head, inline = self._heads[name]
        self._fh.write(len_field(GRAPH_INITIALIZER, len(head) + (info.nbytes if inline else 0)) + head)
        out = self._fh if inline else self._dfh
        for piece in c_order_chunks(array, 16 << 20, byteorder="<"):
            out.write(piece)
        if not inline:
            out.write(b"\0" * (-out.tell() % self.ALIGN))

    def close(self) -> None:
        super().close()
        self._copy(self._pos, self._tmpl._file.size)  # the rest of the graph, then the model's later fields
        self._fh.close()
        if self._data_tmp:
            self._dfh.close()
        self._tmpl.close()

    def abort(self) -> None:
        for fh in (getattr(self, "_fh", None), getattr(self, "_dfh", None)):
            if fh is not None:
                fh.close()
        if getattr(self, "_data_tmp", None):
            with contextlib.suppress(OSError):
                os.unlink(self._data_tmp)
        self._tmpl.close()


READ_OPTIONS = ()
WRITE_OPTIONS = ("external_data", "size_threshold")


def open(path: str, **options) -> OnnxReader:  # noqa: A001 - the format API's name
    return OnnxReader(path)


def create(path: str, infos: Sequence[TensorInfo], **options) -> OnnxWriter:
    return OnnxWriter(path, infos, **options)


def save(path: str, tensors, **options) -> None:
    save_with(create, path, tensors, **options)
