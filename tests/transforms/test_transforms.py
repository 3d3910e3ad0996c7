"""Each transform's kernel and shape inference, with property tests for the round trips."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapspec.transforms import TRANSFORMS, Meta, TransformError

K = {name: t.kernel for name, t in TRANSFORMS.items()}


def infer(name, shape, meta_dtype="float32", /, **args):
    return TRANSFORMS[name].infer(Meta(tuple(shape), meta_dtype), **args)


def arange(*shape, dtype=np.float32):
    return np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)


shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)


# -- properties --------------------------------------------------------------------------

@given(shapes, st.data())
def test_transpose_round_trip_and_inference(shape, data):
    x = arange(*shape)
    axes = data.draw(st.permutations(list(range(len(shape)))))
    y = K["transpose"](x, axes)
    assert infer("transpose", shape, axes=axes).shape == y.shape
    inverse = list(np.argsort(axes))
    np.testing.assert_array_equal(K["transpose"](y, inverse), x)
    # element-wise definition: y[i0, i1, ...] == x[i_{axes^-1}...]
    idx = tuple(data.draw(st.integers(0, d - 1)) for d in y.shape)
    src = [0] * len(shape)
    for out_axis, in_axis in enumerate(axes):
        src[in_axis] = idx[out_axis]
    assert y[idx] == x[tuple(src)]


@given(shapes, st.data())
def test_split_then_concat_is_identity(shape, data):
    axis = data.draw(st.integers(0, len(shape) - 1))
    parts = data.draw(st.sampled_from([p for p in range(1, shape[axis] + 1) if shape[axis] % p == 0]))
    x = arange(*shape)
    pieces = [K["split"](x, parts=parts, take=k, axis=axis) for k in range(parts)]
    for p in pieces:
        assert infer("split", shape, parts=parts, take=0, axis=axis).shape == p.shape
    first, rest = pieces[0], pieces[1:]
    np.testing.assert_array_equal(K["concat"](first, after=rest, axis=axis), x)
    if parts > 1:
        np.testing.assert_array_equal(K["concat"](pieces[-1], before=pieces[:-1], axis=axis), x)


@given(shapes, st.data())
def test_reshape_round_trip(shape, data):
    x = arange(*shape)
    flat = K["reshape"](x, [-1])
    assert flat.shape == (x.size,)
    assert np.shares_memory(flat, x), "reshape of a contiguous tensor must not copy"
    np.testing.assert_array_equal(K["reshape"](flat, list(shape)), x)
    assert infer("reshape", shape, shape=[-1]).shape == (x.size,)


@given(st.integers(1, 4), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3))
def test_ungroup_then_group_is_identity(groups, out_g, in_g, k):
    w = arange(groups * out_g, in_g, k, k) + 1
    dense = K["ungroup"](w, groups=groups)
    assert dense.shape == infer("ungroup", w.shape, groups=groups).shape == (groups * out_g, groups * in_g, k, k)
    np.testing.assert_array_equal(K["group"](dense, groups=groups), w)
    # everything off the diagonal blocks is zero; the blocks hold the grouped weights
    for g in range(groups):
        for h in range(groups):
            block = dense[g * out_g:(g + 1) * out_g, h * in_g:(h + 1) * in_g]
            if g == h:
                np.testing.assert_array_equal(block, w[g * out_g:(g + 1) * out_g])
            else:
                assert not block.any()


def conv2d(x, w, b=None, groups=1, pad=0):
    """Direct (loop) convolution, NCHW / OIHW, stride 1: an independent reference."""
    n, c, h, wd = x.shape
    o, ig, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = h + 2 * pad - kh + 1, wd + 2 * pad - kw + 1
    out = np.zeros((n, o, oh, ow))
    og = o // groups
    for oc in range(o):
        g = oc // og
        for i in range(oh):
            for j in range(ow):
                patch = xp[:, g * ig:(g + 1) * ig, i:i + kh, j:j + kw]
                out[:, oc, i, j] = (patch * w[oc]).sum(axis=(1, 2, 3))
        if b is not None:
            out[:, oc] += b[oc]
    return out


def test_ungroup_gives_an_equivalent_dense_convolution():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 5, 5))
    w = rng.standard_normal((6, 2, 3, 3))
    np.testing.assert_allclose(conv2d(x, K["ungroup"](w, groups=2)), conv2d(x, w, groups=2), atol=1e-12)


@pytest.mark.parametrize("factor", [None, 0.5, 0.0])
@pytest.mark.parametrize("with_bias", [False, True])
def test_fold_bn_equals_conv_then_batchnorm(factor, with_bias):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 6, 6))
    w = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4) if with_bias else None
    mean, var = rng.standard_normal(4), rng.uniform(0.5, 2, 4)
    gamma, beta = rng.standard_normal(4), rng.standard_normal(4)
    eps = 1e-3
    f = None if factor is None else np.array([factor])
    stored_mean = mean if factor is None else mean * factor
    stored_var = var if factor is None else var * factor
    # reference: conv, then Caffe BatchNorm (statistics divided by the factor; factor 0 => zero stats), then Scale
    y = conv2d(x, w, b)
    s = 1.0 if factor is None else (0.0 if factor == 0 else 1.0 / factor)
    m_true, v_true = stored_mean * s, stored_var * s
    ref = (y - m_true[None, :, None, None]) / np.sqrt(v_true + eps)[None, :, None, None]
    ref = ref * gamma[None, :, None, None] + beta[None, :, None, None]

    w2 = K["fold_bn"](w, var=stored_var, eps=eps, factor=f, gamma=gamma)
    b2 = K["fold_bn_bias"](stored_mean, var=stored_var, eps=eps, factor=f, gamma=gamma, beta=beta, bias=b)
    np.testing.assert_allclose(conv2d(x, w2, b2), ref, rtol=1e-10, atol=1e-10)
    assert infer("fold_bn", w.shape, var=Meta((4,), "float32"), eps=eps).shape == w.shape


def test_fold_bn_rejects_channel_mismatch():
    with pytest.raises(TransformError, match="var has shape \\(5,\\) \\(5 values\\) but the layer has 4 channels"):
        infer("fold_bn", (4, 3, 1, 1), var=Meta((5,), "float32"), eps=1e-5)
    with pytest.raises(TransformError, match="factor must hold one value"):
        infer("fold_bn", (4, 3, 1, 1), var=Meta((4,), "float32"), eps=1e-5, factor=Meta((2,), "float32"))


# -- individual transforms ----------------------------------------------------------------

def test_take_reorders_bgr_to_rgb():
    w = arange(2, 3, 1, 1)
    out = K["take"](w, indices=[2, 1, 0], axis=1)
    np.testing.assert_array_equal(out[:, 0], w[:, 2])
    np.testing.assert_array_equal(out[:, 2], w[:, 0])


def test_take_and_slice_bounds_are_checked():
    with pytest.raises(TransformError, match="index 20 out of bounds for dimension #1 of size 5"):
        infer("take", (2, 5), indices=[0, 20], axis=1)
    with pytest.raises(TransformError, match="slice stop 9 out of bounds for dimension #0 of size 4"):
        infer("slice", (4,), start=0, stop=9)
    assert infer("slice", (10, 2), start=2, stop=8, step=3).shape == (2, 2)
    np.testing.assert_array_equal(K["slice"](arange(10), start=2, stop=8, step=3), [2, 5])


def test_reverse():
    np.testing.assert_array_equal(K["reverse"](arange(2, 3), axis=1), [[2, 1, 0], [5, 4, 3]])


def test_reshape_errors_name_counts():
    with pytest.raises(TransformError, match="cannot reshape 12 elements \\(shape \\(3, 4\\)\\) into \\(5, -1\\)"):
        infer("reshape", (3, 4), shape=[5, -1])
    with pytest.raises(TransformError, match="only one dimension may be -1"):
        infer("reshape", (3, 4), shape=[-1, -1])
    with pytest.raises(TransformError, match="into \\(5,\\) \\(5 elements\\)"):
        infer("reshape", (3, 4), shape=[5])


def test_transpose_errors():
    with pytest.raises(TransformError, match="name 3 axes but the tensor has 2"):
        infer("transpose", (2, 3), axes=[0, 1, 2])
    with pytest.raises(TransformError, match="not a permutation"):
        infer("transpose", (2, 3), axes=[0, 0])


def test_split_errors():
    with pytest.raises(TransformError, match="cannot split dimension #0 of size 5 into 2 equal parts"):
        infer("split", (5, 3), parts=2, take=0)
    with pytest.raises(TransformError, match="take 2 out of range for 2 parts"):
        infer("split", (4, 3), parts=2, take=2)


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


def test_cast():
    import ml_dtypes

    out = K["cast"](arange(3), dtype="bfloat16")
    assert out.dtype == ml_dtypes.bfloat16
    with pytest.raises(TransformError, match="NaN"):
        K["cast"](np.array([np.nan]), dtype="int32")
    with pytest.raises(TransformError, match="do not fit int8"):
        K["cast"](np.array([300.0]), dtype="int8")
    assert infer("cast", (2,), dtype="int64") == Meta((2,), "int64")


def test_fill_with_condition():
    x = arange(3)
    np.testing.assert_array_equal(K["fill"](x, value=1.0, when=True), [1, 1, 1])
    np.testing.assert_array_equal(K["fill"](x, value=1.0, when=False), x)


def test_group_refuses_non_block_diagonal():
    dense = np.ones((4, 4, 1, 1), dtype=np.float32)
    with pytest.raises(TransformError, match="not block-diagonal"):
        K["group"](dense, groups=2)


def test_registry_refuses_double_registration():
    from mapspec.transforms.registry import Arg, transform

    with pytest.raises(ValueError, match="registered twice"):
        transform("reshape", kernel=lambda x: x, args={"shape": Arg("ints")})(lambda meta, shape: meta)


@settings(max_examples=50)
@given(shapes)
def test_concat_inference_matches_kernel(shape):
    x = arange(*shape)
    out = K["concat"](x, after=[x, x], axis=-1)
    assert infer("concat", shape, after=[Meta(shape, "float32")] * 2, axis=-1).shape == out.shape


def test_squeeze_and_unsqueeze():
    w = arange(5, 4, 1, 1)
    flat = K["squeeze"](w, axes=[2, 3])
    assert flat.shape == (5, 4) and np.shares_memory(flat, w)
    np.testing.assert_array_equal(K["unsqueeze"](flat, axes=[2, 3]), w)
    assert infer("unsqueeze", (5, 4), axes=[0, -1]).shape == (1, 5, 4, 1)
    with pytest.raises(TransformError, match="cannot squeeze axis 1: it has size 4, not 1"):
        infer("squeeze", (5, 4, 1, 1), axes=[1])
