"""ONNX reader/writer, checked against the onnx package (numpy_helper, checker, external data) and onnxruntime."""

from __future__ import annotations

import os

import ml_dtypes
import numpy as np
import pytest

from mapspec.errors import FormatError, MapspecError
from mapspec.formats import detect, open_checkpoint
from mapspec.formats import onnx as mo

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

DTYPES = {TensorProto.FLOAT: np.float32, TensorProto.DOUBLE: np.float64, TensorProto.FLOAT16: np.float16,
          TensorProto.INT8: np.int8, TensorProto.UINT8: np.uint8, TensorProto.INT16: np.int16,
          TensorProto.UINT16: np.uint16, TensorProto.INT32: np.int32, TensorProto.INT64: np.int64,
          TensorProto.UINT32: np.uint32, TensorProto.UINT64: np.uint64, TensorProto.BOOL: np.bool_}


def values(dt, shape):
    n = int(np.prod(shape))
    if dt == np.bool_:
        return (np.arange(n) % 3 == 1).reshape(shape)
    a = np.arange(n) - (n // 2 if np.issubdtype(dt, np.signedinteger) or np.issubdtype(dt, np.floating) else 0)
    return a.astype(dt).reshape(shape)


def model_with(initializers, path):
    """A model whose graph adds every float32 initializer of shape (2, 3) to its input (so it runs)."""
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    nodes, last = [], "x"
    for i, t in enumerate(initializers):
        if t.data_type == TensorProto.FLOAT and list(t.dims) == [2, 3]:
            nodes.append(helper.make_node("Add", [last, t.name], [f"y{i}"]))
            last = f"y{i}"
    nodes.append(helper.make_node("Identity", [last], ["out"]))
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 3])
    graph = helper.make_graph(nodes, "g", [inp], [out], initializer=initializers)
    m = helper.make_model(graph, producer_name="test", opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return m


@pytest.mark.parametrize("raw", [True, False])
def test_reader_matches_numpy_helper(tmp_path, raw):
    inits = []
    for code, dt in DTYPES.items():
        a = values(dt, (2, 3))
        inits.append(helper.make_tensor(f"t_{code}", code, a.shape, a.tobytes() if raw else a.flatten().tolist(),
                                        raw=raw))
    bf = np.arange(6, dtype=np.float32).astype(ml_dtypes.bfloat16).reshape(3, 2)
    inits.append(helper.make_tensor("bf16", TensorProto.BFLOAT16, bf.shape, bf.tobytes(), raw=True))
    inits.append(helper.make_tensor("scalar", TensorProto.FLOAT, [], [2.5]))
    inits.append(helper.make_tensor("empty", TensorProto.FLOAT, [0, 4], []))
    path = tmp_path / "m.onnx"
    m = model_with(inits, path)
    assert detect(path) == "onnx"
    with open_checkpoint(path) as r:
        assert r.names() == [t.name for t in m.graph.initializer]
        for t in m.graph.initializer:
            want = numpy_helper.to_array(t)
            got = r.read(t.name)
            if t.name == "bf16":
                want = want.astype(np.float32)
                got = got.astype(np.float32)
            assert got.shape == want.shape and got.dtype == want.dtype, t.name
            assert np.array_equal(got, want), t.name


def test_external_data_written_by_onnx(tmp_path):
    inits = [numpy_helper.from_array(values(np.float32, (64, 32)) / 7, "big"),
             numpy_helper.from_array(values(np.int64, (3,)), "small")]
    m = model_with(inits, tmp_path / "plain.onnx")
    onnx.save_model(m, str(tmp_path / "ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=100)
    with open_checkpoint(tmp_path / "ext.onnx") as r:
        assert np.array_equal(r.read("big"), values(np.float32, (64, 32)) / 7)
        assert np.array_equal(r.read("small"), values(np.int64, (3,)))


def test_writer_output_checked_by_onnx_and_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    inits = [numpy_helper.from_array(values(np.float32, (2, 3)), "a"),
             numpy_helper.from_array(values(np.float32, (2, 3)) * 3, "b"),
             numpy_helper.from_array(values(np.float16, (5,)), "h")]
    tmpl = tmp_path / "t.onnx"
    model_with(inits, tmpl)
    new = {"a": np.full((2, 3), 10, np.float32), "b": np.arange(6, dtype=np.float32).reshape(2, 3),
           "h": np.arange(5, dtype=np.float16)}
    for ext in (False, True):
        out = tmp_path / f"o{ext}.onnx"
        mo.save(out, new, template=str(tmpl), external_data=ext, size_threshold=0)
        m = onnx.load(str(out))
        onnx.checker.check_model(m)
        assert [t.name for t in m.graph.initializer] == ["a", "b", "h"]
        for t in m.graph.initializer:
            assert np.array_equal(numpy_helper.to_array(t), new[t.name])
        assert (tmp_path / f"o{ext}.onnx.data").exists() == ext
        sess = ort.InferenceSession(str(out))
        x = np.ones((2, 3), np.float32)
        assert np.array_equal(sess.run(None, {"x": x})[0], x + new["a"] + new["b"])


def test_writer_checks_against_the_template(tmp_path):
    tmpl = tmp_path / "t.onnx"
    model_with([numpy_helper.from_array(values(np.float32, (2, 3)), "a")], tmpl)
    with pytest.raises(MapspecError, match=r"'a' is \(3, 2\) float32 but the template"):
        mo.save(tmp_path / "o.onnx", {"a": np.zeros((3, 2), np.float32)}, template=str(tmpl))
    with pytest.raises(MapspecError, match="missing: a"):
        mo.save(tmp_path / "o.onnx", {"z": np.zeros((2, 3), np.float32)}, template=str(tmpl))
    with pytest.raises(MapspecError, match="needs a template"):
        mo.save(tmp_path / "o.onnx", {"a": np.zeros((2, 3), np.float32)})
    assert not (tmp_path / "o.onnx").exists() and not (tmp_path / "o.onnx.data").exists()


# -- hostile files ------------------------------------------------------------------------------

def external_model(tmp_path, location, offset=0, length=24, name="m.onnx"):
    t = numpy_helper.from_array(np.zeros((2, 3), np.float32), "a")
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
        e = t.external_data.add()
        e.key, e.value = k, v
    d = tmp_path / "model"
    d.mkdir(exist_ok=True)
    model_with([t], d / name)
    return d / name


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../secret.bin"])
def test_external_data_outside_the_model_directory(tmp_path, location):
    (tmp_path / "secret.bin").write_bytes(b"\1" * 64)
    with pytest.raises(FormatError, match="leaves the model's directory"):
        mo.open(str(external_model(tmp_path, location)))


def test_external_data_symlink_out_of_the_directory(tmp_path):
    (tmp_path / "secret.bin").write_bytes(b"\1" * 64)
    path = external_model(tmp_path, "link.bin")
    os.symlink(tmp_path / "secret.bin", path.parent / "link.bin")
    with pytest.raises(FormatError, match="resolves outside"):
        mo.open(str(path))


def test_external_data_offsets_checked(tmp_path):
    path = external_model(tmp_path, "w.bin", offset=2 ** 62)
    (path.parent / "w.bin").write_bytes(b"\0" * 24)
    with pytest.raises(FormatError, match="needs bytes"):  # on open: inspect refuses what apply would
        mo.open(str(path))
    path = external_model(tmp_path, "w.bin", length=7, name="n.onnx")
    with pytest.raises(FormatError, match="does not match shape"):
        mo.open(str(path))
    path = external_model(tmp_path, "gone.bin", name="g.onnx")
    with pytest.raises(FormatError, match="missing"):
        mo.open(str(path))
    path = external_model(tmp_path, "w.bin", name="t.onnx")  # sound on open, truncated before the read
    with mo.open(str(path)) as r, pytest.raises(FormatError, match="needs bytes"):
        (path.parent / "w.bin").write_bytes(b"\0" * 20)
        r.read("a")


def test_absurd_dims_and_truncation(tmp_path):
    t = TensorProto(name="a", data_type=TensorProto.FLOAT, dims=[2 ** 40, 2 ** 40])
    path = tmp_path / "d.onnx"
    model_with([t], path)
    with pytest.raises(FormatError, match="overflows|needs"):
        mo.open(str(path))
    good = tmp_path / "g.onnx"
    model_with([numpy_helper.from_array(values(np.float32, (2, 3)), "a"),
                numpy_helper.from_array(values(np.int64, (4,)), "b")], good)
    data = good.read_bytes()
    with mo.open(str(good)) as r:
        graph_end = r.graph_span[2]  # a cut between later top-level fields is still a valid model
    cut = tmp_path / "cut.onnx"
    for n in range(1, graph_end, 3):
        cut.write_bytes(data[:n])
        try:
            with mo.open(str(cut)) as r:
                for name in r.names():
                    r.read(name)
        except FormatError:
            continue
        raise AssertionError(f"a cut at {n} of {len(data)} bytes read without an error")


def test_external_data_chosen_automatically_past_the_protobuf_limit(tmp_path, monkeypatch):
    """Models over 2 GB: the writer moves tensors out when the inline model would pass the limit
    (the limit lowered here, so that a small model takes the same path)."""
    tmpl = tmp_path / "t.onnx"
    model_with([numpy_helper.from_array(values(np.float32, (2, 3)), "a"),
                numpy_helper.from_array(values(np.float32, (300,)), "big")], tmpl)
    monkeypatch.setattr(mo, "PROTOBUF_LIMIT", (64 << 20) + 1000)
    out = tmp_path / "o.onnx"
    mo.save(out, {"a": np.ones((2, 3), np.float32), "big": np.arange(300, dtype=np.float32)}, template=str(tmpl))
    where = {t.name: t.data_location for t in onnx.load(str(out), load_external_data=False).graph.initializer}
    m = onnx.load(str(out))
    assert where == {"a": TensorProto.DEFAULT, "big": TensorProto.EXTERNAL}  # "a" is under size_threshold
    assert np.array_equal(numpy_helper.to_array(m.graph.initializer[1]), np.arange(300, dtype=np.float32))
