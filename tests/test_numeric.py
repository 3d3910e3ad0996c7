"""mapspec.numeric against Python's own integers and floats (an independent oracle).

For any int64/int8/uint8 arrays and operands, an arithmetic result is refused exactly when
the true (unbounded) result leaves the dtype's range; casts refuse exactly the values that
do not survive the round trip; literals are exact or refused.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapspec import numeric
from mapspec.transforms import TRANSFORMS
from mapspec.transforms.registry import TransformError

DTYPES = [np.int8, np.uint8, np.int16, np.int64, np.uint64]
OPS = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b}


@st.composite
def _case(draw):
    dt = np.dtype(draw(st.sampled_from(DTYPES)))
    info = np.iinfo(dt)
    values = draw(st.lists(st.integers(int(info.min), int(info.max)), min_size=1, max_size=6))
    by = draw(st.integers(int(info.min), int(info.max)))
    op = draw(st.sampled_from(sorted(OPS)))
    return dt, values, by, op


@settings(max_examples=300, deadline=None)
@given(_case())
def test_integer_arithmetic_refused_exactly_when_it_wraps(case):
    dt, values, by, op = case
    info = np.iinfo(dt)
    exact = [OPS[op](v, by) for v in values]
    wraps = any(not info.min <= e <= info.max for e in exact)
    kernel = TRANSFORMS[op].kernel
    x = np.array(values, dtype=dt)
    if wraps:
        with pytest.raises(TransformError, match="overflows"):
            kernel(x, by)
        allowed = kernel(x, by, allow=frozenset({"overflow"}))
        modulus = 1 << (8 * dt.itemsize)
        assert [int(v) % modulus for v in allowed] == [e % modulus for e in exact]  # two's complement
    else:
        assert kernel(x, by).tolist() == exact


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(DTYPES), st.integers(-2 ** 70, 2 ** 70))
def test_integer_cast_refused_exactly_when_out_of_range(dt, value):
    dt = np.dtype(dt)
    info = np.iinfo(dt)
    src = np.array([value], dtype=np.int64 if -2 ** 63 <= value < 2 ** 63 else np.float64)
    fits = info.min <= int(src[0]) <= info.max
    if fits:
        assert numeric.cast(src, dt).tolist() == [int(src[0])]
    else:
        with pytest.raises(TransformError, match="do not fit|beyond"):
            numeric.cast(src, dt)


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True, width=64))
def test_float16_cast_and_literals(value):
    src = np.array([value], dtype=np.float64)
    if math.isfinite(value) and abs(value) >= 65520:  # rounds past float16's largest, 65504
        with pytest.raises(TransformError, match="infinity"):
            numeric.cast(src, np.float16)
        with pytest.raises(TransformError, match="beyond"):
            numeric.scalar(value, np.float16)
    elif math.isfinite(value) and value != 0 and np.float16(value) == 0:  # below float16's smallest, ~6e-8
        with pytest.raises(TransformError, match="would become 0"):
            numeric.cast(src, np.float16)
        with pytest.raises(TransformError, match="below the smallest"):
            numeric.scalar(value, np.float16)
        assert float(numeric.cast(src, np.float16, frozenset({"underflow"}))[0]) == 0.0
        assert float(numeric.scalar(value, np.float16, frozenset({"underflow"}))) == 0.0
    elif math.isfinite(value):
        assert float(numeric.cast(src, np.float16)[0]) == float(np.float16(value))
        assert float(numeric.scalar(value, np.float16)) == float(np.float16(value))
    else:
        with pytest.raises(TransformError, match="not finite"):
            numeric.scalar(value, np.float16)
        assert numeric.scalar(value, np.float16, frozenset({"non-finite"})).dtype == np.float16


@pytest.mark.parametrize("value,dt,ok", [
    (2.0, np.int32, 2), (2.5, np.int32, None), (-129, np.int8, None), (255, np.uint8, 255),
    (10 ** 30, np.float32, 1e30), (10 ** 400, np.float64, None), (True, np.bool_, True), (2, np.bool_, None),
])
def test_literals(value, dt, ok):
    if ok is None:
        with pytest.raises(TransformError):
            numeric.scalar(value, dt)
    else:
        assert numeric.scalar(value, dt) == ok


# -- the bit-level scans (all_finite, the zeros check_underflow looks at) against numpy's float64 view --

_FLOATS = ["float16", "bfloat16", "float32", "float64"]


def _np_dtype(name):
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


@st.composite
def _float_array(draw):
    dt = _np_dtype(draw(st.sampled_from(_FLOATS)))
    bits = {2: np.uint16, 4: np.uint32, 8: np.uint64}[dt.itemsize]
    # raw bit patterns: every class of value (zeros of both signs, subnormals, infinities, NaNs)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0], dtype=np.float64)
    with np.errstate(over="ignore"):
        special_bits = [int(b) for b in specials.astype(dt).view(bits)]
    if dt.kind == "f":
        special_bits += [int(np.array(np.finfo(dt).max, dt).view(bits)), 1, (1 << (8 * dt.itemsize - 1)) | 1]
    value = st.one_of(st.integers(0, (1 << (8 * dt.itemsize)) - 1), st.sampled_from(special_bits))
    raw = draw(st.lists(value, min_size=0, max_size=40))
    x = np.array(raw, dtype=bits).view(dt)
    layout = draw(st.sampled_from(["flat", "2d", "transposed", "big-endian"]))
    if layout != "flat" and x.size >= 4:
        x = x[: x.size // 2 * 2].reshape(2, -1)
        if layout == "transposed":
            x = x.T
    if layout == "big-endian" and dt.kind == "f":
        x = x.astype(dt.newbyteorder(">"))
    return x


def _reference(x):
    as64 = x.astype(np.float32).astype(np.float64) if x.dtype.kind == "V" else x.astype(np.float64)
    return bool(np.isfinite(as64).all()), sorted(np.flatnonzero(as64.reshape(-1) == 0).tolist())


@settings(max_examples=400, deadline=None)
@given(_float_array())
def test_finite_and_zero_scans_match_numpy(x):
    finite, zeros = _reference(x)
    assert numeric.all_finite(x) is finite
    found = sorted(int(i) + int(j) for i, chunk in numeric._zeros(x) for j in chunk)
    assert found == zeros


def test_scans_cross_chunk_boundaries(monkeypatch):
    monkeypatch.setattr(numeric, "CHUNK", 7)
    x = np.arange(1, 31, dtype=np.float32)
    x[[0, 7, 13, 29]] = 0
    assert sorted(int(i) + int(j) for i, c in numeric._zeros(x) for j in c) == [0, 7, 13, 29]
    assert numeric.all_finite(x)
    x[20] = np.inf
    assert not numeric.all_finite(x)


def test_bfloat16_cast_underflow_still_refused():
    import ml_dtypes

    x = np.array([1.0, 1e-45, -2.0], dtype=np.float32)  # 1e-45 (a float32 subnormal) is 0 in bfloat16
    with pytest.raises(TransformError, match="1 nonzero value would become 0 in bfloat16"):
        numeric.cast(x, np.dtype(ml_dtypes.bfloat16))
    big = np.array([3e38, 1.0], dtype=np.float32)
    assert numeric.cast(big, np.dtype(ml_dtypes.bfloat16)).dtype == np.dtype(ml_dtypes.bfloat16)
