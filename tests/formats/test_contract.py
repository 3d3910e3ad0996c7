"""The format contract, over every entry of ``mapspec.formats.registry.FORMATS``.

A format that holds data writes a mapping of distinct-valued tensors (``np.arange``, every dtype it
writes, 0-d/1-d/4-d where it allows them) through its public ``save`` and reads it back bit-identical
through ``open_checkpoint``; a template-only format declares names and shapes and refuses to hold
values.  A format added to the registry without a case below fails ``test_every_format_has_a_case``:
give it a case (or, for a limit, a reason in ``LIMITS``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import numpy as np
import pytest

from mapspec import dtypes
from mapspec.errors import MapspecError
from mapspec.formats import create_writer, detect, open_checkpoint
from mapspec.formats.base import TensorInfo
from mapspec.formats.registry import FORMATS, module

DATA = Path(__file__).resolve().parent.parent / "data"

SHAPES = {"w4": (2, 3, 4, 5), "v1": (7,), "s0": ()}


def values(dtype: str, shape: tuple, start: int = 0) -> np.ndarray:
    """Distinct values (np.arange from ``start``; a permutation or a shifted copy shows) in ``dtype``."""
    n = int(np.prod(shape, dtype=np.int64))
    if dtype == "bool":
        return ((np.arange(n) + start) % 3 == 1).reshape(shape)
    a = np.arange(start, start + n)
    # integers the dtype holds exactly (float8: |x| <= 7, bfloat16: 8 significant bits, float16: 11), so that
    # neighbouring values stay distinct; signed types get negative values too
    exact = {"float8_e4m3fn": 15, "float8_e5m2": 15, "bfloat16": 256, "float16": 2048, "int8": 256, "uint8": 256}
    if dtype in exact:
        a = a % exact[dtype]
    if dtypes.DTYPES[dtype].kind in ("int", "float"):
        a = a - (exact.get(dtype, 2 * n) // 2)
    return a.astype(dtypes.to_numpy(dtype)).reshape(shape)


def writable(name: str) -> list:
    """The dtypes format ``name`` writes: its module's WRITE_DTYPES (None: all), less the LIMITS entries."""
    declared = getattr(module(name), "WRITE_DTYPES", None)
    out = [d for d in dtypes.known() if declared is None or d in declared]
    return [d for d in out if d not in LIMITS.get(name, {}).get("dtypes", {})]


class Case(NamedTuple):
    suffix: str
    tensors: Callable  # (tmp_path, dtype) -> {name: array}
    options: Callable = lambda tmp_path, tensors: {}
    read_name: Callable = lambda name: name  # the name the reader gives a written tensor, where the format says so
    metadata: Optional[tuple] = None  # (the write option ``metadata``, what the reader gives back for it)


def _plain(names=("a.w", "b.v", "c.s")):
    """Tensors named ``names``, shaped 4-d, 1-d and 0-d in that order (as many as names), distinct values."""
    def make(tmp_path, dtype):
        return {n: values(dtype, shape, 1000 * k) for k, (n, shape) in enumerate(zip(names, SHAPES.values()))}
    return make


def _onnx_template(tmp_path, tensors) -> dict:
    """A template model whose initializers have the tensors' names, shapes and dtypes (zeros), built with onnx."""
    onnx = pytest.importorskip("onnx")
    from onnx import helper, numpy_helper

    inits = [numpy_helper.from_array(np.zeros_like(np.asarray(a)), n) for n, a in tensors.items()]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "t", [
        helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])], inits)
    path = tmp_path / "template.onnx"
    onnx.save(helper.make_model(graph), str(path))
    return {"template": str(path)}


