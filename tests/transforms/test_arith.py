"""mul/add/sub/div (mapspec/transforms/arith.py): along an axis, zero divisors, dtypes kept, integer refusals."""

from __future__ import annotations

import numpy as np
import pytest

from mapspec.transforms import Meta, TransformError

from transforms_util import K, arange, infer


def test_arithmetic_along_an_axis():
    x = arange(2, 3, 2)
    v = np.array([1.0, 10.0, 100.0], dtype=np.float32)
    out = K["mul"](x, by=v, axis=1)
    for c in range(3):
        np.testing.assert_array_equal(out[:, c], x[:, c] * v[c])
    assert out.dtype == np.float32
    np.testing.assert_array_equal(K["add"](x, by=2), x + 2)
    np.testing.assert_array_equal(K["sub"](x, by=0.5), x - 0.5)
    with pytest.raises(TransformError, match="cannot broadcast along axis 0 of size 2"):
        infer("mul", (2, 3, 2), by=Meta((3,), "float32"), axis=0)
    with pytest.raises(TransformError, match="does not broadcast to the input shape"):
        infer("mul", (2, 3, 2), by=Meta((3,), "float32"))


def test_division_by_zero_factor():
    x = np.array([1.0, 2.0], dtype=np.float32)
    with pytest.raises(TransformError, match="division by zero: the divisor has 1 zero value"):
        K["div"](x, by=np.array([0.0], dtype=np.float32))
    np.testing.assert_array_equal(K["div"](x, by=np.array([0.0], dtype=np.float32), zero=0.0), [0, 0])
    np.testing.assert_array_equal(K["div"](x, by=np.array([2.0, 0.0], dtype=np.float32), zero=0.0), [0.5, 0])


def test_half_precision_arithmetic_keeps_dtype():
    x = np.array([1, 2, 3], dtype=np.float16)
    out = K["mul"](x, by=1.5)
    assert out.dtype == np.float16
    np.testing.assert_array_equal(out, np.array([1.5, 3, 4.5], dtype=np.float16))


def test_integer_arithmetic_refuses_fractions():
    with pytest.raises(TransformError, match="non-integer operand"):
        K["mul"](np.array([1, 2], dtype=np.int64), by=0.5)
    np.testing.assert_array_equal(K["mul"](np.array([1, 2], dtype=np.int64), by=3), [3, 6])
