"""Caffe ``.caffemodel`` files (a binary ``NetParameter``), read and written without Caffe.

Reading walks the protobuf wire format directly over a memory map
(:class:`~mapspec.files.MappedFile`): each layer's blobs are *skipped* (their
offsets recorded), so opening a several-hundred-MB model costs milliseconds and no
copy, and there is no 64 MB protobuf limit.  Blob values are numpy views over the map:
``float32`` from the packed ``data`` field, ``float64`` from ``double_data``; unpacked
repeated values (legal protobuf, rare) are gathered on read.  Each layer's name and
type are read off the wire during the walk; the rest of its small non-blob part
(bottoms, tops, parameters) is decoded with the schema subset of
:mod:`mapspec.frameworks.caffe.schema` when ``attrs``/``layers``/``net`` first need it.
:data:`MAX_LAYERS` and :data:`MAX_TENSORS` bound the bookkeeping a crafted file can
cause.  Both the current ``layer`` list (NetParameter field
100) and the legacy V1 ``layers`` (field 2, enum types) are read; V1 layers are
presented in the new form.

Tensors are named ``layer[k]`` (blob k of the layer named ``layer``) in file order, with
meta ``{"layer": name, "type": type, "blob": k}``.  What the fields, blob shapes and names
mean (caffe.proto's field numbers, ``Blob::FromProto``'s shape rule, ``round_mode`` at
field 13) is :mod:`mapspec.frameworks.caffe.blobs`.  ``attrs(layer)`` gives the layer's type,
bottoms, tops and parameters with Caffe's defaults; fields the schema does not know (a
fork's additions) are kept by protobuf and listed by number under ``unknown_fields``.

Writing (``create(path, infos, template=None)``) streams a ``NetParameter``: every
layer's length is computed from the announced shapes, so the length prefix, each blob's
shape and its packed data header are written first and the raw values as they arrive;
nothing larger than one tensor is ever held.  ``float32`` goes to ``data``, ``float64``
to ``double_data`` (:data:`WRITE_DTYPES`); anything else is refused with a hint to cast,
and an array must arrive in the dtype announced for it (its header is already planned).

* With ``template`` (a ``.prototxt`` path, a prototxt/caffemodel reader, or a
  ``NetParameter``), every layer of the template is written in the template's order,
  with its type, bottoms, tops and parameters, including layers without blobs; the
  blobs are filled from the stream.  The tensors must arrive in template order (layers
  in the order of the template, blobs ``[0]``, ``[1]``, ... within a layer): the engine
  sorts its output by the template, so this holds for ``mapspec convert``.  A name shared
  by layers of different phases gets the blobs in its TEST-phase layer (the one the
  prototxt template lists).
* Without a template, one layer per tensor-name prefix is written, with its name and
  blobs only: its ``type`` is left empty (Caffe matches weights to a net definition by
  layer name, so such a file loads into a net with ``CopyTrainedLayersFrom``).
"""

from __future__ import annotations

import builtins
import os
from typing import NamedTuple, Optional, Sequence

import numpy as np

from ..errors import FormatError, MapspecError
from ..frameworks.caffe import layers as cl
from ..frameworks.caffe import net as caffe_net
from ..frameworks.caffe import schema
from ..frameworks.caffe.blobs import (BLOB_CHANNELS, BLOB_DATA, BLOB_DOUBLE_DATA, BLOB_HEIGHT, BLOB_NAME, BLOB_NUM,
                                      BLOB_SHAPE, BLOB_WIDTH, LAYER_BLOBS, LAYER_NAME, LAYER_TYPE, NET_LAYER,
                                      NET_LAYERS_V1, SHAPE_DIM, V1_BLOBS, V1_NAME, V1_TYPE, V1_TYPE_NAMES,
                                      V1_V0_LAYER, VALUE_DTYPES, blob_free, blob_shape)
from ..files import MappedFile
from .base import Reader, TensorInfo, Writer, save_with
from .chunks import c_order_chunks
from .protowire import I32, I64, LEN, VARINT
from .protowire import Wire as _Wire
from .protowire import encode_varint as _varint
from .protowire import len_field as _len_field
from .protowire import signed64 as _signed64

