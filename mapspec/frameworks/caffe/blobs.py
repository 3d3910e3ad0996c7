"""What a ``.caffemodel``'s blobs mean: caffe.proto's field numbers, the blob shape rule, blob naming.

A ``.caffemodel`` is a binary ``NetParameter``; :mod:`mapspec.formats.caffe` walks its wire format
itself (for speed and memory) and takes from here what the bytes mean:

* the field numbers of ``NetParameter``, ``LayerParameter``, the legacy ``V1LayerParameter`` and
  ``BlobProto`` that the walk reads, and the V1 layer type codes by number (as Caffe's upgrade
  names them);
* a blob's shape: its ``BlobShape``, or the legacy ``num/channels/height/width`` when any of those
  is present (kept 4-D, as Caffe does), following ``Blob::FromProto`` (:func:`blob_shape`); values
  are ``float32`` in the packed ``data`` field, ``float64`` in ``double_data`` (Caffe prefers
  ``double_data`` when both are present), see :data:`VALUE_DTYPES`;
* mapspec's tensor names: ``layer[k]`` is blob ``k`` of the layer named ``layer``
  (:data:`BLOB_NAME`), in file order;
* :func:`blob_free`: a layer's structure without its blob data.

In a binary file ``PoolingParameter`` field 13 is read as BVLC's ``round_mode``: forks that put a
boolean ``ceil_mode`` at 13 (BVLC PR 3057, OpenCV's caffe.proto) cannot be told apart on the wire,
and layer parameters stored in a caffemodel are informational anyway (Caffe takes the structure
from the prototxt and only the blobs from here).
"""

from __future__ import annotations

import re
from typing import Optional

from . import schema

# field numbers (caffe.proto)
NET_NAME, NET_LAYERS_V1, NET_LAYER = 1, 2, 100
LAYER_NAME, LAYER_TYPE, LAYER_BLOBS = 1, 2, 7
V1_V0_LAYER, V1_NAME, V1_TYPE, V1_BLOBS = 1, 4, 5, 6
BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH = 1, 2, 3, 4
BLOB_DATA, BLOB_DIFF, BLOB_SHAPE, BLOB_DOUBLE_DATA, BLOB_DOUBLE_DIFF = 5, 6, 7, 8, 9
SHAPE_DIM = 1
LEGACY_DIMS = (BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH)

# value field of a blob -> the dtype of its values (little-endian)
VALUE_DTYPES = {BLOB_DATA: "float32", BLOB_DOUBLE_DATA: "float64"}

# V1 LayerType code -> the new type string (as Caffe's upgrade names it)
V1_TYPE_NAMES = {v.number: schema.V1_TYPE_NAMES[v.name]
                 for v in schema.V1LayerParameter.DESCRIPTOR.fields_by_name["type"].enum_type.values}

# mapspec's name of blob k of layer L: "L[k]"
BLOB_NAME = re.compile(r"^(?P<layer>.*)\[(?P<k>\d+)\]$")


def blob_shape(dims: Optional[list], legacy: dict) -> tuple:
    """A blob's shape as ``Blob::FromProto`` reads it: the legacy dims (``{field: value}``, missing
    ones 0, kept 4-D) when any is present, else the ``BlobShape`` dims."""
    if legacy:
        return tuple(legacy.get(f, 0) for f in LEGACY_DIMS)
    return tuple(dims or ())


def blob_free(layer):
    """``layer`` (a ``LayerParameter``) without its blobs: itself when it has none, else a copy."""
    if len(layer.blobs) == 0:
        return layer
    copy = schema.LayerParameter()
    copy.CopyFrom(layer)
    copy.ClearField("blobs")
    return copy
