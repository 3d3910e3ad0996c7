"""What a caffemodel's blobs mean: field numbers as caffe.proto declares them, the shape rule, blob names."""

from __future__ import annotations

from mapspec.frameworks.caffe import blobs, schema


def test_field_numbers_are_caffe_protos():
    """Each number the wire walk uses is the one the shipped caffe.proto declares (read through protobuf)."""
    def number(message, field):
        return getattr(schema, message).DESCRIPTOR.fields_by_name[field].number

    assert (blobs.NET_NAME, blobs.NET_LAYERS_V1, blobs.NET_LAYER) == tuple(
        number("NetParameter", f) for f in ("name", "layers", "layer"))
    assert (blobs.LAYER_NAME, blobs.LAYER_TYPE, blobs.LAYER_BLOBS) == tuple(
        number("LayerParameter", f) for f in ("name", "type", "blobs"))
    assert (blobs.V1_NAME, blobs.V1_TYPE, blobs.V1_BLOBS) == tuple(
        number("V1LayerParameter", f) for f in ("name", "type", "blobs"))
    assert blobs.V1_V0_LAYER == 1  # BVLC caffe.proto: V1LayerParameter's "optional V0LayerParameter layer = 1"
    # (the shipped subset leaves the V0 message out)
    blob = schema.message_class("BlobProto")
    assert blobs.LEGACY_DIMS == tuple(blob.DESCRIPTOR.fields_by_name[f].number
                                      for f in ("num", "channels", "height", "width"))
    assert (blobs.BLOB_DATA, blobs.BLOB_SHAPE, blobs.BLOB_DOUBLE_DATA) == tuple(
        blob.DESCRIPTOR.fields_by_name[f].number for f in ("data", "shape", "double_data"))


def test_v1_type_codes():
    assert blobs.V1_TYPE_NAMES[4] == "Convolution" and blobs.V1_TYPE_NAMES[14] == "InnerProduct"
    assert blobs.V1_TYPE_NAMES[17] == "Pooling" and blobs.V1_TYPE_NAMES[18] == "ReLU"


def test_blob_shape_legacy_dims_win_and_stay_4d():
    assert blobs.blob_shape([3, 5], {}) == (3, 5)
    assert blobs.blob_shape(None, {}) == ()
    assert blobs.blob_shape([3, 5], {blobs.BLOB_NUM: 2, blobs.BLOB_WIDTH: 7}) == (2, 0, 0, 7)


def test_blob_names():
    m = blobs.BLOB_NAME.match("conv1/x[2][10]")
    assert (m.group("layer"), m.group("k")) == ("conv1/x[2]", "10")
    assert blobs.BLOB_NAME.match("conv1") is None and blobs.BLOB_NAME.match("conv1[a]") is None


def test_blob_free_copies_only_when_there_are_blobs():
    layer = schema.LayerParameter(name="c", type="Convolution")
    assert blobs.blob_free(layer) is layer
    layer.blobs.add().data.extend([1.0, 2.0])
    free = blobs.blob_free(layer)
    assert len(free.blobs) == 0 and free.name == "c" and len(layer.blobs) == 1
