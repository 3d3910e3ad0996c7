"""A Caffe net as a graph: loading a ``NetParameter``, its inputs, and shape inference in the TEST phase.

A prototxt names every layer, its type, inputs/outputs and parameters, but the shapes of
its parameter blobs depend on the shapes flowing through the net (a convolution's weight
needs its input channel count).  :func:`infer` propagates the input shapes through the
whole net in Caffe's TEST phase with the rules of :mod:`mapspec.frameworks.caffe.layers`
and returns both the activation ("blob") shapes and each layer's parameter shapes.

:func:`load_net` turns a prototxt path, prototxt text, a reader with ``net()`` or a
``NetParameter`` into a blob-free ``NetParameter`` (legacy V1 ``layers`` converted to
``layer``); :func:`dump` writes one back as text; :func:`declared_inputs` lists a net's
inputs (``input`` fields and ``Input`` layers) with their declared shapes.  Reading a
``.caffemodel`` is a format's job (:mod:`mapspec.formats.caffe`), not this module's.
"""

from __future__ import annotations

import builtins
import os
from typing import Mapping, NamedTuple, Optional, Sequence

from ...errors import FormatError, MapspecError
from . import layers as cl
from . import schema
from .geometry import ShapeError, input_layer_shapes

MAX_TEXT_BYTES = 256 << 20  # a net definition is a few hundred KB; refuse absurd files before reading them
MAX_NDIM = 32

Shape = tuple
_FILE_SUFFIXES = (".prototxt", ".pbtxt", ".txt", ".caffemodel")  # a one-line source named so is a path


class NetShapes(NamedTuple):
    """What :func:`infer` finds for one set of input shapes."""

    inputs: dict  # net input blob -> shape
    blobs: dict  # every blob (activation) -> its shape (the last layer writing it decides)
    params: dict  # layer name -> list of its parameter blob shapes (layers with blobs only)
    tops: dict  # layer index -> list of its output shapes
    layers: list  # indices of net.layer present in the phase, in execution order


# -- loading -----------------------------------------------------------------------------------

def _read_text(path: str) -> str:
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise FormatError(path, f"cannot open: {e.strerror}") from None
    if size > MAX_TEXT_BYTES:
        raise FormatError(path, f"is {size} bytes, far more than any net definition; is it a caffemodel "
                          f"(binary weights)? Open it with format 'caffe'")
    try:
        with builtins.open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise FormatError(path, f"cannot open: {e.strerror}") from None
    if b"\x00" in raw[:4096]:
        raise FormatError(path, "is binary, not a text prototxt (a .caffemodel? open it with format 'caffe')")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError(path, f"is not UTF-8 text (byte {e.start}): not a prototxt", offset=e.start) from None


def load(source, path_hint: str = "<text>") -> tuple:
    """(net, unknown fields, path) from a prototxt path, prototxt text, a reader with ``net()`` or a
    NetParameter."""
    if isinstance(source, schema.NetParameter):
        net = schema.NetParameter()
        net.CopyFrom(source)
        return schema.upgrade_net(net, path_hint), [], path_hint
    if hasattr(source, "net") and callable(source.net):  # a prototxt or caffemodel reader
        return source.net(), list(getattr(source, "unknown_fields", lambda: [])()), source.path
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str):
        raise MapspecError(f"a Caffe net must be a path, prototxt text or a NetParameter, not "
                           f"{type(source).__name__}")
    one_line = "\n" not in source and len(source) < 4096
    is_file = one_line and os.path.isfile(source)
    named_like_file = one_line and "{" not in source and source.lower().rstrip().endswith(_FILE_SUFFIXES)
    if not is_file and (named_like_file or not any(c in source for c in '\n{:"')):
        raise FormatError(source, "no such file" if not os.path.isdir(source) else "is a directory, not a prototxt")
    if is_file:
        text, path = _read_text(source), source
    else:
        text, path = source, path_hint
    net, unknown = schema.parse_text(text, path)
    schema.upgrade_net(net, path)
    for layer in net.layer:
        layer.ClearField("blobs")  # a prototxt with inline blobs is still only a template here
    return net, unknown, path


