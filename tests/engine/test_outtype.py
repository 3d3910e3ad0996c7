"""mapspec/outtype.py: --outtype auto is the dtype of the source's matrices, refused when they disagree."""

from __future__ import annotations

import pytest

from mapspec.errors import MapspecError
from mapspec.formats import TensorInfo
from mapspec.engine.outtype import auto, float_dtype


def infos(*items):
    return [TensorInfo(f"t{i}", shape, dtype) for i, (shape, dtype) in enumerate(items)]


def test_auto_is_the_matrices_dtype():
    assert auto(infos(((4, 4), "bfloat16"), ((4,), "float32"))) == "bfloat16"
    assert auto(infos(((4, 4), "float32"), ((4,), "float32"))) == "float32"
    assert auto(infos(((4, 4), "float16"), ((4, 4), "int64"))) == "float16"


@pytest.mark.parametrize("items", [[((4, 4), "bfloat16"), ((4, 4), "float16")], [((4,), "float32")]])
def test_auto_refuses_to_guess(items):
    with pytest.raises(MapspecError, match="--outtype auto"):
        auto(infos(*items))


def test_float_types_and_gguf_types():
    assert float_dtype("bf16", "safetensors", "o", []) == "bfloat16"
    with pytest.raises(MapspecError, match="q4_0 is a GGUF type"):
        float_dtype("q4_0", "torch", "o", [])