def _keras_archive_tensors(tmp_path, dtype):
    """Distinct values for every weight of a small Keras 3 model saved with model.save (the template)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    path = tmp_path / "template.keras"
    keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, name="d1"),
                      keras.layers.BatchNormalization(name="bn")], name="net").save(str(path))
    with open_checkpoint(path) as r:
        return {n: values(dtype, i.shape, 1000 * k) for k, (n, i) in enumerate(r.infos().items())}


DATA_CASES: dict[str, Case] = {
    "safetensors": Case(".safetensors", _plain(), metadata=({"format": "pt", "note": "é"},
                                                            {"format": "pt", "note": "é"})),
    "npz": Case(".npz", _plain()),
    "torch": Case(".pt", _plain()),
    "caffe": Case(".caffemodel", _plain(("conv[0]", "conv[1]", "ip[0]"))),
    "mxnet": Case(".params", _plain(("a.w", "b.v"))),
    # the Keras 3 layout's HDF5 paths; the reader names variables by model path (Keras' own
    # model.save_weights -> layers/dense/vars/0 reads as dense/vars/0: tests/formats/test_keras.py)
    "keras": Case(".weights.h5", _plain(("layers/blk/vars/0", "layers/blk/vars/1", "layers/head/vars/0")),
                  read_name=lambda n: n.removeprefix("layers/")),
    "sharded": Case(".index.json", _plain()),
    "keras-archive": Case(".keras", _keras_archive_tensors,
                          lambda tmp_path, tensors: {"template": str(tmp_path / "template.keras")}),
    "gguf": Case(".gguf", _plain(), metadata=(
        {"general.architecture": "llama", "t.count": {"type": "uint32", "value": 7}, "t.names": ["a", "bb"],
         "t.scale": {"type": "float32", "value": 0.5}, "t.flag": True},
        {"general.architecture": ("string", "llama"), "t.count": ("uint32", 7),
         "t.names": ("array[string]", ["a", "bb"]), "t.scale": ("float32", 0.5), "t.flag": ("bool", True)})),
    "onnx": Case(".onnx", _plain(), _onnx_template),
}

# What a data format cannot hold, each with the reason (and the test that checks the refusal).
LIMITS: dict[str, dict] = {
    "npz": {"dtypes": {"bfloat16": "numpy has no such dtype: refused (tests/formats/test_contract.py)",
                       "float8_e4m3fn": "numpy has no such dtype: refused",
                       "float8_e5m2": "numpy has no such dtype: refused"}},
    "caffe": {"names": "blobs are named layer[k] (tests/formats/test_caffe.py)"},
    "mxnet": {"shapes": "MXNet 1.x's V2 format has no 0-d arrays: refused (tests/formats/test_mxnet.py)"},
    "gguf": {"dtypes": {"uint8": "uint8 only carries raw quantized blocks whose ggml type the meta names "
                                 "(tests/formats/test_gguf.py)"}},
    "keras-archive": {"names": "the template fixes names, shapes and dtypes (float32 for a Keras model)",
                      "dtypes": {d: "the template model's weights are float32" for d in dtypes.known()
                                 if d != "float32"}},
}

TEMPLATE_CASES: dict[str, tuple] = {
    # format: (template file, read options, {name: shape} that the file declares, read by hand from it)
    "prototxt": (DATA / "caffe" / "tiny_net.prototxt", {}, {
        "conv1[0]": (6, 2, 3, 3), "conv1[1]": (6,), "conv1/bn[2]": (1,), "conv2[0]": (6, 6, 3, 1),
        "deconv[0]": (12, 2, 2, 2), "fc2[0]": (5, 4), "fc2[1]": (4,)}),
    "mxnet-symbol": (DATA / "mxnet" / "legacy-symbol.json", {"input_shape": [1, 3, 8, 8]}, {
        "conv0_weight": (8, 3, 3, 3), "conv0_bias": (8,), "bn0_moving_var": (8,), "fc0_weight": (10, 32)}),
}


def test_every_format_has_a_case():
    data = {n for n, e in FORMATS.items() if e.has_data}
    assert data == set(DATA_CASES), "give each data format a round-trip case in DATA_CASES"
    assert set(FORMATS) - data == set(TEMPLATE_CASES), "give each template-only format a case in TEMPLATE_CASES"
    assert set(LIMITS) <= data


def _data_params():
    for name in FORMATS:
        if FORMATS[name].has_data:
            for dt in writable(name):
                yield pytest.param(name, dt, id=f"{name}-{dt}")


@pytest.mark.parametrize("name,dtype", list(_data_params()))
def test_write_then_read_is_bit_identical(tmp_path, name, dtype):
    case = DATA_CASES[name]
    tensors = case.tensors(tmp_path, dtype)
    path = tmp_path / f"out{case.suffix}"
    options = case.options(tmp_path, tensors)
    if case.metadata:
        options["metadata"] = case.metadata[0]
    module(name).save(str(path), tensors, **options)
    if name != "sharded":  # an index names its shards' format; detect() reads single files
        assert detect(path) == name
    with open_checkpoint(path, format=name) as r:
        assert r.names() == [case.read_name(n) for n in tensors]
        for written, want in tensors.items():
            n = case.read_name(written)
            info = r.info(n)
            assert info.shape == want.shape and info.dtype == dtype, n
            got = np.asarray(r.read(n))
            assert got.dtype == want.dtype and got.shape == want.shape, n
            assert got.tobytes() == want.tobytes(), f"{name} {dtype}: {n} differs after the round trip"
        if case.metadata:
            have = r.typed_metadata() if name == "gguf" else r.metadata
            assert {k: have[k] for k in case.metadata[1]} == case.metadata[1]


@pytest.mark.parametrize("name", sorted(LIMITS))
def test_limits_are_refused_not_written_wrong(tmp_path, name):
    """Every dtype a format cannot hold is refused at write time with a MapspecError, never a file that
    reads back different (or not at all)."""
    case = DATA_CASES[name]
    for dt in LIMITS[name].get("dtypes", {}):
        if name == "keras-archive":
            continue  # the template fixes the dtype; tests/formats/test_keras_archive.py checks it
        tensors = case.tensors(tmp_path, dt)
        with pytest.raises(MapspecError):
            module(name).save(str(tmp_path / f"x{case.suffix}"), tensors, **case.options(tmp_path, tensors))
    if "shapes" in LIMITS[name]:
        with pytest.raises(MapspecError, match="0-d"):
            module(name).save(str(tmp_path / f"s{case.suffix}"), {"s": values("float32", ())})


@pytest.mark.parametrize("name", sorted(TEMPLATE_CASES))
def test_template_declares_names_and_shapes(tmp_path, name):
    path, options, declared = TEMPLATE_CASES[name]
    with open_checkpoint(path, format=name, **options) as r:
        assert not r.has_data
        infos = r.infos()
        for n, shape in declared.items():
            assert infos[n].shape == shape, n
        assert all(all(isinstance(d, int) and d > 0 for d in i.shape) for i in infos.values())
        with pytest.raises(MapspecError, match="holds no values"):
            r.read(next(iter(declared)))
    with pytest.raises(MapspecError, match="cannot hold"):
        create_writer(str(tmp_path / "x"), [TensorInfo("a", (1,), "float32")], format=name)
