"""What every writer checks (mapspec/formats/base.py): tensors in the announced order, of the announced shape and
dtype, all of them before close; a failed write leaves no file."""

from __future__ import annotations

import numpy as np
import pytest

from mapspec import dtypes
from mapspec.errors import MapspecError
from mapspec.formats import create_writer, module, npz, open_checkpoint
from mapspec.formats.registry import FORMATS
from mapspec.formats.base import TensorInfo, arrays_and_infos, save_with, write_all

INFOS = [TensorInfo("a", (2, 3), "float32"), TensorInfo("b", (4,), "int64")]
A, B = np.arange(6, dtype=np.float32).reshape(2, 3), np.arange(4, dtype=np.int64)


@pytest.mark.parametrize("writes,match", [
    ([("b", B)], "writer got tensor 'b' out of order \\(expected 'a'\\)"),
    ([("a", A), ("a", A)], "out of order \\(expected 'b'\\)"),
    ([("a", A.T)], "shape \\(3, 2\\) differs from the announced \\(2, 3\\)"),
    ([("a", A), ("b", B), ("c", B)], "expected 'nothing more'"),
    ([("a", A)], "closed before tensor 'b' was written"),
])
def test_writer_refuses_what_was_not_announced(tmp_path, writes, match):
    w = create_writer(str(tmp_path / "o.npz"), INFOS)
    with pytest.raises(MapspecError, match=match):
        for name, arr in writes:
            w.write(name, arr)
        w.close()
    w.abort()


def test_arrays_and_infos_and_save_with_round_trip(tmp_path):
    arrays, infos = arrays_and_infos({"a": A, "b": B})
    assert infos == INFOS
    save_with(npz.create, tmp_path / "o.npz", arrays)
    with open_checkpoint(tmp_path / "o.npz") as r:
        assert list(r.infos().values()) == [TensorInfo(i.name, i.shape, i.dtype) for i in INFOS]
        assert np.array_equal(r.read("a"), A) and np.array_equal(r.read("b"), B)


def test_a_failed_save_leaves_no_file(tmp_path):
    with pytest.raises(MapspecError):
        save_with(npz.create, tmp_path / "o.npz", {"a": A, "b": np.zeros(1, dtypes.to_numpy("bfloat16"))})
    assert list(tmp_path.iterdir()) == []
    w = create_writer(str(tmp_path / "p.npz"), INFOS)
    with pytest.raises(MapspecError):
        write_all(w, {"a": A, "b": A})  # b of another shape: aborted


@pytest.mark.parametrize("fmt", [f for f, e in FORMATS.items() if e.has_data])
def test_save_refuses_a_dtype_mapspec_has_no_name_for(tmp_path, fmt):
    """complex, object, text arrays: one error naming the tensor and the dtype, never a KeyError."""
    out = tmp_path / ("d/m.index.json" if fmt == "sharded" else "m" + FORMATS[fmt].suffixes[0])
    for bad in (np.zeros(2, np.complex64), np.array(["a", "b"]), np.array([None], dtype=object)):
        with pytest.raises(MapspecError, match=f"tensor 'x' is {bad.dtype}, a dtype mapspec does not write"):
            module(fmt).save(str(out), {"x": bad})
        assert not out.exists()
