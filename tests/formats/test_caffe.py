"""The .caffemodel reader (wire walk over mmap) and streaming writer, checked against protobuf's decoder."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import fixture_file
from mapspec.errors import FormatError, MapspecError
from mapspec.formats import caffe, detect, open_checkpoint
from mapspec.formats import prototxt as pt
from mapspec.formats.base import TensorInfo
from mapspec.frameworks.caffe import net as cn
from mapspec.frameworks.caffe import schema

DATA = Path(__file__).resolve().parents[1] / "data" / "caffe"
MFN = "mobilefacenet-caffe-thirdparty/mxnet2caffe_mobilefacenet"


def parse_with_protobuf(path) -> "schema.NetParameter":
    net = schema.NetParameter()
    net.ParseFromString(Path(path).read_bytes())
    return net


def blob_values(blob) -> np.ndarray:
    if len(blob.double_data):
        return np.array(blob.double_data, dtype=np.float64)
    return np.array(blob.data, dtype=np.float32)


def arange_tensors(spec: dict) -> dict:
    """{name: np.arange-built array of that shape/dtype}, distinct values across tensors."""
    out, start = {}, 0
    for name, (shape, dtype) in spec.items():
        n = int(np.prod(shape, dtype=np.int64)) if shape else 1
        out[name] = (np.arange(start, start + n, dtype=np.float64) * 0.25 - 3).astype(dtype).reshape(shape)
        start += n
    return out


# -- the real third-party model ------------------------------------------------------------------

def test_mobilefacenet_reads_like_protobuf_and_matches_its_prototxt():
    model = fixture_file(MFN + ".caffemodel")
    r = open_checkpoint(str(model))
    assert r.format == "caffe" and detect(str(model)) == "caffe"
    tmpl = pt.open(str(fixture_file(MFN + ".prototxt")))
    assert [(k, v.shape) for k, v in r.infos().items()] == [(k, v.shape) for k, v in tmpl.infos().items()]
    ref = parse_with_protobuf(model)
    checked = 0
    for layer in ref.layer:
        for k, blob in enumerate(layer.blobs):
            name = f"{layer.name}[{k}]"
            info = r.info(name)
            assert info.meta == {"layer": layer.name, "type": layer.type, "blob": k}
            assert tuple(info.shape) == tuple(blob.shape.dim)
            got = r.read(name)
            assert got.dtype == np.float32 and not got.flags.owndata and not got.flags.writeable
            np.testing.assert_array_equal(got.reshape(-1).view(np.uint32), blob_values(blob).view(np.uint32))
            checked += 1
    assert checked == len(r.infos()) == 334
    net = r.net()
    assert [l.name for l in net.layer] == [l.name for l in ref.layer] and net.name == ref.name
    assert all(len(l.blobs) == 0 for l in net.layer)
    assert r.attrs("fc1")["eps"] == pytest.approx(2e-5) and r.attrs("fc1_scale")["bias_term"] is True
    assert r.nodes()[0] == "data"


def test_open_is_metadata_only_and_fast(tmp_path):
    """A 64 MB model opens in far less time than it takes to read its bytes, with no copy."""
    tensors = {f"conv{i}[0]": np.full((1024, 1024), i, np.float32) for i in range(16)}
    path = tmp_path / "big.caffemodel"
    caffe.save(str(path), tensors)
    t0 = time.perf_counter()
    r = caffe.open(str(path))
    elapsed = time.perf_counter() - t0
    assert len(r.infos()) == 16 and elapsed < 0.5
    a = r.read("conv7[0]")
    assert not a.flags.owndata and a[5, 5] == 7


# -- writer round trips ----------------------------------------------------------------------------

SPEC = {
    "conv1[0]": ((4, 3, 3, 3), np.float32), "conv1[1]": ((4,), np.float32),
    "bn[0]": ((4,), np.float64), "bn[1]": ((4,), np.float64), "bn[2]": ((1,), np.float64),
    "prelu[0]": ((), np.float32), "ip[0]": ((5, 64), np.float32), "empty[0]": ((0, 3), np.float32),
}


def test_writer_without_template_round_trips(tmp_path):
    tensors = arange_tensors(SPEC)
    path = tmp_path / "w.caffemodel"
    caffe.save(str(path), tensors)
    ref = parse_with_protobuf(path)  # protobuf's own decoder, not our walk
    assert [l.name for l in ref.layer] == ["conv1", "bn", "prelu", "ip", "empty"]
    assert all(l.type == "" for l in ref.layer)
    for layer in ref.layer:
        for k, blob in enumerate(layer.blobs):
            want = tensors[f"{layer.name}[{k}]"]
            assert blob.HasField("shape") and tuple(blob.shape.dim) == want.shape
            np.testing.assert_array_equal(blob_values(blob), want.reshape(-1))
            assert (len(blob.double_data) > 0) == (want.dtype == np.float64)
    r = caffe.open(str(path))
    assert list(r.infos()) == list(tensors)
    for name, want in tensors.items():
        got = r.read(name)
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_writer_with_template_keeps_every_layer(tmp_path):
    tmpl = pt.open(str(DATA / "tiny_net.prototxt"))
    infos = list(tmpl.infos().values())
    tensors = arange_tensors({i.name: (i.shape, np.float32) for i in infos})
    path = tmp_path / "t.caffemodel"
    caffe.save(str(path), tensors, template=str(DATA / "tiny_net.prototxt"))
    ref = parse_with_protobuf(path)
    want = cn.load_net(str(DATA / "tiny_net.prototxt"))
    assert ref.name == "tiny"
    assert [l.name for l in ref.layer] == [l.name for l in want.layer]
    for got, exp in zip(ref.layer, want.layer):
        stripped = schema.LayerParameter()
        stripped.CopyFrom(got)
        stripped.ClearField("blobs")
        assert stripped == exp  # type, bottoms, tops, params unchanged
    r = caffe.open(str(path))
    assert {k: v.shape for k, v in r.infos().items()} == {k: v.shape for k, v in tmpl.infos().items()}
    for name, arr in tensors.items():
        np.testing.assert_array_equal(r.read(name), arr)
    assert r.attrs("pool1")["pad"] == [1, 1] and r.info("conv1[0]").meta["type"] == "Convolution"


def test_writer_accepts_a_reader_as_template_and_v1_templates(tmp_path):
    tmpl = pt.open(str(DATA / "tiny_v1.prototxt"))
    tensors = arange_tensors({i.name: (i.shape, np.float32) for i in tmpl.infos().values()})
    path = tmp_path / "v1.caffemodel"
    caffe.save(str(path), tensors, template=tmpl)
    ref = parse_with_protobuf(path)
    assert len(ref.layers) == 0 and [l.type for l in ref.layer] == ["Convolution", "ReLU", "Pooling",
                                                                     "InnerProduct", "Softmax"]
    assert list(ref.input_dim) == [1, 3, 8, 8] and list(ref.input) == ["data"]
    # a caffemodel is a template too (its structure, blobs ignored)
    again = tmp_path / "again.caffemodel"
    caffe.save(str(again), tensors, template=str(path))
    assert parse_with_protobuf(again) == ref


@pytest.mark.parametrize("names, dtype, match", [
    (["conv1"], "float32", "named layer\\[k\\]"),
    (["conv1[0]"], "float16", "cast: float32"),
    (["conv1[0]"], "int64", "cast: float32"),
    (["conv1[1]"], "float32", "starts with blob \\[1\\]"),
    (["conv1[0]", "conv1[2]"], "float32", "got \\[2\\] where \\[1\\] belongs"),
    (["a[0]", "b[0]", "a[1]"], "float32", "not together"),
])
def test_writer_rejects_bad_plans(tmp_path, names, dtype, match):
    infos = [TensorInfo(n, (2,), dtype) for n in names]
    with pytest.raises(FormatError, match=match):
        caffe.create(str(tmp_path / "x.caffemodel"), infos)


def test_writer_template_order_and_membership(tmp_path):
    t = str(DATA / "tiny_net.prototxt")
    with pytest.raises(FormatError, match="not in the template"):
        caffe.create(str(tmp_path / "x.caffemodel"), [TensorInfo("nope[0]", (2,), "float32")], template=t)
    with pytest.raises(FormatError, match="template's layer order"):
        caffe.create(str(tmp_path / "x.caffemodel"), [TensorInfo("fc[0]", (5, 48), "float32"),
                                                      TensorInfo("conv1[0]", (6, 2, 3, 3), "float32")], template=t)
    w = caffe.create(str(tmp_path / "x.caffemodel"), [TensorInfo("conv1[0]", (6, 2, 3, 3), "float32")], template=t)
    with pytest.raises(MapspecError, match="shape"):
        w.write("conv1[0]", np.zeros((6, 2, 3), np.float32))
    w.abort()


def test_writer_close_before_all_tensors(tmp_path):
    w = caffe.create(str(tmp_path / "x.caffemodel"), [TensorInfo("a[0]", (2,), "float32")])
    with pytest.raises(MapspecError, match="before tensor 'a\\[0\\]'"):
        w.close()
    w.abort()


# -- legacy and unusual encodings, built with protobuf --------------------------------------------

def test_v1_legacy_model_with_4d_legacy_shapes(tmp_path):
    net = schema.NetParameter(name="legacy")
    v1 = net.layers.add(name="conv1", type=schema.V1LayerParameter.CONVOLUTION, bottom=["data"], top=["conv1"])
    v1.convolution_param.num_output = 2
    v1.convolution_param.kernel_size.append(1)
    w = v1.blobs.add(num=2, channels=3, height=1, width=1)
    w.data.extend(np.arange(6, dtype=np.float32) + 0.5)
    b = v1.blobs.add(num=1, channels=1, height=1, width=2)  # Caffe's old bias layout
    b.data.extend([7.0, -8.0])
    ip = net.layers.add(name="ip", type=schema.V1LayerParameter.INNER_PRODUCT)
    ip.blobs.add(num=1, channels=1, height=3, width=2).double_data.extend(np.arange(6.0) * 1.5)
    path = tmp_path / "v1.caffemodel"
    path.write_bytes(net.SerializeToString())
    r = caffe.open(str(path))
    assert {k: v.shape for k, v in r.infos().items()} == {"conv1[0]": (2, 3, 1, 1), "conv1[1]": (1, 1, 1, 2),
                                                          "ip[0]": (1, 1, 3, 2)}
    assert r.info("conv1[0]").meta["type"] == "Convolution" and r.info("ip[0]").dtype == "float64"
    np.testing.assert_array_equal(r.read("conv1[0]").reshape(-1), np.arange(6, dtype=np.float32) + 0.5)
    np.testing.assert_array_equal(r.read("conv1[1]").reshape(-1), [7, -8])
    np.testing.assert_array_equal(r.read("ip[0]").reshape(-1), np.arange(6.0) * 1.5)
    assert r.net().layer[0].convolution_param.num_output == 2 and r.attrs("conv1")["kernel"] == [1, 1]


def test_unpacked_repeated_values_are_gathered(tmp_path):
    """Unpacked floats (one tag per value) and split packed chunks are legal protobuf."""
    def tag(field, wire):
        return bytes([field << 3 | wire])

    floats = np.arange(5, dtype=np.float32) * 1.25
    blob = b"".join(tag(5, 5) + struct.pack("<f", v) for v in floats[:3])  # 3 unpacked values
    packed_tail = floats[3:].tobytes()
    blob += tag(5, 2) + bytes([len(packed_tail)]) + packed_tail  # then a packed chunk
    shape = tag(1, 2) + bytes([1, 5])
    blob = tag(7, 2) + bytes([len(shape)]) + shape + blob
    doubles = b"".join(tag(8, 1) + struct.pack("<d", v) for v in (2.5, -1.0))
    blob2 = tag(7, 2) + bytes([2]) + tag(1, 0) + bytes([2]) + doubles
    layer = tag(1, 2) + b"\x01L" + tag(7, 2) + bytes([len(blob)]) + blob + tag(7, 2) + bytes([len(blob2)]) + blob2
    data = b"\xa2\x06" + bytes([len(layer)]) + layer
    ref = schema.NetParameter.FromString(data)
    np.testing.assert_array_equal(ref.layer[0].blobs[0].data, floats)
    path = tmp_path / "u.caffemodel"
    path.write_bytes(data)
    r = caffe.open(str(path))
    np.testing.assert_array_equal(r.read("L[0]"), floats)
    np.testing.assert_array_equal(r.read("L[1]"), [2.5, -1.0])


# -- hostile input ------------------------------------------------------------------------------------

def _open_and_read_all(path):
    r = caffe.open(str(path))
    try:
        for name in r.names():
            np.asarray(r.read(name)).sum()
        r.net()
        for node in r.nodes():
            r.attrs(node)
    finally:
        r.close()


def _small_model(tmp_path) -> bytes:
    tmpl = pt.open(str(DATA / "tiny_v1.prototxt"))
    tensors = arange_tensors({i.name: (i.shape, np.float32) for i in tmpl.infos().values()})
    path = tmp_path / "small.caffemodel"
    caffe.save(str(path), tensors, template=tmpl)
    return path.read_bytes()


@pytest.mark.slow
def test_truncation_at_every_offset_is_a_format_error_or_a_valid_prefix(tmp_path):
    data = _small_model(tmp_path)
    p = tmp_path / "cut.caffemodel"
    outcomes = {"error": 0, "ok": 0}
    for n in range(len(data)):
        p.write_bytes(data[:n])
        try:
            _open_and_read_all(p)
            outcomes["ok"] += 1
        except FormatError:
            outcomes["error"] += 1
    assert outcomes["error"] > len(data) * 0.9  # valid prefixes exist only at field boundaries


def test_truncated_real_model(tmp_path):
    data = fixture_file(MFN + ".caffemodel").read_bytes()
    p = tmp_path / "cut.caffemodel"
    rng = np.random.default_rng(0)
    for n in sorted(rng.integers(1, len(data), 40)):
        p.write_bytes(data[:n])
        with pytest.raises(FormatError):
            _open_and_read_all(p)


def test_flipped_bytes_never_escape_as_other_exceptions(tmp_path):
    data = bytearray(_small_model(tmp_path))
    p = tmp_path / "flip.caffemodel"
    rng = np.random.default_rng(1)
    errors = 0
    for _ in range(400):
        bad = bytearray(data)
        for pos in rng.integers(0, len(bad), rng.integers(1, 4)):
            bad[pos] = int(rng.integers(0, 256))
        p.write_bytes(bytes(bad))
        try:
            _open_and_read_all(p)
        except FormatError:
            errors += 1
    assert errors > 0


def _varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
        v >>= 7
        if not v:
            return bytes(out)


def _len(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _layer_with_blob(blob: bytes) -> bytes:
    return _len(100, _len(1, b"L") + _len(7, blob))


ONE_FLOAT = _len(5, struct.pack("<f", 1.0))


@pytest.mark.parametrize("data, match", [
    (b"\xa2\x06\xff\xff\xff\xff\xff\xff\xff\xff\x7f", "claims"),  # absurd layer length
    (b"\xa2\x06", "truncated varint"),
    (b"\xa2\x06\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", "longer than 10 bytes"),
    (b"\xa0\x06\x05", "wire type 0 \\(varint\\), expected length-delimited"),  # layer as a varint
    (b"\x0b\x0c", "start-group"),
    (b"\x0e", "invalid"),
    (b"\x00", "field number 0"),
    (b"", "empty"),
    # a blob whose shape claims 2^40 values but holds 1 float
    (_layer_with_blob(_len(7, _len(1, _varint(1 << 40))) + ONE_FLOAT), "needs 1099511627776 values"),
    (_layer_with_blob(_len(7, _len(1, _varint(-3) + _varint(2))) + ONE_FLOAT), "negative dimension"),
    (_layer_with_blob(_len(7, _len(1, b"".join(_varint(1) for _ in range(40)))) + ONE_FLOAT), "more than 32"),
    (_layer_with_blob(_varint(1 << 3) + _varint(-1) + ONE_FLOAT), "negative dimension"),  # legacy num = -1
    (_layer_with_blob(_varint(1 << 3) + _varint(1 << 40) + ONE_FLOAT), "does not fit int32"),
    (_layer_with_blob(_len(5, b"\x00\x00\x00")), "not a multiple of 4"),
    (_layer_with_blob(_len(8, b"\x00" * 12)), "not a multiple of 8"),
    (_layer_with_blob(_varint(5 << 3 | 1) + b"\x00" * 8), "wire type 1"),  # data as a double
    (_layer_with_blob(b""), "needs 1 values but its data holds 0"),  # scalar blob without data
    (_len(100, _len(1, b"abc")[:-1]), "claims 3 bytes"),
    (_len(100, _len(6, b"\x08\x08\x08")), "do not decode"),  # a ParamSpec protobuf cannot decode
    (_len(100, _len(1, b"\xff\xfe") + _len(7, _len(7, b"") + ONE_FLOAT)), "not UTF-8"),
    (_len(2, _len(1, _len(1, b"v0"))), "V0 format"),
    (_len(2, _varint(5 << 3) + _varint(999)), "unknown V1 layer type code 999"),
    (_len(100, b"") + _len(2, b""), "both 'layer'"),
])
def test_crafted_bad_files(tmp_path, data, match):
    p = tmp_path / "bad.caffemodel"
    p.write_bytes(data)
    with pytest.raises(FormatError, match=match) as e:
        _open_and_read_all(p)
    assert str(p) in str(e.value)


def test_duplicate_layer_names_with_blobs(tmp_path):
    net = schema.NetParameter()
    for _ in range(2):
        net.layer.add(name="twin").blobs.add().data.append(1.0)
    p = tmp_path / "dup.caffemodel"
    p.write_bytes(net.SerializeToString())
    with pytest.raises(FormatError, match="second layer named 'twin'"):
        caffe.open(str(p))


def test_sniff():
    assert caffe.sniff("a.caffemodel", b"\x0a\x04name")
    assert not caffe.sniff("a.caffemodel", b'name: "x"\nlayer {')
    assert not caffe.sniff("a.params", b"\x12\x01\x00\x00\x00\x00\x00\x00")
    assert caffe.sniff("weights.bin", b"\x0a\x05DENSE\x1a\x04data\x20\x01")


# -- through the engine -------------------------------------------------------------------------------

def test_engine_reads_caffemodel_densenet_to_torchvision(tmp_path):
    torch = pytest.importorskip("torch")
    import mapspec
    from densenet_util import caffe_blobs, expected_torchvision

    proto = str(fixture_file("densenet-caffe/DenseNet_121.prototxt"))
    blobs = caffe_blobs("121", seed=11)
    model = tmp_path / "d121.caffemodel"
    caffe.save(str(model), {k: blobs[k] for k in pt.open(proto).names()}, template=proto)
    out = tmp_path / "d121.pth"
    assert mapspec.apply("densenet/caffe-to-torchvision", str(model), str(out)).tensors == 727
    sd = torch.load(out, weights_only=True)
    for k, v in expected_torchvision(blobs).items():
        np.testing.assert_allclose(sd[k].numpy(), v, rtol=1e-6, atol=0, err_msg=k)


def test_engine_writes_caffemodel_in_template_order(tmp_path):
    import mapspec
    from mapspec.formats import module

    proto = tmp_path / "tiny_net.prototxt"  # beside the spec: a spec reaches only files under its folder
    proto.write_bytes((DATA / "tiny_net.prototxt").read_bytes())
    spec = tmp_path / "identity.yaml"
    spec.write_text("mapspec: 1\nname: identity\nsource: {format: npz}\n"
                    "target: {format: caffe, template: tiny_net.prototxt}\n"
                    'rules:\n  - from: "<x:path>"\n    to: "{x}"\n')
    tmpl = pt.open(str(proto))
    # the source lists the tensors in reverse: the engine must reorder them for the writer
    src = arange_tensors({i.name: (i.shape, np.float32) for i in reversed(list(tmpl.infos().values()))})
    module("npz").save(str(tmp_path / "src.npz"), src)
    mapspec.apply(str(spec), str(tmp_path / "src.npz"), str(tmp_path / "out.caffemodel"))
    ref = parse_with_protobuf(tmp_path / "out.caffemodel")
    assert [l.name for l in ref.layer] == [l.name for l in tmpl.net().layer]
    r = caffe.open(str(tmp_path / "out.caffemodel"))
    assert list(r.infos()) == list(tmpl.infos())
    for k, v in src.items():
        np.testing.assert_array_equal(r.read(k), v)
