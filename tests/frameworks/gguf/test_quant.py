"""mapspec.frameworks.gguf.quant against gguf-py's reference (gguf.quants.quantize / dequantize), byte for byte."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapspec.frameworks.gguf import quant
from mapspec.frameworks.gguf.ggml import BY_NAME, FILE_TYPES, QUANT_VERSION, by_name

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType

BLOCK_TYPES = ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1")
FLOAT_TYPES = ("F16", "BF16")


def reference(x: np.ndarray, name: str) -> bytes:
    return np.ascontiguousarray(gguf.quants.quantize(x, getattr(Q, name))).tobytes()


def test_type_table_matches_gguf_py():
    for q, (block, nbytes) in gguf.GGML_QUANT_SIZES.items():
        if q.name in BY_NAME:
            assert (by_name(q.name).block, by_name(q.name).nbytes, BY_NAME[q.name]) == (block, nbytes, int(q))
    for outtype, ft in FILE_TYPES.items():
        assert gguf.LlamaFileType[ft.name] == ft.number, outtype
    assert QUANT_VERSION == gguf.GGML_QUANT_VERSION


# values a block may hold: ordinary, zero, tiny, huge (block scale still within float16), subnormal
_values = st.one_of(
    st.floats(-4, 4, width=32),
    st.just(0.0), st.just(-0.0),
    st.floats(-2.0 ** -100, 2.0 ** -100, width=32),
    st.floats(-2.0 ** -126, 2.0 ** -126, width=32, allow_subnormal=True),
    st.floats(-60000.0, 60000.0, width=32),
    st.sampled_from([1.0, -1.0, 0.5, -2.5, 127.0, -8.0, 65504.0]),
)


@st.composite
def _blocks(draw):
    """1..4 rows of 1..3 blocks of 32; some blocks all equal, some with a negative maximum."""
    rows, blocks = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    x = np.array(draw(st.lists(_values, min_size=rows * blocks * 32, max_size=rows * blocks * 32)),
                 dtype=np.float32).reshape(rows, blocks, 32)
    if draw(st.booleans()):
        x[0, 0, :] = x[0, 0, 0]  # an all-equal block
    if draw(st.booleans()):
        x[-1, -1, 3] = -np.abs(x[-1, -1]).max() - 1  # the largest magnitude is negative
    return x.reshape(rows, blocks * 32)


@settings(max_examples=150, deadline=None)
@given(x=_blocks(), name=st.sampled_from(BLOCK_TYPES + FLOAT_TYPES))
def test_quantize_is_bit_identical_to_gguf_py(x, name):
    with np.errstate(all="ignore"):
        want = reference(x, name)
    assert quant.quantize(x, name).tobytes() == want


@settings(max_examples=60, deadline=None)
@given(x=_blocks(), name=st.sampled_from(BLOCK_TYPES))
def test_dequantize_matches_gguf_py(x, name):
    with np.errstate(all="ignore"):
        blocks = gguf.quants.quantize(x, getattr(Q, name))
    np.testing.assert_array_equal(quant.dequantize(blocks, name), gguf.quants.dequantize(blocks, getattr(Q, name)))


@pytest.mark.parametrize("name", BLOCK_TYPES + FLOAT_TYPES + ("F32",))
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_other_float_sources_go_through_float32_like_the_converter(name, dtype):
    import ml_dtypes

    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 64)).astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
    # the converter hands gguf-py float16 as is and everything else as float32 (torch .to(float32))
    ref = x if dtype == "float16" else x.astype(np.float32)
    assert quant.quantize(x, name).tobytes() == reference(ref, name)


def test_bf16_nan_is_made_quiet_as_gguf_py_does():
    bits = np.array([0x7F800001, 0xFF812345, 0x7FC00000, 0x3F808000, 0x3F818000, 0x00000001], dtype=np.uint32)
    x = bits.view(np.float32)
    assert quant.quantize(x, "BF16").tobytes() == reference(x, "BF16")


def test_random_tensor_every_type_streamed_in_pieces():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((300, 96)) * rng.uniform(1e-3, 50, (300, 1))).astype(np.float32)
    for name in BLOCK_TYPES + FLOAT_TYPES:
        assert b"".join(bytes(p) for p in quant.encode(x, name, "t")) == reference(x, name)


@pytest.mark.parametrize("name", BLOCK_TYPES)
def test_non_finite_values_are_refused(name):
    x = np.ones((2, 32), np.float32)
    x[1, 5] = np.nan
    with pytest.raises(quant.QuantError, match="NaN or infinity"):
        quant.quantize(x, name)


def test_overflow_to_infinity_is_refused():
    with pytest.raises(quant.QuantError, match="overflows f16"):
        quant.quantize(np.array([[1.0, 70000.0]], np.float32), "F16")
    with pytest.raises(quant.QuantError, match="overflows bf16"):
        quant.quantize(np.array([[np.finfo(np.float32).max]], np.float32), "BF16")
    with pytest.raises(quant.QuantError, match="block scale"):
        quant.quantize(np.full((1, 32), 1e10, np.float32), "Q8_0")
    with pytest.raises(quant.QuantError, match="float32's range"):
        quant.quantize(np.array([[1e300]]), "F32")


def test_rows_must_be_whole_blocks():
    with pytest.raises(quant.QuantError, match="whole Q8_0 blocks"):
        quant.quantize(np.ones((2, 40), np.float32), "Q8_0")
