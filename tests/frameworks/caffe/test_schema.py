"""Caffe's schema: the shipped caffe.proto, built at run time, against facts of BVLC's caffe.proto."""

from __future__ import annotations

import numpy as np

from mapspec.frameworks.caffe import schema


def test_schema_field_numbers_are_caffes():
    """Spot-check the runtime schema against numbers from BVLC caffe.proto."""
    d = schema.LayerParameter.DESCRIPTOR.fields_by_name
    assert (d["blobs"].number, d["convolution_param"].number, d["batch_norm_param"].number,
            d["scale_param"].number, d["prelu_param"].number, d["denseblock_param"].number) == (7, 106, 139, 142,
                                                                                               131, 147)
    n = schema.NetParameter.DESCRIPTOR.fields_by_name
    assert (n["layer"].number, n["layers"].number, n["input_dim"].number) == (100, 2, 4)
    b = schema.BlobProto.DESCRIPTOR.fields_by_name
    assert (b["data"].number, b["double_data"].number, b["shape"].number, b["num"].number) == (5, 8, 7, 1)
    assert schema.LayerParameter().batch_norm_param.eps == np.float32(1e-5)
    assert schema.message_class("DenseBlockParameter")().moving_average_fraction == np.float32(0.1)


def test_schema_is_the_shipped_proto():
    """caffe.proto is package data; its quoted string defaults are BVLC's (FillerParameter.type "constant",
    WindowDataParameter.crop_mode "warp")."""
    assert schema.schema_text().lstrip().startswith("//")
    assert schema.message_class("FillerParameter")().type == "constant"
    assert schema.message_class("WindowDataParameter")().crop_mode == "warp"
    assert schema.PACKAGE == "caffe"
