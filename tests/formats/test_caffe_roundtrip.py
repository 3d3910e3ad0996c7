"""More .caffemodel checks: property round trips against protobuf's own encoder/decoder, a full
DenseNet-121 model, the writer's dtype/phase rules, fork fields and unknown fields in binary files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import fixture_file
from mapspec.errors import FormatError, MapspecError
from mapspec.formats import caffe
from mapspec.formats import prototxt as pt
from mapspec.formats.base import TensorInfo
from mapspec.frameworks.caffe import net as cn
from mapspec.frameworks.caffe import schema

DATA = Path(__file__).resolve().parents[1] / "data" / "caffe"


def decode(path) -> "schema.NetParameter":
    """protobuf's own decoder: a different code path from the reader's wire walk."""
    return schema.NetParameter.FromString(Path(path).read_bytes())


def values_of(blob) -> np.ndarray:
    if len(blob.double_data):
        return np.array(blob.double_data, dtype=np.float64)
    return np.array(blob.data, dtype=np.float32)


def _unpacked_net_class():
    """NetParameter whose BlobProto writes data/double_data unpacked (one tag per value).

    Built from the same schema with ``packed = false``, in a private pool: protobuf then
    encodes the legal-but-rare unpacked form, which the reader must gather.
    """
    fdp = descriptor_pb2.FileDescriptorProto()
    schema.NetParameter.DESCRIPTOR.file.CopyToProto(fdp)
    for m in fdp.message_type:
        if m.name == "BlobProto":
            for f in m.field:
                if f.name in ("data", "double_data"):
                    f.options.packed = False
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("caffe.NetParameter"))


UnpackedNet = _unpacked_net_class()

# -- property round trips ----------------------------------------------------------------------------

blob_st = st.tuples(st.lists(st.integers(0, 4), min_size=0, max_size=4), st.sampled_from(["float32", "float64"]))
layers_st = st.lists(st.lists(blob_st, min_size=1, max_size=3), min_size=1, max_size=5)


def _arange_blobs(layers) -> dict:
    out, start = {}, 0
    for i, blobs in enumerate(layers):
        for k, (shape, dtype) in enumerate(blobs):
            n = int(np.prod(shape, dtype=np.int64)) if shape else 1
            out[f"layer{i}/x[{k}]"] = ((np.arange(start, start + n) * 0.5 - 7).astype(dtype)).reshape(shape)
            start += n
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layers=layers_st)
def test_writer_round_trips_any_shapes(tmp_path, layers):
    tensors = _arange_blobs(layers)
    path = tmp_path / "p.caffemodel"
    caffe.save(str(path), tensors)
    ref = decode(path)
    got = {}
    for layer in ref.layer:
        for k, blob in enumerate(layer.blobs):
            got[f"{layer.name}[{k}]"] = (tuple(blob.shape.dim), values_of(blob))
    assert list(got) == list(tensors)
    for name, a in tensors.items():
        shape, vals = got[name]
        assert shape == a.shape and (vals.dtype == a.dtype or a.size == 0)  # empty: protobuf cannot tell
        np.testing.assert_array_equal(vals, a.reshape(-1))
    with caffe.open(str(path)) as r:
        assert [(i.name, i.shape, i.dtype) for i in r.infos().values()] == \
            [(k, a.shape, a.dtype.name) for k, a in tensors.items()]
        for name, a in tensors.items():
            np.testing.assert_array_equal(r.read(name), a)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layers=layers_st, legacy=st.booleans(), unpacked=st.booleans())
def test_reader_reads_what_protobuf_encodes(tmp_path, layers, legacy, unpacked):
    """Files encoded by protobuf itself: packed or unpacked values, BlobShape or legacy 4-D dims."""
    tensors = _arange_blobs(layers)
    net = (UnpackedNet if unpacked else schema.NetParameter)(name="enc")
    expected = {}
    for i, blobs in enumerate(layers):
        layer = net.layer.add(name=f"layer{i}/x", type="Convolution")
        for k, (shape, dtype) in enumerate(blobs):
            a = tensors[f"layer{i}/x[{k}]"]
            blob = layer.blobs.add()
            if legacy and len(shape) <= 4:
                dims = [1] * (4 - len(shape)) + list(shape)  # Caffe's old layout: leading 1s
                blob.num, blob.channels, blob.height, blob.width = dims
                expected[f"layer{i}/x[{k}]"] = tuple(dims)
            else:
                blob.shape.dim.extend(shape)
                expected[f"layer{i}/x[{k}]"] = tuple(shape)
            (blob.double_data if dtype == "float64" else blob.data).extend(a.reshape(-1).tolist())
    path = tmp_path / "e.caffemodel"
    path.write_bytes(net.SerializeToString())
    with caffe.open(str(path)) as r:
        assert {k: v.shape for k, v in r.infos().items()} == expected
        for name, a in tensors.items():
            got = r.read(name)
            assert got.dtype == a.dtype or a.size == 0  # protobuf writes nothing for an empty list
            np.testing.assert_array_equal(got.reshape(-1), a.reshape(-1))
            if not unpacked:
                assert not got.flags.owndata  # a view over the map, no copy


def test_legacy_dims_win_over_blobshape(tmp_path):
    """Blob::FromProto: any of num/channels/height/width present -> the 4-D legacy shape."""
    net = schema.NetParameter()
    blob = net.layer.add(name="L").blobs.add(height=2, width=3)
    blob.shape.dim.extend([6])
    blob.data.extend(range(0))  # 0 values: num and channels default to 0
    path = tmp_path / "l.caffemodel"
    path.write_bytes(net.SerializeToString())
    assert caffe.open(str(path)).info("L[0]").shape == (0, 0, 2, 3)


# -- a whole real-structure model ----------------------------------------------------------------------

def test_densenet121_written_from_template_decodes_bit_exact(tmp_path):
    proto = str(fixture_file("densenet-caffe/DenseNet_121.prototxt"))
    tmpl = pt.open(proto)
    infos = list(tmpl.infos().values())
    start, tensors = 0, {}
    for i in infos:
        n = i.numel
        # distinct float32 bit patterns: arange reinterpreted keeps every value different and finite
        tensors[i.name] = (np.arange(start, start + n, dtype=np.uint32) % (1 << 23) | (0x3F << 24)) \
            .view(np.float32).reshape(i.shape)
        start += n
    path = tmp_path / "d121.caffemodel"
    caffe.save(str(path), tensors, template=proto)
    ref = decode(path)
    want = cn.load_net(proto)
    assert [(l.name, l.type, list(l.bottom), list(l.top)) for l in ref.layer] == \
        [(l.name, l.type, list(l.bottom), list(l.top)) for l in want.layer]
    seen = 0
    for layer in ref.layer:
        for k, blob in enumerate(layer.blobs):
            a = tensors[f"{layer.name}[{k}]"]
            assert tuple(blob.shape.dim) == a.shape
            np.testing.assert_array_equal(np.array(blob.data, np.float32).view(np.uint32), a.reshape(-1).view(np.uint32))
            seen += 1
    assert seen == len(infos)
    with caffe.open(str(path)) as r:
        assert list(r.infos()) == list(tensors)
        for name, a in tensors.items():
            np.testing.assert_array_equal(r.read(name).view(np.uint32), a.view(np.uint32))
        assert r.attrs("pool1")["round_mode"] == "FLOOR"  # ceil_mode: false survived the binary round trip
        assert r.attrs("conv2_1/x1/bn")["eps"] == pytest.approx(1e-5)


# -- writer rules --------------------------------------------------------------------------------------

@pytest.mark.parametrize("announced, sent", [("float32", np.float64), ("float64", np.float32),
                                             ("float32", np.float16), ("float32", np.int32)])
def test_writer_refuses_arrays_of_another_dtype(tmp_path, announced, sent):
    w = caffe.create(str(tmp_path / "x.caffemodel"), [TensorInfo("a[0]", (3,), announced)])
    with pytest.raises(MapspecError, match=f"arrived as {np.dtype(sent).name} but was announced as {announced}"):
        w.write("a[0]", np.arange(3).astype(sent))
    w.abort()


def test_writer_accepts_big_endian_and_non_contiguous_arrays(tmp_path):
    a = np.arange(12, dtype=">f4").reshape(3, 4).T  # both: byte-swapped and transposed
    path = tmp_path / "be.caffemodel"
    caffe.save(str(path), {"a[0]": a})
    np.testing.assert_array_equal(np.array(decode(path).layer[0].blobs[0].data).reshape(4, 3), a)


def test_template_layer_shared_by_phases_gets_blobs_in_test(tmp_path):
    text = ('input: "x" input_shape { dim: 1 dim: 2 dim: 3 dim: 3 }\n'
            'layer { name: "c" type: "Convolution" bottom: "x" top: "y" include { phase: TRAIN } '
            'convolution_param { num_output: 5 kernel_size: 1 } }\n'
            'layer { name: "c" type: "Convolution" bottom: "x" top: "y" include { phase: TEST } '
            'convolution_param { num_output: 4 kernel_size: 1 } }\n')
    tmpl = pt.open(text)
    assert {k: v.shape for k, v in tmpl.infos().items()} == {"c[0]": (4, 2, 1, 1), "c[1]": (4,)}
    tensors = {"c[0]": np.arange(8, dtype=np.float32).reshape(4, 2, 1, 1), "c[1]": np.arange(4, dtype=np.float32)}
    path = tmp_path / "ph.caffemodel"
    caffe.save(str(path), tensors, template=tmpl)
    ref = decode(path)
    assert [len(l.blobs) for l in ref.layer] == [0, 2]
    assert ref.layer[1].include[0].phase == schema.PHASE_TEST
    assert caffe.open(str(path)).info("c[0]").shape == (4, 2, 1, 1)


# -- fork fields and unknown fields ---------------------------------------------------------------------

def test_ceil_mode_and_round_mode_in_binary(tmp_path):
    """Field 13 of PoolingParameter is BVLC's round_mode in a binary file; the fork's ceil_mode
    (a bool also numbered 13 in PR 3057 forks) is kept at 1013 so that the two never collide."""
    net = schema.NetParameter()
    net.layer.add(name="p_bvlc", type="Pooling").pooling_param.round_mode = 1  # FLOOR
    net.layer.add(name="p_fork", type="Pooling").pooling_param.ceil_mode = False
    net.layer.add(name="p_default", type="Pooling")
    raw = net.SerializeToString()
    assert b"\x68\x01" in raw  # tag (13 << 3 | 0) then FLOOR
    path = tmp_path / "pool.caffemodel"
    path.write_bytes(raw)
    r = caffe.open(str(path))
    assert [r.attrs(n)["round_mode"] for n in ("p_bvlc", "p_fork", "p_default")] == ["FLOOR", "FLOOR", "CEIL"]
    assert r.net().layer[1].pooling_param.ceil_mode is False


def test_unknown_fields_of_binary_layers_are_reported(tmp_path):
    def varint(v):
        out = bytearray()
        while True:
            out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
            v >>= 7
            if not v:
                return bytes(out)

    def field(num, payload):
        return varint(num << 3 | 2) + varint(len(payload)) + payload

    pool = field(121, field(20, b"x") + varint(1 << 3) + b"\x01")  # pooling_param { #20: "x", pool: AVE }
    layer = field(1, b"pool1") + field(2, b"Pooling") + pool + field(198, b"\x08\x01")  # + a fork's #198
    path = tmp_path / "u.caffemodel"
    path.write_bytes(field(100, layer))
    r = caffe.open(str(path))
    attrs = r.attrs("pool1")
    assert attrs["pool"] == "AVE" and attrs["unknown_fields"] == ["#198", "pooling_param.#20"]
    assert [u.path for u in r.unknown_fields()] == ["layer[0].#198", "layer[0].pooling_param.#20"]
    # the same file is a template too; its unknown fields carry over to the template's attrs
    assert pt.PrototxtReader(r).attrs("pool1")["unknown_fields"] == ["#198", "pooling_param.#20"]


def test_v1_binary_with_data_layer_params_upgrades(tmp_path):
    net = schema.NetParameter(name="v1")
    d = net.layers.add(name="data", type=schema.V1LayerParameter.DATA, top=["data", "label"])
    d.data_param.source = "train_lmdb"
    d.data_param.batch_size = 32
    c = net.layers.add(name="conv", type=schema.V1LayerParameter.CONVOLUTION, bottom=["data"], top=["conv"])
    c.blob_share_mode.append(schema.V1LayerParameter.PERMISSIVE)
    c.blobs.add(num=1, channels=1, height=1, width=2).data.extend([1.5, -2.5])
    path = tmp_path / "v1.caffemodel"
    path.write_bytes(net.SerializeToString())
    r = caffe.open(str(path))
    new = r.net()
    assert new.layer[0].type == "Data" and new.layer[0].data_param.source == "train_lmdb"
    assert new.layer[1].param[0].share_mode == 1 and r.unknown_fields() == []
    np.testing.assert_array_equal(r.read("conv[0]").reshape(-1), [1.5, -2.5])


def test_reader_closes_its_map_on_errors(tmp_path):
    p = tmp_path / "bad.caffemodel"
    p.write_bytes(b"\xa2\x06\x05\x0a\x01")
    with pytest.raises(FormatError, match="claims 5 bytes"):
        caffe.open(str(p))


@pytest.mark.parametrize("v1_layer", [
    b"\x22\x02\xff\xfe",  # name
    b"\x12\x02\xff\xfe",  # bottom
    b"\x1a\x02\xb0\x00",  # top
    b"\xca\x3e\x02\xff\xfe",  # param (field 1001)
])
def test_v1_layer_with_invalid_utf8_is_a_format_error(tmp_path, v1_layer):
    """Found by fuzzing: protobuf hands out bytes for invalid UTF-8 in proto2 strings."""
    p = tmp_path / "bad.caffemodel"
    p.write_bytes(b"\x12" + bytes([len(v1_layer)]) + v1_layer)
    with pytest.raises(FormatError, match="not UTF-8") as e:
        caffe.open(str(p)).net()
    assert e.value.offset in (2, 4)  # the layer, or the name inside it


def test_counts_of_layers_and_blobs_are_bounded(tmp_path, monkeypatch):
    """A crafted file listing very many tiny layers/blobs is refused instead of filling memory."""
    net = schema.NetParameter()
    for i in range(6):
        net.layer.add(name=f"l{i}").blobs.add().data.append(float(i))
    p = tmp_path / "many.caffemodel"
    p.write_bytes(net.SerializeToString())
    assert len(caffe.open(str(p)).infos()) == 6
    monkeypatch.setattr(caffe, "MAX_TENSORS", 5)
    with pytest.raises(FormatError, match="more than 5 blobs"):
        caffe.open(str(p))
    monkeypatch.setattr(caffe, "MAX_TENSORS", 100)
    monkeypatch.setattr(caffe, "MAX_LAYERS", 4)
    with pytest.raises(FormatError, match="more than 4 layers"):
        caffe.open(str(p))


def test_layer_parameters_are_decoded_on_demand(tmp_path):
    """Opening reads names, types and blobs only; a layer's parameters decode when asked for."""
    good = schema.LayerParameter(name="conv", type="Convolution", bottom=["x"], top=["y"])
    good.convolution_param.num_output = 3
    good.blobs.add().data.append(1.0)
    bad = good.SerializeToString().replace(b"\x08\x03", b"\x0a\x03")  # num_output as a truncated string
    raw = b"\xa2\x06" + bytes([len(bad)]) + bad
    p = tmp_path / "lazy.caffemodel"
    p.write_bytes(raw)
    r = caffe.open(str(p))
    assert r.nodes() == ["conv"] and r.info("conv[0]").meta["type"] == "Convolution"
    with pytest.raises(FormatError, match="do not decode"):
        r.attrs("conv")
