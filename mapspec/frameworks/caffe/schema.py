"""Caffe's schema: ``caffe.proto`` (package data beside this module) built into message classes at run time.

No protoc and no generated ``_pb2``: the small reader below turns the ``.proto`` text
(proto2 messages, scalar/enum/message fields, ``default``/``packed`` options, enums) into
a ``FileDescriptorProto``; what the subset holds and why (the DenseBlock and ``ceil_mode``
fork fields) is written at the top of ``caffe.proto``.

Messages are built into a private descriptor pool, so a user's own ``caffe_pb2`` (in the
default pool) never clashes with these classes.  Text prototxts are parsed with
protobuf's ``text_format`` allowing unknown fields; :func:`parse_text` also returns
the names of the fields it skipped, per layer, so that a layer whose parameters were
not understood can be reported instead of silently misread.  Legacy V1 layers are
upgraded here (:func:`upgrade_net`), and :func:`unknown_field_paths` lists what a binary
message carried that the schema does not know.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import NamedTuple, Optional

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

from ...errors import FormatError

PROTO_FILE = "caffe.proto"


def schema_text() -> str:
    """The text of the shipped ``caffe.proto``."""
    return resources.files(__package__).joinpath(PROTO_FILE).read_text(encoding="utf-8")


# V1 LayerType enum name -> the type string of the new format (Caffe's upgrade_proto.cpp).
V1_TYPE_NAMES = {
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution", "DATA": "Data", "DROPOUT": "Dropout", "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise", "EXP": "Exp", "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output", "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData", "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss", "MVN": "MVN",
    "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence", "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice", "TANH": "TanH",
    "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}

# V1 parameter messages that carry over to the new LayerParameter under the same field name.
V1_COPIED_PARAMS = ("accuracy_param", "argmax_param", "concat_param", "convolution_param", "dropout_param",
                    "eltwise_param", "exp_param", "inner_product_param", "lrn_param", "pooling_param",
                    "power_param", "relu_param", "sigmoid_param", "softmax_param", "slice_param", "tanh_param",
                    "threshold_param", "transform_param", "loss_param", "contrastive_loss_param", "data_param",
                    "dummy_data_param", "hdf5_data_param", "hdf5_output_param", "hinge_loss_param",
                    "image_data_param", "infogain_loss_param", "memory_data_param", "mvn_param",
                    "window_data_param")


# -- a tiny reader of caffe.proto -----------------------------------------------------------

_SCALARS = {
    "double": descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE,
    "float": descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT,
    "int64": descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
    "uint64": descriptor_pb2.FieldDescriptorProto.TYPE_UINT64,
    "int32": descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
    "uint32": descriptor_pb2.FieldDescriptorProto.TYPE_UINT32,
    "bool": descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
    "string": descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
    "bytes": descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
}
_LABELS = {
    "optional": descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    "repeated": descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
    "required": descriptor_pb2.FieldDescriptorProto.LABEL_REQUIRED,
}
_TOKEN = re.compile(r"//[^\n]*|\"[^\"\n]*\"|-?\d[\d.]*(?:[eE][+-]?\d+)?|[A-Za-z_]\w*|[{}\[\];=,]")


def _build_file(text: str) -> descriptor_pb2.FileDescriptorProto:
    """Translate the ``.proto`` text into a FileDescriptorProto (package, messages, enums, fields)."""
    toks = [t for t in _TOKEN.findall(text) if not t.startswith("//")]
    pos = 0

    def take(expected=None):
        nonlocal pos
        if pos >= len(toks):
            raise RuntimeError(f"{PROTO_FILE}: unexpected end of file")
        t = toks[pos]
        pos += 1
        if expected is not None and t != expected:
            raise RuntimeError(f"{PROTO_FILE}: expected {expected!r}, got {t!r} at token {pos}")
        return t

    take("syntax")
    take("=")
    if take() != '"proto2"':
        raise RuntimeError(f"{PROTO_FILE}: only proto2 is understood")
    take(";")
    take("package")
    package = take()
    take(";")
    fdp = descriptor_pb2.FileDescriptorProto(name=f"mapspec/{PROTO_FILE}", package=package, syntax="proto2")
    enums_of: dict[str, set] = {"": set()}  # message name -> names of its nested enums

    def parse_enum(target):
        e = target.add(name=take())
        take("{")
        while toks[pos] != "}":
            name = take()
            take("=")
            e.value.add(name=name, number=int(take()))
            take(";")
        take("}")
        return e.name

    fields = []  # (message proto, field proto, type name) resolved after all names are known
    while pos < len(toks):
        kind = take()
        if kind == "enum":
            enums_of[""].add(parse_enum(fdp.enum_type))
            continue
        if kind != "message":
            raise RuntimeError(f"{PROTO_FILE}: unexpected {kind!r}")
        m = fdp.message_type.add(name=take())
        enums_of[m.name] = set()
        take("{")
        while toks[pos] != "}":
            if toks[pos] == "enum":
                take()
                enums_of[m.name].add(parse_enum(m.enum_type))
                continue
            label, type_name, name = take(), take(), take()
            take("=")
            f = m.field.add(name=name, number=int(take()), label=_LABELS[label])
            if toks[pos] == "[":
                take()
                while True:
                    opt = take()
                    take("=")
                    val = take()
                    if opt == "default":
                        f.default_value = val.strip('"')
                    elif opt == "packed":
                        f.options.packed = val == "true"
                    if take() == "]":
                        break
            take(";")
            fields.append((m, f, type_name))
        take("}")
    messages = {m.name for m in fdp.message_type}
    for m, f, type_name in fields:
        if type_name in _SCALARS:
            f.type = _SCALARS[type_name]
        elif type_name in enums_of[m.name]:
            f.type = descriptor_pb2.FieldDescriptorProto.TYPE_ENUM
            f.type_name = f".{package}.{m.name}.{type_name}"
        elif type_name in enums_of[""]:
            f.type = descriptor_pb2.FieldDescriptorProto.TYPE_ENUM
            f.type_name = f".{package}.{type_name}"
        elif type_name in messages:
            f.type = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
            f.type_name = f".{package}.{type_name}"
        else:
            raise RuntimeError(f"{PROTO_FILE}: unknown type {type_name!r} of {m.name}.{f.name}")
    return fdp


_POOL = descriptor_pool.DescriptorPool()
_FILE = _build_file(schema_text())
PACKAGE = _FILE.package
_POOL.Add(_FILE)


def message_class(name: str):
    """The generated message class ``caffe.<name>`` of this subset (e.g. ``"PoolingParameter"``)."""
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{PACKAGE}.{name}"))


NetParameter = message_class("NetParameter")
LayerParameter = message_class("LayerParameter")
V1LayerParameter = message_class("V1LayerParameter")
BlobProto = message_class("BlobProto")
BlobShape = message_class("BlobShape")
NetStateRule = message_class("NetStateRule")
PHASE_TEST = 1
PHASE_TRAIN = 0


# -- text prototxts -------------------------------------------------------------------------

class UnknownField(NamedTuple):
    """A field of a prototxt that this subset does not know, skipped while parsing."""

    path: str  # e.g. "layer[3].bn_param" or "layer[3].pooling_param.pad_type"
    line: int  # 1-based
    layer: Optional[int]  # index into net.layer (or net.layers for V1), None at net level
    name: str


def _scan_unknown(text: str, root_desc) -> list[UnknownField]:
    """Walk the token stream of a text-format message and list the fields unknown to the schema.

    Uses protobuf's own text tokenizer, so strings, comments and numbers are read exactly
    as ``text_format`` reads them; syntax errors are left to ``text_format`` to report.
    """
    tok = text_format.Tokenizer(text.splitlines(keepends=True))
    found: list[UnknownField] = []
    # stack of (descriptor or None if unknown, path, layer index, closing token)
    stack = [(root_desc, "", None, None)]
    counts: list[dict] = [{}]
    try:
        while not tok.AtEnd():
            desc, path, layer, closing = stack[-1]
            if closing is not None and tok.token == closing:
                tok.NextToken()
                stack.pop()
                counts.pop()
                tok.TryConsume(",") or tok.TryConsume(";")
                continue
            line = getattr(tok, "_line", -1) + 1  # the tokenizer's 0-based line of the current token
            name = tok.ConsumeIdentifierOrNumber()
            field = desc.fields_by_name.get(name) if desc is not None else None
            if desc is not None and field is None:
                found.append(UnknownField(f"{path}.{name}" if path else name, line, layer, name))
            if tok.TryConsume(":") and not (tok.LookingAt("{") or tok.LookingAt("<")):
                if tok.TryConsume("["):  # short repeated form [a, b]
                    while not tok.TryConsume("]"):
                        _skip_value(tok)
                        tok.TryConsume(",")
                else:
                    _skip_value(tok)
            else:
                opening = tok.token
                tok.NextToken()
                closing = "}" if opening == "{" else ">"
                sub = field.message_type if field is not None and field.message_type is not None else None
                index = counts[-1].get(name, 0)
                counts[-1][name] = index + 1
                sub_path = f"{path}.{name}" if path else name
                if field is not None and _repeated(field):
                    sub_path += f"[{index}]"
                sub_layer = layer
                if not path and name in ("layer", "layers"):
                    sub_layer = index
                stack.append((sub, sub_path, sub_layer, closing))
                counts.append({})
            tok.TryConsume(",") or tok.TryConsume(";")
    except text_format.ParseError:
        pass  # text_format reports the syntax error with its own message
    return found


def _repeated(field) -> bool:
    flag = getattr(field, "is_repeated", None)
    return bool(flag) if flag is not None else field.label == field.LABEL_REPEATED


def _skip_value(tok) -> None:
    """Consume one scalar value (adjacent string literals concatenate, as in text_format)."""
    if tok.token[:1] in ("'", '"'):
        while tok.token[:1] in ("'", '"'):
            tok.NextToken()
        return
    tok.NextToken()


def parse_text(text: str, path: str = "<text>") -> tuple:
    """Parse prototxt text into a ``NetParameter``; returns ``(net, unknown_fields)``.

    Unknown fields are skipped (and listed); syntax errors, wrong value types and
    unknown enum names are :class:`FormatError` with the line and column.
    """
    net = NetParameter()
    try:
        text_format.Parse(text, net, allow_unknown_field=True)
    except text_format.ParseError as e:
        raise FormatError(path, f"not a valid Caffe prototxt: {e}") from None
    except (ValueError, RecursionError, MemoryError) as e:  # pathological nesting or numbers
        raise FormatError(path, f"not a valid Caffe prototxt: {e}") from None
    return net, _scan_unknown(text, NetParameter.DESCRIPTOR)


# -- legacy V1 layers -----------------------------------------------------------------------

def upgrade_v1_layer(v1, path: str = "<net>", index: int = 0):
    """A new-style ``LayerParameter`` from a legacy ``V1LayerParameter`` (as Caffe upgrades it).

    Copies name, type (enum -> string), bottoms, tops, include/exclude rules, blobs, loss
    weights, per-blob learning rates (``blobs_lr``/``weight_decay`` -> ``param``) and the
    layer parameters.
    """
    texts = [v1.name, *v1.bottom, *v1.top, *v1.param]
    if not all(isinstance(t, str) for t in texts):  # protobuf hands out bytes for invalid UTF-8 in proto2
        raise FormatError(path, f"legacy layer {index}: its name, blob or parameter names are not UTF-8 text")
    layer = LayerParameter()
    layer.name = v1.name
    type_name = v1.DESCRIPTOR.fields_by_name["type"].enum_type.values_by_number.get(v1.type)
    if type_name is None:
        raise FormatError(path, f"legacy layer {index} ({v1.name!r}) has the unknown V1 type code {v1.type}")
    layer.type = V1_TYPE_NAMES[type_name.name]
    layer.bottom.extend(v1.bottom)
    layer.top.extend(v1.top)
    for rule in v1.include:
        layer.include.add().CopyFrom(rule)
    for rule in v1.exclude:
        layer.exclude.add().CopyFrom(rule)
    for blob in v1.blobs:
        layer.blobs.add().CopyFrom(blob)
    # per-blob settings: V1's parallel lists -> one ParamSpec per blob (share_mode: same numbers in both
    # DimCheckMode enums)
    for field, values in (("name", v1.param), ("lr_mult", v1.blobs_lr), ("decay_mult", v1.weight_decay),
                          ("share_mode", v1.blob_share_mode)):
        for i, value in enumerate(values):
            while len(layer.param) <= i:
                layer.param.add()
            setattr(layer.param[i], field, value)
    layer.loss_weight.extend(v1.loss_weight)
    for name in V1_COPIED_PARAMS:
        if v1.HasField(name):
            getattr(layer, name).CopyFrom(getattr(v1, name))
    return layer


def upgrade_net(net, path: str = "<net>"):
    """Convert legacy V1 ``layers`` into the new ``layer`` list in place; returns ``net``.

    A net that holds both lists is an error, as in Caffe.
    """
    if len(net.layers) == 0:
        return net
    if len(net.layer) > 0:
        raise FormatError(path, "the net has both 'layer' (new) and 'layers' (legacy V1) lists; Caffe refuses "
                          "such files: keep one")
    new = [upgrade_v1_layer(v1, path, i) for i, v1 in enumerate(net.layers)]
    net.ClearField("layers")
    for layer in new:
        net.layer.add().CopyFrom(layer)
    return net


# -- unknown fields of binary messages -------------------------------------------------------

def _unknown_numbers(msg) -> list:
    """Field numbers of ``msg``'s own unknown fields (protobuf keeps them when decoding)."""
    try:
        from google.protobuf import unknown_fields
    except ImportError:  # protobuf < 4.22
        fields = msg.UnknownFields() if hasattr(msg, "UnknownFields") else ()
    else:
        fields = unknown_fields.UnknownFieldSet(msg)
    return sorted({f.field_number for f in fields})


def unknown_field_paths(msg, prefix: str = "") -> list:
    """Paths of the fields in a decoded binary message that this schema does not know.

    A binary file carries numbers, not names, so an unknown field is shown as ``#N``
    (``"#198"`` for an unknown layer parameter, ``"pooling_param.#20"`` for an unknown
    field inside a known one): what a fork added.  Blobs are not searched (their data
    is never parsed here).
    """
    out = [f"{prefix}#{n}" for n in _unknown_numbers(msg)]
    for field, value in msg.ListFields():
        if field.message_type is None or field.name == "blobs":
            continue
        if _repeated(field):
            for i, item in enumerate(value):
                out.extend(unknown_field_paths(item, f"{prefix}{field.name}[{i}]."))
        else:
            out.extend(unknown_field_paths(value, f"{prefix}{field.name}."))
    return out