def load_net(source, path: str = "<text>"):
    """A blob-free ``NetParameter`` from a prototxt path, prototxt text, a reader with ``net()`` or a
    ``NetParameter`` (copied).  Legacy V1 ``layers`` become ``layer``."""
    return load(source, path)[0]


def load_net_with_unknown(source, path: str = "<text>") -> tuple:
    """(``NetParameter``, [:class:`~mapspec.frameworks.caffe.schema.UnknownField`]) like :func:`load_net`, with the
    fields of a prototxt that mapspec's Caffe schema does not know (they were skipped: a caller that
    writes the net back out must tell the user they are gone)."""
    net, unknown, _ = load(source, path)
    return net, unknown


def dump(net) -> str:
    """Prototxt text of a ``NetParameter`` (blobs left out), e.g. to write a BN-folded net."""
    from google.protobuf import text_format

    copy = schema.NetParameter()
    copy.CopyFrom(net)
    for layer in copy.layer:
        layer.ClearField("blobs")
    for layer in copy.layers:
        layer.ClearField("blobs")
    return text_format.MessageToString(copy)


# -- shapes ------------------------------------------------------------------------------------

def as_shape(path: str, name: str, value) -> Shape:
    """A user-given shape (list/tuple of ints, or text like ``1,3,224,224``) checked."""
    if isinstance(value, str):
        text = value.strip().strip("[]()")
        try:
            value = [int(v) for v in text.replace(" ", "").split(",") if v]
        except ValueError:
            raise MapspecError(f"{path}: input shape {value!r} for {name!r} is not a list of integers") from None
    if not isinstance(value, (list, tuple)) or not value:
        raise MapspecError(f"{path}: input shape for {name!r} must be a non-empty list of integers, "
                           f"got {value!r}")
    if len(value) > MAX_NDIM:
        raise MapspecError(f"{path}: input shape for {name!r} has {len(value)} dims (at most {MAX_NDIM})")
    out = []
    for d in value:
        if isinstance(d, bool) or not isinstance(d, int) or d <= 0:
            raise MapspecError(f"{path}: input shape {list(value)} for {name!r}: every dim must be a positive "
                               f"integer")
        out.append(int(d))
    return tuple(out)


def net_inputs(net, path: str = "<net>") -> dict:
    """Net-level inputs (``input`` with ``input_shape`` or ``input_dim``) -> shape (None if unknown)."""
    names = list(net.input)
    shapes: dict = {}
    if len(net.input_shape):
        if len(net.input_shape) != len(names):
            raise FormatError(path, f"the net has {len(names)} input(s) but {len(net.input_shape)} input_shape(s)")
        for n, s in zip(names, net.input_shape):
            shapes[n] = tuple(int(d) for d in s.dim)
    elif len(net.input_dim):
        if len(net.input_dim) != 4 * len(names):
            raise FormatError(path, f"the net has {len(names)} input(s) but {len(net.input_dim)} input_dim "
                              f"values (4 per input)")
        dims = [int(d) for d in net.input_dim]
        for i, n in enumerate(names):
            shapes[n] = tuple(dims[4 * i:4 * i + 4])
    else:
        shapes = {n: None for n in names}
    return shapes


def declared_inputs(net, path: str = "<net>", layers: Optional[Sequence] = None) -> dict:
    """Every input blob of the net -> its declared shape (None where none is given): the ``input``
    fields (:func:`net_inputs`), then the tops of the ``Input`` layers among ``layers`` (default: the
    TEST-phase layers of ``net``)."""
    inputs = net_inputs(net, path)
    if layers is None:
        layers = [layer for layer in net.layer if cl.in_phase(layer)]
    for layer in layers:
        if layer.type != "Input":
            continue
        try:
            shapes = input_layer_shapes(layer)
        except ShapeError as e:
            raise FormatError(path, f"Input layer {layer.name!r}: {e}") from None
        inputs.update(zip(layer.top, shapes))
    return inputs