NAME = "caffe"
WRITE_DTYPES = ("float32", "float64")
MAX_LAYER_HEADER = 64 << 20  # the non-blob part of one layer (names, parameters): kilobytes in practice
MAX_BLOB_DIMS = 32
_CHUNK = 16 << 20  # bytes per piece when a blob arrives as a view that needs copying
# Bounds on what a file may ask the reader to keep (a few hundred bytes each): real nets have
# thousands of layers and blobs; a crafted file could list millions of tiny ones.
MAX_LAYERS = 100_000
MAX_TENSORS = 100_000

# value fields of a blob: field -> (numpy dtype, canonical name, wire type of one unpacked element)
_VALUE_FIELDS = {f: (np.dtype(VALUE_DTYPES[f]).newbyteorder("<"), VALUE_DTYPES[f], w)
                 for f, w in ((BLOB_DATA, I32), (BLOB_DOUBLE_DATA, I64))}


# -- wire format ---------------------------------------------------------------------------------

# -- reading --------------------------------------------------------------------------------------

class _Blob:
    """Where one blob's values live: a list of segments and the resulting shape and dtype."""

    __slots__ = ("shape", "dtype", "segments", "offset")

    def __init__(self, shape, dtype, segments, offset):
        self.shape = shape
        self.dtype = dtype  # numpy dtype
        self.segments = segments  # [(offset, count, stride)] stride 0: packed; else one tag byte per value
        self.offset = offset


class _Layer(NamedTuple):
    """Where one layer lives in the file, and the two fields every tensor needs (name, type)."""

    start: int  # payload span of the layer message
    end: int
    v1: bool  # a legacy V1LayerParameter (NetParameter field 2)
    name: str
    type: str


