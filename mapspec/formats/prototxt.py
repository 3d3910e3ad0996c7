"""Caffe net definitions (``.prototxt``) as a format: a template of the blobs a caffemodel must hold.

The reader (``open(path, input_shape=None, input_shapes=None)``) is a template
(``has_data = False``): one tensor ``layer[k]`` per parameter blob, in layer order, dtype
float32, meta ``{"layer", "type", "blob"}``, with the shapes that
:func:`mapspec.frameworks.caffe.net.infer` finds by propagating the input shape through the
net in Caffe's TEST phase.  The net input comes from ``input`` + ``input_shape``/``input_dim``,
or from ``Input`` layers; ``input_shape=[1, 3, 224, 224]`` sets it for a net with one input,
``input_shapes={"data": [...]}`` by name.  The source may also be prototxt text, a
``NetParameter``, a reader with ``net()`` or a ``.caffemodel`` path (its structure).

Loading, dumping and shape inference live in :mod:`mapspec.frameworks.caffe.net`, the layer
rules in :mod:`mapspec.frameworks.caffe.layers`.
"""

from __future__ import annotations

from typing import Optional

from ..errors import FormatError, MapspecError
from ..frameworks.caffe import layers as cl
from ..frameworks.caffe import schema
from ..frameworks.caffe.net import NetShapes, declared_inputs, infer
from .base import Reader, TensorInfo, shapes_option
from .caffe import load_template

NAME = "prototxt"
DTYPE = "float32"


# -- the template reader ---------------------------------------------------------------------------

class PrototxtReader(Reader):
    """A prototxt as a template: names and shapes of every parameter blob, no values."""

    format = NAME
    has_data = False

    def __init__(self, source, input_shape=None, input_shapes=None):
        net, unknown, path = load_template(source)
        super().__init__(path)
        self._net = net
        self._unknown = unknown
        self._overrides = shapes_option(path, input_shapes)
        if input_shape is not None:
            names = list(declared_inputs(net, path))
            if len(names) != 1:
                raise MapspecError(f"{path}: input_shape is for a net with one input, but this one has "
                                   f"{len(names)} ({', '.join(names) or 'none'}); use input_shapes={{name: shape}}")
            self._overrides[names[0]] = input_shape
        self._shapes: Optional[NetShapes] = None
        self._by_name = {}
        for i, layer in enumerate(net.layer):
            self._by_name.setdefault(layer.name, i)

    # -- structure -----------------------------------------------------------------------
    def net(self):
        """A copy of the (blob-free, V1-upgraded) ``NetParameter``."""
        copy = schema.NetParameter()
        copy.CopyFrom(self._net)
        return copy

    def unknown_fields(self) -> list:
        """Fields of the prototxt that mapspec's Caffe schema does not know (skipped)."""
        return list(self._unknown)

    def nodes(self) -> list[str]:
        return [layer.name for layer in self._net.layer]

    def attrs(self, node: str) -> dict:
        i = self._by_name.get(node)
        if i is None:
            return {}
        unknown = [u.path.split(".", 1)[1] if "." in u.path else u.name for u in self._unknown if u.layer == i]
        return cl.layer_attrs(self._net.layer[i], unknown)

    def shapes(self) -> NetShapes:
        """Activation and parameter shapes for the configured input shape(s)."""
        if self._shapes is None:
            self._shapes = infer(self._net, self._overrides, path=self.path)
        return self._shapes

    # -- tensors -------------------------------------------------------------------------------
    def infos(self) -> dict:
        if not self._infos:
            s = self.shapes()
            types = {layer.name: layer.type for layer in self._net.layer}
            for layer_name, shapes in s.params.items():
                for k, shape in enumerate(shapes):
                    name = f"{layer_name}[{k}]"
                    self._infos[name] = TensorInfo(name, shape, DTYPE,
                                                   {"layer": layer_name, "type": types[layer_name], "blob": k})
        return self._infos

    def names(self) -> list[str]:
        return list(self.infos())

    def info(self, name: str) -> TensorInfo:
        infos = self.infos()
        if name not in infos:
            raise FormatError(self.path, "no such blob in this net", tensor=name)
        return infos[name]

    def __contains__(self, name: str) -> bool:
        return name in self.infos()

    def __len__(self) -> int:
        return len(self.infos())


# -- the format API -----------------------------------------------------------------------------

READ_OPTIONS = ("input_shape", "input_shapes")
WRITE_OPTIONS = ()


def sniff(path: str, head: bytes) -> bool:
    if not str(path).lower().endswith((".prototxt", ".pbtxt")):
        return False
    return b"\x00" not in head


def open(path: str, input_shape=None, input_shapes=None, **options) -> PrototxtReader:  # noqa: A001
    return PrototxtReader(path, input_shape=input_shape, input_shapes=input_shapes)


def create(path: str, infos, **options):
    raise MapspecError(f"{path}: a .prototxt describes a net but cannot hold its weights; write a .caffemodel "
                       f"(format caffe) with this prototxt as its template")


def save(path: str, tensors, **options) -> None:
    create(path, [])


__all__ = ["PrototxtReader", "sniff", "open", "create", "save"]