def _check_dims(path: str, where: str, shape: Shape) -> Shape:
    if len(shape) > MAX_NDIM or any(d < 0 for d in shape):
        raise FormatError(path, f"{where}: shape {shape} has negative dims or too many axes")
    return shape


def infer(net, input_shapes: Optional[Mapping[str, Sequence[int]]] = None, phase: int = schema.PHASE_TEST,
          path: str = "<net>") -> NetShapes:
    """Propagate shapes through ``net`` (a NetParameter from :func:`load_net`) in Caffe's TEST phase.

    ``input_shapes`` (blob name -> shape) sets or overrides net inputs and the tops of
    ``Input`` layers.  Unknown layer types, missing bottoms, unknown input shapes and
    parameters that do not fit their inputs are :class:`FormatError` naming the layer.
    """
    overrides = {k: as_shape(path, k, v) for k, v in (input_shapes or {}).items()}
    inputs = net_inputs(net, path)
    known_inputs = set(declared_inputs(net, path, [layer for layer in net.layer if cl.in_phase(layer, phase)]))
    stray = [k for k in overrides if k not in known_inputs]
    if stray:
        raise MapspecError(f"{path}: input shape given for {stray[0]!r}, which is not an input of this net "
                           f"(inputs: {', '.join(sorted(known_inputs)) or 'none'})")
    blobs: dict = {}
    for name, shape in inputs.items():
        shape = overrides.get(name, shape)
        if shape is None:
            raise FormatError(path, f"net input {name!r} has no shape: give input_shape=[N, C, H, W] "
                              f"(or input_shapes={{{name!r}: [...]}})")
        blobs[name] = _check_dims(path, f"input {name!r}", tuple(shape))
        inputs[name] = blobs[name]
    params: dict = {}
    tops: dict = {}
    order: list = []
    for i, layer in enumerate(net.layer):
        if not cl.in_phase(layer, phase):
            continue
        where = f"layer {i} {layer.name!r} ({layer.type or 'no type'})"
        spec = cl.LAYER_TYPES.get(layer.type)
        if spec is None:
            raise FormatError(path, f"{where}: mapspec has no shape rule for layer type {layer.type!r}; "
                              f"supported: {', '.join(sorted(cl.LAYER_TYPES))}")
        missing = [b for b in layer.bottom if b not in blobs]
        if missing:
            raise FormatError(path, f"{where}: input blob {missing[0]!r} is not produced by any earlier layer")
        bottoms = [blobs[b] for b in layer.bottom]
        try:
            outs, pshapes = spec.rule(layer, bottoms)
        except ShapeError as e:
            raise FormatError(path, f"{where}: {e}") from None
        if layer.type == "Input":
            outs = [overrides.get(t, s) for t, s in zip(layer.top, outs)]
            unset = [t for t, s in zip(layer.top, outs) if s is None]
            if unset:
                raise FormatError(path, f"{where}: input {unset[0]!r} has no shape in input_param: give "
                                  f"input_shape=[N, C, H, W] (or input_shapes={{{unset[0]!r}: [...]}})")
            inputs.update(zip(layer.top, outs))
        if len(outs) != len(layer.top) and layer.type != "Silence":
            raise FormatError(path, f"{where}: has {len(layer.top)} top(s) but produces {len(outs)}")
        for t, s in zip(layer.top, outs):
            blobs[t] = _check_dims(path, f"{where} output {t!r}", tuple(int(d) for d in s))
        tops[i] = [tuple(int(d) for d in s) for s in outs]
        if pshapes:
            if layer.name in params:
                raise FormatError(path, f"{where}: a second layer named {layer.name!r} with parameters; "
                                  f"blob names layer[k] would be ambiguous")
            params[layer.name] = [tuple(int(d) for d in s) for s in pshapes]
        order.append(i)
    return NetShapes(inputs, blobs, params, tops, order)


__all__ = ["load", "load_net", "load_net_with_unknown", "dump", "infer", "NetShapes", "net_inputs",
           "declared_inputs", "as_shape"]