class CaffeReader(Reader):
    """A ``.caffemodel`` opened lazily: structure from the wire walk, values as mmap views.

    Opening walks the file once, reading each layer's name and type straight off the wire
    and each blob's shape, dtype and value offsets; the rest of a layer (bottoms, tops,
    parameters) is decoded with protobuf only when :meth:`attrs`, :meth:`layers` or
    :meth:`net` ask for it.  Memory therefore stays a few hundred bytes per layer and
    blob, and :data:`MAX_LAYERS`/:data:`MAX_TENSORS` bound it for hostile files.
    """

    format = NAME

    def __init__(self, path: str):
        super().__init__(path)
        self._file = MappedFile(path)
        try:
            self._wire = _Wire(self._file)
            self._blobs: dict[str, _Blob] = {}
            self._spans: list[_Layer] = []
            self._decoded: dict[int, tuple] = {}  # layer index -> (LayerParameter, [UnknownField])
            self._header = bytearray()
            self._index: Optional[dict] = None
            self._parse()
        except BaseException:
            self._file.close()
            raise

    # -- the walk ---------------------------------------------------------------------------
    def _parse(self) -> None:
        w = self._wire
        if self._file.size == 0:
            raise FormatError(self.path, "is empty: not a caffemodel")
        kinds = set()
        seen: dict[str, int] = {}
        types: dict[str, str] = {}  # one string object per distinct layer type
        for field, wire, value, tag_at, end in w.fields(0, self._file.size, "the NetParameter"):
            if field in (NET_LAYER, NET_LAYERS_V1):
                w.expect(field, wire, LEN, tag_at, "the NetParameter")
                kinds.add(field)
                if len(kinds) > 1:
                    raise FormatError(self.path, "the file has both 'layer' (new) and 'layers' (legacy V1) lists; "
                                      "Caffe refuses such files", offset=tag_at)
                if len(self._spans) >= MAX_LAYERS:
                    raise FormatError(self.path, f"more than {MAX_LAYERS} layers, far more than any real net "
                                      f"(corrupt or hostile file?)", offset=tag_at)
                self._layer(value, end, field == NET_LAYERS_V1, len(self._spans), seen, types)
            else:
                self._header += self._file.bytes(tag_at, end - tag_at, "NetParameter field")
                if len(self._header) > MAX_LAYER_HEADER:
                    raise FormatError(self.path, "the net's non-layer fields exceed 64 MB: not a caffemodel",
                                      offset=tag_at)
        try:
            self._net_header = schema.NetParameter.FromString(bytes(self._header))
        except Exception as e:  # protobuf's DecodeError (and friends) on hostile bytes
            raise FormatError(self.path, f"the net's name/input fields do not decode: {e}") from None

    def _text(self, start: int, end: int, what: str) -> str:
        try:
            return str(self._file.buffer[start:end], "utf-8")
        except UnicodeDecodeError:
            raise FormatError(self.path, f"{what} is not UTF-8 text", offset=start) from None

    def _layer(self, start: int, end: int, v1: bool, index: int, seen: dict, types: dict) -> None:
        """Walk one layer: its name and type, and its blobs (skipped over, offsets recorded)."""
        w = self._wire
        what = f"layer {index} (at byte {start})"
        blob_field, name_field = (V1_BLOBS, V1_NAME) if v1 else (LAYER_BLOBS, LAYER_NAME)
        blobs: list[_Blob] = []
        name, type_ = "", ""
        for field, wire, value, tag_at, fend in w.fields(start, end, what):
            if field == blob_field:
                w.expect(field, wire, LEN, tag_at, what)
                if len(self._blobs) + len(blobs) >= MAX_TENSORS:
                    raise FormatError(self.path, f"more than {MAX_TENSORS} blobs, far more than any real net "
                                      f"(corrupt or hostile file?)", offset=tag_at)
                blobs.append(self._blob(value, fend, f"blob {len(blobs)} of {what}"))
            elif field == name_field:
                w.expect(field, wire, LEN, tag_at, what)
                name = self._text(value, fend, f"the name of {what}")
            elif v1 and field == V1_TYPE:
                w.expect(field, wire, VARINT, tag_at, what)
                if value not in V1_TYPE_NAMES:
                    raise FormatError(self.path, f"{what}: unknown V1 layer type code {value}", offset=tag_at)
                type_ = V1_TYPE_NAMES[value]
            elif not v1 and field == LAYER_TYPE:
                w.expect(field, wire, LEN, tag_at, what)
                type_ = self._text(value, fend, f"the type of {what}")
            elif v1 and field == V1_V0_LAYER:
                raise FormatError(self.path, f"{what} is in Caffe's V0 format (before 2014); upgrade it with "
                                  f"Caffe's upgrade_net_proto_binary first", offset=tag_at)
        type_ = types.setdefault(type_, type_)
        self._spans.append(_Layer(start, end, v1, name, type_))
        if not blobs:
            return
        if name in seen:
            raise FormatError(self.path, f"{what}: a second layer named {name!r} with blobs (the first is layer "
                              f"{seen[name]}); tensor names layer[k] would be ambiguous", offset=start)
        seen[name] = index
        for k, b in enumerate(blobs):
            tname = f"{name}[{k}]"
            self._blobs[tname] = b
            self._infos[tname] = TensorInfo(tname, b.shape, "float64" if b.dtype.itemsize == 8 else "float32",
                                            {"layer": name, "type": type_, "blob": k})

    def _decode(self, index: int) -> tuple:
        """(blob-free ``LayerParameter`` in the new form, its unknown fields) of layer ``index``, cached."""
        got = self._decoded.get(index)
        if got is not None:
            return got
        span = self._spans[index]
        what = f"layer {index} (at byte {span.start})"
        blob_field = V1_BLOBS if span.v1 else LAYER_BLOBS
        rest = bytearray()
        for field, wire, value, tag_at, fend in self._wire.fields(span.start, span.end, what):
            if field == blob_field:
                continue
            if len(rest) + (fend - tag_at) > MAX_LAYER_HEADER:
                raise FormatError(self.path, f"{what}: its non-blob fields exceed 64 MB (corrupt file?)",
                                  offset=tag_at)
            rest += self._file.bytes(tag_at, fend - tag_at, what)
        cls = schema.V1LayerParameter if span.v1 else schema.LayerParameter
        try:
            msg = cls.FromString(bytes(rest))
        except Exception as e:  # protobuf's DecodeError on hostile bytes
            raise FormatError(self.path, f"{what}: its name/type/parameters do not decode ({e})",
                              offset=span.start) from None
        unknown = schema.unknown_field_paths(msg)  # before the V1 upgrade, which keeps known fields only
        try:
            layer = schema.upgrade_v1_layer(msg, self.path, index) if span.v1 else msg
        except FormatError as e:
            raise FormatError(self.path, e.bare, offset=span.start) from None
        texts = [layer.name, layer.type, *layer.bottom, *layer.top]
        if not all(isinstance(t, str) for t in texts):
            raise FormatError(self.path, f"{what}: its name, type or blob names are not UTF-8 text",
                              offset=span.start)
        got = (layer, [schema.UnknownField(f"layer[{index}].{u}", 0, index, u.rsplit(".", 1)[-1])
                       for u in unknown])
        self._decoded[index] = got
        return got

    def _blob(self, start: int, end: int, what: str) -> _Blob:
        w = self._wire
        dims: Optional[list] = None
        legacy: dict[int, int] = {}
        values: dict[int, list] = {BLOB_DATA: [], BLOB_DOUBLE_DATA: []}
        for field, wire, value, tag_at, fend in w.fields(start, end, what):
            if field == BLOB_SHAPE:
                w.expect(field, wire, LEN, tag_at, what)
                dims = self._dims(value, fend, what) if dims is None else dims + self._dims(value, fend, what)
            elif field in (BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH):
                w.expect(field, wire, VARINT, tag_at, what)
                v = _signed64(value)
                if not -(1 << 31) <= v < 1 << 31:
                    raise FormatError(self.path, f"{what}: legacy dim {v} does not fit int32", offset=tag_at)
                legacy[field] = v
            elif field in _VALUE_FIELDS:
                dt, _, elem_wire = _VALUE_FIELDS[field]
                segs = values[field]
                if wire == LEN:
                    nbytes = fend - value
                    if nbytes % dt.itemsize:
                        raise FormatError(self.path, f"{what}: packed {'double_data' if dt.itemsize == 8 else 'data'}"
                                          f" has {nbytes} bytes, not a multiple of {dt.itemsize}", offset=tag_at)
                    segs.append((value, nbytes // dt.itemsize, 0))
                elif wire == elem_wire:
                    step = 1 + dt.itemsize  # one-byte tag + value
                    if segs and segs[-1][2] == step and segs[-1][0] + segs[-1][1] * step == value:
                        s0, n, _ = segs[-1]
                        segs[-1] = (s0, n + 1, step)
                    else:
                        segs.append((value, 1, step))
                else:
                    w.expect(field, wire, LEN, tag_at, what)
            # diff, double_diff and unknown fields are skipped (their lengths were checked by the walk)
        shape = blob_shape(dims, legacy)
        if any(d < 0 for d in shape):
            raise FormatError(self.path, f"{what}: negative dimension in shape {shape}", offset=start)
        if len(shape) > MAX_BLOB_DIMS:
            raise FormatError(self.path, f"{what}: {len(shape)} dimensions (at most {MAX_BLOB_DIMS})", offset=start)
        count = 1
        for d in shape:
            count *= d
        field = BLOB_DOUBLE_DATA if values[BLOB_DOUBLE_DATA] else BLOB_DATA  # Caffe prefers double_data
        segs = values[field]
        have = sum(n for _, n, _ in segs)
        if have != count:
            kind = "double_data" if field == BLOB_DOUBLE_DATA else "data"
            raise FormatError(self.path, f"{what}: shape {shape} needs {count} values but its {kind} holds {have}",
                              offset=start)
        return _Blob(shape, _VALUE_FIELDS[field][0], segs, start)

    def _dims(self, start: int, end: int, what: str) -> list:
        w = self._wire
        dims: list = []
        for field, wire, value, tag_at, fend in w.fields(start, end, f"the shape of {what}"):
            if field != SHAPE_DIM:
                continue
            if wire == VARINT:
                dims.append(_signed64(value))
            elif wire == LEN:
                pos = value
                while pos < fend:
                    v, pos = w.varint(pos, fend, f"the shape of {what}")
                    dims.append(_signed64(v))
                    if len(dims) > MAX_BLOB_DIMS:
                        break
            else:
                w.expect(field, wire, VARINT, tag_at, f"the shape of {what}")
            if len(dims) > MAX_BLOB_DIMS:
                raise FormatError(self.path, f"{what}: shape has more than {MAX_BLOB_DIMS} dims (corrupt file?)",
                                  offset=start)
        return dims

    # -- public -------------------------------------------------------------------------------
    def _read(self, info: TensorInfo) -> np.ndarray:
        if self._file.buffer.nbytes != self._file.size:
            raise MapspecError(f"{self.path}: the reader is closed; open the file again to read {info.name!r}")
        b = self._blobs[info.name]
        what = f"blob {info.name!r}"
        if len(b.segments) == 1 and b.segments[0][2] == 0:
            off, n, _ = b.segments[0]
            return self._file.array(off, b.dtype, b.shape, what)
        parts = []
        for off, n, step in b.segments:
            if step == 0:
                parts.append(self._file.array(off, b.dtype, (n,), what))
            else:  # unpacked: a run of (value, next one-byte tag) records
                raw = self._file.array(off, np.uint8, (n * step - 1,), what)
                rows = np.empty((n, step), np.uint8)
                rows.reshape(-1)[:n * step - 1] = raw
                parts.append(np.ascontiguousarray(rows[:, :b.dtype.itemsize]).view(b.dtype).reshape(n))
        flat = np.concatenate(parts) if parts else np.empty((0,), b.dtype)
        return flat.reshape(b.shape)

    def release(self, name: str) -> None:
        """Drop the blob's mapped pages from this process's memory (see :meth:`Reader.release`)."""
        b = self._blobs.get(name)
        if b is not None and b.segments:
            start = b.segments[0][0]
            end = max(off + n * (step or b.dtype.itemsize) for off, n, step in b.segments)
            self._file.drop(start, end - start)

    def layers(self) -> list:
        """The layers (blob-free ``LayerParameter`` messages, V1 upgraded) in file order."""
        return [self._decode(i)[0] for i in range(len(self._spans))]

    def net(self):
        """The file's ``NetParameter`` without blob data: net name/inputs and every layer's structure."""
        net = schema.NetParameter()
        net.CopyFrom(self._net_header)
        for layer in self.layers():
            net.layer.add().CopyFrom(layer)
        return net

    def nodes(self) -> list[str]:
        return [span.name for span in self._spans]

    def attrs(self, node: str) -> dict:
        """The layer's ``type``, ``bottom``, ``top`` and parameters with Caffe's defaults
        (:func:`~mapspec.frameworks.caffe.layers.layer_attrs`); fields unknown to mapspec's schema
        are listed by number under ``unknown_fields`` (e.g. ``["pooling_param.#20"]``)."""
        if self._index is None:
            self._index = {}
            for i, span in enumerate(self._spans):
                self._index.setdefault(span.name, i)
        i = self._index.get(node)
        if i is None:
            return {}
        layer, unknown = self._decode(i)
        return cl.layer_attrs(layer, [u.path.split(".", 1)[1] for u in unknown])

    def unknown_fields(self) -> list:
        """Fields of the layers that mapspec's schema does not know (``UnknownField``, line 0: a binary
        file has no lines; names are field numbers such as ``#198``)."""
        return [u for i in range(len(self._spans)) for u in self._decode(i)[1]]

    def close(self) -> None:
        self._file.close()


# -- writing -----------------------------------------------------------------------------------

# dtype name -> (value field, little-endian numpy dtype)
_WRITE_FIELDS = {name: (f, np.dtype(name).newbyteorder("<")) for f, name in VALUE_DTYPES.items()}


class _BlobPlan:
    """The bytes before a blob's raw values, and its total message length."""

    def __init__(self, info: TensorInfo):
        field, dt = _WRITE_FIELDS[info.dtype]
        dims = b"".join(_varint(int(d)) for d in info.shape)
        shape_msg = (_len_field(SHAPE_DIM, len(dims)) + dims) if dims else b""
        self.nbytes = info.numel * dt.itemsize
        self.dtype = dt
        self.prefix = _len_field(BLOB_SHAPE, len(shape_msg)) + shape_msg + _len_field(field, self.nbytes)
        self.body_len = len(self.prefix) + self.nbytes
        self.framed_len = len(_len_field(LAYER_BLOBS, self.body_len)) + self.body_len


class CaffeWriter(Writer):
    format = NAME

    def __init__(self, path: str, infos: Sequence[TensorInfo], template=None, **options):
        super().__init__(path, infos)
        groups = self._group(self.infos)
        if template is not None:
            net = load_template(template)[0]
            plan = self._against_template(net, groups)
        else:
            net = schema.NetParameter()
            plan = []
            for name, members in groups:
                layer = schema.LayerParameter()
                layer.name = name
                plan.append((layer, members))
        header = schema.NetParameter()
        header.CopyFrom(net)
        header.ClearField("layer")
        header.ClearField("layers")
        self._plan = []  # [(layer bytes without blobs, [_BlobPlan], [TensorInfo])]
        for layer, members in plan:
            layer = blob_free(layer)
            blobs = [_BlobPlan(i) for i in members]
            self._plan.append((layer.SerializeToString(), blobs, members))
        self._step = 0  # next plan entry to emit
        self._blob = 0  # next blob within the current layer
        try:
            self._fh = builtins.open(path, "wb")
        except OSError as e:
            raise FormatError(path, f"cannot write: {e.strerror}") from None
        self._fh.write(header.SerializeToString())

    # -- planning ------------------------------------------------------------------------------
    def _group(self, infos: Sequence[TensorInfo]) -> list:
        """[(layer name, [infos of blobs 0..n-1])] in stream order, checked."""
        groups: list = []
        done: set = set()
        for info in infos:
            m = BLOB_NAME.match(info.name)
            if not m:
                raise FormatError(self.path, "Caffe blobs are named layer[k] (e.g. 'conv1[0]' for the weight of "
                                  "layer conv1); rename this target", tensor=info.name)
            layer, k = m.group("layer"), int(m.group("k"))
            if info.dtype not in _WRITE_FIELDS:
                raise FormatError(self.path, f"a caffemodel holds {' or '.join(WRITE_DTYPES)}, not {info.dtype}; "
                                  f"add {{cast: float32}} to this tensor's rule", tensor=info.name)
            if groups and groups[-1][0] == layer:
                expected = len(groups[-1][1])
                if k != expected:
                    raise FormatError(self.path, f"blobs of layer {layer!r} must come in order [0], [1], ...: "
                                      f"got [{k}] where [{expected}] belongs", tensor=info.name)
                groups[-1][1].append(info)
                continue
            if layer in done:
                raise FormatError(self.path, f"the blobs of layer {layer!r} are not together in the output order "
                                  f"(another layer's blobs come between them)", tensor=info.name)
            if k != 0:
                raise FormatError(self.path, f"layer {layer!r} starts with blob [{k}]; Caffe blobs are numbered "
                                  f"from [0] without gaps", tensor=info.name)
            done.add(layer)
            groups.append((layer, [info]))
        return groups

    def _against_template(self, net, groups: list) -> list:
        """Every template layer in template order, with the stream's blobs for it (or none)."""
        index: dict[str, int] = {}
        for i, layer in enumerate(net.layer):  # a name shared by phases: the TEST layer takes the blobs,
            if cl.in_phase(layer):  # as in the prototxt template (its tensors come from the TEST net)
                index.setdefault(layer.name, i)
        for i, layer in enumerate(net.layer):
            index.setdefault(layer.name, i)
        members_of = {}
        last = -1
        for name, members in groups:
            i = index.get(name)
            if i is None:
                raise FormatError(self.path, f"layer {name!r} is not in the template (its layers: "
                                  f"{', '.join(l.name for l in net.layer[:8])}{', ...' if len(net.layer) > 8 else ''})",
                                  tensor=members[0].name)
            if i < last:
                raise FormatError(self.path, f"tensors must arrive in the template's layer order: layer {name!r} "
                                  f"comes after {net.layer[last].name!r} in the stream but before it in the template",
                                  tensor=members[0].name)
            last = i
            members_of[i] = members
        return [(layer, members_of.get(i, [])) for i, layer in enumerate(net.layer)]

    # -- streaming -------------------------------------------------------------------------------
    def _emit_layer_head(self, entry) -> None:
        layer_bytes, blobs, _ = entry
        length = len(layer_bytes) + sum(b.framed_len for b in blobs)
        self._fh.write(_len_field(NET_LAYER, length))
        self._fh.write(layer_bytes)

    def _advance_to(self, name: str) -> None:
        """Write blob-less layers until the entry whose first blob is ``name``, then its head."""
        while self._step < len(self._plan):
            entry = self._plan[self._step]
            if entry[2] and entry[2][0].name == name:
                self._emit_layer_head(entry)
                return
            if entry[2]:  # pragma: no cover - _check guarantees the stream order
                raise MapspecError(f"{self.path}: internal error: blob {name!r} out of plan order")
            self._emit_layer_head(entry)
            self._step += 1

    def write(self, name: str, array: np.ndarray) -> None:
        array = np.asarray(array)
        info = self._check(name, array)
        if array.dtype.kind != "f" or array.dtype.itemsize != np.dtype(info.dtype).itemsize:
            raise MapspecError(f"{self.path}: tensor {name!r} arrived as {array.dtype} but was announced as "
                               f"{info.dtype}; "
                               f"the blob's header is planned for {info.dtype} (cast it before writing)")
        if self._blob == 0:
            self._advance_to(name)
        layer_bytes, blobs, members = self._plan[self._step]
        plan = blobs[self._blob]
        self._fh.write(_len_field(LAYER_BLOBS, plan.body_len))
        self._fh.write(plan.prefix)
        # C order, little-endian: zero-copy pieces of a contiguous array, bounded copies of a view
        for piece in c_order_chunks(array, _CHUNK, byteorder="<"):
            self._fh.write(piece)
        self._blob += 1
        if self._blob == len(blobs):
            self._blob = 0
            self._step += 1

    def close(self) -> None:
        super().close()
        while self._step < len(self._plan):
            self._emit_layer_head(self._plan[self._step])
            self._step += 1
        self._fh.close()

    def abort(self) -> None:
        try:
            self._fh.close()
        except Exception:  # the file is being discarded anyway
            pass


# -- the format API -----------------------------------------------------------------------------

READ_OPTIONS = ()
WRITE_OPTIONS = ()

# First bytes of a NetParameter as Caffe writes it: field 1 (name) or field 100 (layer).
_STRONG_HEADS = (b"\x0a", b"\xa2\x06")
# Any first tag protobuf may write for a NetParameter (fields in number order: name 1, layers 2,
# input 3, input_dim 4 (varint, or packed), force_backward 5, state 6, debug_info 7,
# input_shape 8, layer 100): enough for a file named .caffemodel.
_FIRST_TAGS = frozenset(bytes([t]) for t in (0x0A, 0x12, 0x1A, 0x20, 0x22, 0x28, 0x32, 0x38, 0x42, 0xA2))


_TEXT_BYTES = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}


def load_template(source) -> tuple:
    """(blob-free ``NetParameter``, unknown fields, path) of a net given as a ``.caffemodel`` path (its
    structure) or anything :func:`mapspec.frameworks.caffe.net.load` takes (a prototxt path or text, a reader
    with ``net()``, a ``NetParameter``)."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if path.lower().endswith(".caffemodel") and os.path.isfile(path):
            with open(path) as r:
                return r.net(), [], path
    return caffe_net.load(source)


def sniff(path: str, head: bytes) -> bool:
    if not head or all(b in _TEXT_BYTES for b in head):  # text (a prototxt) is never a caffemodel
        return False
    if str(path).lower().endswith(".caffemodel"):
        return head[:1] in _FIRST_TAGS
    return head.startswith(_STRONG_HEADS) and b"\x00" not in head[:2]


def open(path: str, **options) -> CaffeReader:  # noqa: A001 - the format API's name
    return CaffeReader(path)


def create(path: str, infos: Sequence[TensorInfo], template=None, **options) -> CaffeWriter:
    return CaffeWriter(path, infos, template=template, **options)


def save(path: str, tensors, **options) -> None:
    save_with(create, path, tensors, **options)
