"""GGUF metadata value types and their bytes, against gguf-py (llama.cpp's own Python package)."""

from __future__ import annotations

import pytest

from mapspec.errors import MapspecError
from mapspec.frameworks.gguf import values

gguf = pytest.importorskip("gguf")


def test_type_codes_are_gguf_pys():
    assert values.VALUE_CODES == {m.name.lower(): m.value for m in gguf.GGUFValueType}
    assert (values.STRING, values.ARRAY, values.BOOL) == (gguf.GGUFValueType.STRING, gguf.GGUFValueType.ARRAY,
                                                          gguf.GGUFValueType.BOOL)


@pytest.mark.parametrize("tname, value", [
    ("uint32", 7), ("int32", -3), ("uint64", 2 ** 40), ("int64", -2 ** 40), ("float32", 0.1), ("float64", 0.1),
    ("bool", True), ("string", "héllo"), ("array[string]", ["a", "bc"]), ("array[int32]", [1, -2, 3]),
    ("uint8", 255), ("int16", -300),
])
def test_bytes_equal_gguf_pys(tname, value):
    writer = gguf.GGUFWriter(None, "llama")
    if tname.startswith("array["):
        sub = gguf.GGUFValueType[tname[6:-1].upper()]
        want = writer._pack_val(value, gguf.GGUFValueType.ARRAY, add_vtype=False, sub_type=sub)
    else:
        want = writer._pack_val(value, gguf.GGUFValueType[tname.upper()], add_vtype=False)
    assert values.encode_value(tname, value, "k") == want


def test_infer_type():
    assert [values.infer_type(v, "k") for v in (True, 1, -1, -2 ** 40, 2 ** 40, 0.5, "s", [1, -2 ** 40], [])] == \
        ["bool", "uint32", "int32", "int64", "uint64", "float32", "string", "array[int64]", "array[uint32]"]
    with pytest.raises(MapspecError, match="'k': an array must hold values of one type"):
        values.infer_type([1, "a"], "k")
    with pytest.raises(MapspecError, match="'k': 300 does not fit uint8"):
        values.encode_value("uint8", 300, "k")
