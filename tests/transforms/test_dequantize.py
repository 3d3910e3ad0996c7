"""dequantize: ggml block layouts checked against gguf-py's own dequantize (the oracle)."""

from __future__ import annotations

import numpy as np
import pytest

from mapspec.transforms import TRANSFORMS, Meta, TransformError
from mapspec.transforms.dequantize import dequantize

from gguf_util import QUANTS, random_blocks

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType


@pytest.mark.parametrize("qtype", list(QUANTS))
def test_dequantize_matches_gguf_py(qtype):
    raw = random_blocks(qtype, 4, 3, seed=7)
    want = gguf.quants.dequantize(raw, Q[qtype])
    got = dequantize(raw, qtype)
    assert got.dtype == np.float32 and got.shape == want.shape == (4, 3 * QUANTS[qtype][0])
    assert np.array_equal(got, want)


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0"])
def test_dequantize_of_gguf_py_quantization(qtype):
    x = (np.arange(4 * 64, dtype=np.float32).reshape(4, 64) - 100) / 37
    raw = gguf.quants.quantize(x, Q[qtype])
    assert np.array_equal(dequantize(raw, qtype), gguf.quants.dequantize(raw, Q[qtype]))
    assert np.abs(dequantize(raw, qtype) - x).max() < (0.05 if qtype == "Q8_0" else 0.5)


def test_infer_shape_and_refusals():
    infer = TRANSFORMS["dequantize"].infer
    assert infer(Meta((4, 2 * 210), "uint8"), type="Q6_K") == Meta((4, 512), "float32")
    with pytest.raises(TransformError, match="whole 34-byte blocks"):
        infer(Meta((4, 35), "uint8"), type="Q8_0")
    with pytest.raises(TransformError, match="uint8"):
        infer(Meta((4, 34), "float32"), type="Q8_0")
    with pytest.raises(TransformError):
        dequantize(np.zeros((2, 35), np.uint8), "Q8_0")
