"""The Caffe executor's layer kernels, one by one, against independent computations.

Expected values come from plain numpy loops transcribing the formulas of Caffe's CPU
layer code (``pooling_layer.cpp``, ``lrn_layer.cpp``, ...), from hand-computed numbers on
tiny ``np.arange`` inputs, or from a different torch code path; never from the kernels
under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from google.protobuf import text_format  # noqa: E402

from mapspec.frameworks.caffe.ops import KERNELS, LayerError, Unsupported  # noqa: E402
from mapspec.frameworks.caffe.ops.common import BlobError  # noqa: E402
from mapspec.frameworks.caffe.geometry import pooled_size  # noqa: E402
from mapspec.frameworks.caffe import schema  # noqa: E402

FLT_MAX = float(np.finfo(np.float32).max)


def layer(text: str):
    """A LayerParameter from prototxt text (type, params, bottoms, tops)."""
    return text_format.Parse(text, schema.LayerParameter())


def run(text: str, *bottoms, blobs=()):
    """Run one kernel on numpy inputs; numpy outputs."""
    p = layer(text)
    ts = [torch.from_numpy(np.asarray(b, dtype=np.float32).copy()) for b in bottoms]
    bs = [torch.from_numpy(np.asarray(b, dtype=np.float32).copy()) for b in blobs]
    with torch.no_grad():
        return [t.numpy() for t in KERNELS[p.type](p, ts, bs)]


def arange(*shape, start=0.0, step=1.0):
    return (start + step * np.arange(int(np.prod(shape)), dtype=np.float64)).reshape(shape)


def close(a, b, tol=1e-5):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


# -- convolution family ------------------------------------------------------------

def np_conv2d(x, w, b, stride, pad, dil, group):
    """Caffe's cross-correlation (im2col + gemm) as explicit loops."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    oh = (h + 2 * pad[0] - (dil[0] * (kh - 1) + 1)) // stride[0] + 1
    ow = (wd + 2 * pad[1] - (dil[1] * (kw - 1) + 1)) // stride[1] + 1
    y = np.zeros((n, o, oh, ow))
    og = o // group
    for ni in range(n):
        for oc in range(o):
            g = oc // og
            for i in range(oh):
                for j in range(ow):
                    s = 0.0
                    for ci in range(cg):
                        for a in range(kh):
                            for bb in range(kw):
                                hi = i * stride[0] - pad[0] + a * dil[0]
                                wi = j * stride[1] - pad[1] + bb * dil[1]
                                if 0 <= hi < h and 0 <= wi < wd:
                                    s += x[ni, g * cg + ci, hi, wi] * w[oc, ci, a, bb]
                    y[ni, oc, i, j] = s + (b[oc] if b is not None else 0.0)
    return y


def test_convolution_group_dilation_pad_stride_hw():
    x = arange(2, 4, 7, 6, step=0.1)
    w = arange(6, 2, 3, 2, start=-1.0, step=0.05)
    b = arange(6, step=0.5)
    y, = run("type: 'Convolution' convolution_param { num_output: 6 group: 2 kernel_h: 3 kernel_w: 2 "
             "pad_h: 2 pad_w: 1 stride_h: 2 stride_w: 1 dilation: 2 }", x, blobs=[w, b])
    close(y, np_conv2d(x, w, b, (2, 1), (2, 1), (2, 2), 2))


def test_convolution_repeated_fields_and_no_bias():
    x = arange(1, 3, 5, 5, step=0.3)
    w = arange(4, 3, 3, 1, start=2.0, step=-0.1)
    y, = run("type: 'Convolution' convolution_param { num_output: 4 bias_term: false kernel_size: 3 "
             "kernel_size: 1 pad: 1 pad: 0 stride: 2 stride: 1 }", x, blobs=[w])
    close(y, np_conv2d(x, w, None, (2, 1), (1, 0), (1, 1), 1))


def test_convolution_depthwise_and_several_bottoms():
    x1, x2 = arange(1, 3, 4, 4), arange(1, 3, 4, 4, start=5.0, step=-0.5)
    w = arange(3, 1, 3, 3, step=0.01)
    b = np.array([1.0, -1.0, 0.5])
    y1, y2 = run("type: 'Convolution' convolution_param { num_output: 3 group: 3 kernel_size: 3 pad: 1 }",
                 x1, x2, blobs=[w, b])
    close(y1, np_conv2d(x1, w, b, (1, 1), (1, 1), (1, 1), 3))
    close(y2, np_conv2d(x2, w, b, (1, 1), (1, 1), (1, 1), 3))


def np_deconv2d(x, w, b, stride, pad, group):
    """Transposed convolution as a scatter: every input pixel adds its weighted kernel."""
    n, c, h, wd = x.shape
    _, og, kh, kw = w.shape
    oh, ow = stride[0] * (h - 1) + kh - 2 * pad[0], stride[1] * (wd - 1) + kw - 2 * pad[1]
    full = np.zeros((n, og * group, stride[0] * (h - 1) + kh, stride[1] * (wd - 1) + kw))
    cg = c // group
    for ni in range(n):
        for ci in range(c):
            g = ci // cg
            for i in range(h):
                for j in range(wd):
                    full[ni, g * og:(g + 1) * og, i * stride[0]:i * stride[0] + kh, j * stride[1]:j * stride[1] + kw] \
                        += x[ni, ci, i, j] * w[ci]
    y = full[:, :, pad[0]:pad[0] + oh, pad[1]:pad[1] + ow]
    return y + b.reshape(1, -1, 1, 1)


def test_deconvolution_group_stride_pad():
    x = arange(1, 4, 3, 3, step=0.2)
    w = arange(4, 3, 3, 2, start=-1.0, step=0.03)  # (C_in, num_output / group, kh, kw)
    b = arange(6, step=-0.25)
    y, = run("type: 'Deconvolution' convolution_param { num_output: 6 group: 2 kernel_h: 3 kernel_w: 2 "
             "stride: 2 pad: 1 }", x, blobs=[w, b])
    close(y, np_deconv2d(x, w, b, (2, 2), (1, 1), 2))
    assert y.shape == (1, 6, 2 * 2 + 3 - 2, 2 * 2 + 2 - 2)


def test_inner_product_axis_and_transpose():
    x = arange(2, 3, 2, 2, step=0.1)
    w = arange(5, 12, start=1.0, step=-0.01)
    b = arange(5)
    y, = run("type: 'InnerProduct' inner_product_param { num_output: 5 }", x, blobs=[w, b])
    close(y, x.reshape(2, 12) @ w.T + b)
    y2, = run("type: 'InnerProduct' inner_product_param { num_output: 5 axis: 2 transpose: true }",
              x, blobs=[arange(4, 5, step=0.1), b])
    close(y2, np.einsum("abk,kn->abn", x.reshape(2, 3, 4), arange(4, 5, step=0.1)) + b)


def test_inner_product_legacy_4d_blobs_are_accepted():
    x = arange(2, 6)
    w, b = arange(1, 1, 3, 6, step=0.5), arange(1, 1, 1, 3)
    y, = run("type: 'InnerProduct' inner_product_param { num_output: 3 }", x, blobs=[w, b])
    close(y, x @ w.reshape(3, 6).T + b.reshape(3))


def test_wrong_blob_shape_is_a_blob_error():
    with pytest.raises(BlobError, match=r"blob 0 \(weights\) has shape \(3, 3, 3, 3\) but this layer needs "
                                        r"\(3, 1, 3, 3\)") as e:
        run("type: 'Convolution' convolution_param { num_output: 3 group: 3 kernel_size: 3 }",
            arange(1, 3, 5, 5), blobs=[arange(3, 3, 3, 3), arange(3)])
    assert e.value.index == 0


def test_convolution_errors():
    with pytest.raises(LayerError, match="group 2 must divide"):
        run("type: 'Convolution' convolution_param { num_output: 3 group: 2 kernel_size: 1 }",
            arange(1, 4, 2, 2), blobs=[arange(3, 2, 1, 1), arange(3)])
    with pytest.raises(LayerError, match="needs 2 .*bias_term: true"):
        run("type: 'Convolution' convolution_param { num_output: 3 kernel_size: 1 }",
            arange(1, 4, 2, 2), blobs=[arange(3, 4, 1, 1)])
    with pytest.raises(LayerError, match="either kernel_size or kernel_h/w"):
        run("type: 'Convolution' convolution_param { num_output: 3 kernel_size: 1 kernel_h: 1 kernel_w: 1 }",
            arange(1, 4, 2, 2), blobs=[arange(3, 4, 1, 1), arange(3)])
    with pytest.raises(LayerError, match="smaller than the kernel extent"):
        run("type: 'Convolution' convolution_param { num_output: 1 kernel_size: 5 }",
            arange(1, 1, 3, 3), blobs=[arange(1, 1, 5, 5), arange(1)])


def test_embed():
    x = np.array([[0.0, 3.0], [2.0, 2.0]])
    w, b = arange(4, 3), np.array([0.5, -0.5, 1.0])
    y, = run("type: 'Embed' embed_param { num_output: 3 input_dim: 4 }", x, blobs=[w, b])
    close(y, w[x.astype(int)] + b)
    with pytest.raises(LayerError, match="index 4 out of bounds for input_dim 4"):
        run("type: 'Embed' embed_param { num_output: 3 input_dim: 4 }", np.array([4.0]), blobs=[w, b])


# -- normalisation -------------------------------------------------------------------

def test_batch_norm_divides_by_factor():
    x = arange(2, 3, 2, 2, start=-3.0, step=0.25)
    mean, var, factor = np.array([2.0, -4.0, 8.0]), np.array([4.0, 8.0, 0.5]), np.array([2.0])
    y, = run("type: 'BatchNorm' batch_norm_param { eps: 0.001 }", x, blobs=[mean, var, factor])
    m, v = (mean / 2).reshape(1, 3, 1, 1), (var / 2).reshape(1, 3, 1, 1)
    close(y, (x - m) / np.sqrt(v + 0.001))


def test_batch_norm_factor_zero_means_zero_statistics():
    x = arange(1, 2, 3)
    y, = run("type: 'BatchNorm'", x, blobs=[np.array([5.0, 6.0]), np.array([7.0, 8.0]), np.array([0.0])])
    close(y, x / np.sqrt(1e-5))  # default eps 1e-5, statistics scaled by 0


def test_batch_norm_explicit_batch_statistics():
    x = arange(3, 2, 2, start=1.0, step=1.5) ** 1.5
    y, = run("type: 'BatchNorm' batch_norm_param { use_global_stats: false eps: 0.01 }",
             x, blobs=[np.zeros(2), np.zeros(2), np.ones(1)])
    m = x.mean(axis=(0, 2), keepdims=True)
    v = ((x - m) ** 2).mean(axis=(0, 2), keepdims=True)
    close(y, (x - m) / np.sqrt(v + 0.01))


@pytest.mark.parametrize("params, pshape, view", [
    ("", (3,), (1, 3, 1, 1)),
    ("axis: 1 num_axes: 2", (3, 4), (1, 3, 4, 1)),
    ("axis: -1", (5,), (1, 1, 1, 5)),
    ("axis: 2 num_axes: -1", (4, 5), (1, 1, 4, 5)),
    ("num_axes: 0", (), (1, 1, 1, 1)),
    ("axis: 0 num_axes: 1", (2,), (2, 1, 1, 1)),
])
def test_scale_axes_with_bias(params, pshape, view):
    x = arange(2, 3, 4, 5, step=0.1)
    s = arange(*pshape, start=1.0, step=0.5) if pshape else np.array(1.5)
    b = arange(*pshape, start=-1.0, step=0.25) if pshape else np.array(-0.75)
    y, = run(f"type: 'Scale' scale_param {{ {params} bias_term: true }}", x, blobs=[s, b])
    close(y, x * s.reshape(view) + b.reshape(view))
    y2, = run(f"type: 'Bias' bias_param {{ {params} }}", x, blobs=[b])
    close(y2, x + b.reshape(view))


def test_scale_two_bottoms():
    x, s = arange(2, 3, 4), arange(2, 3, start=1.0)
    b = arange(2, 3, step=-1.0)
    y, = run("type: 'Scale' scale_param { axis: 0 bias_term: true }", x, s, blobs=[b])
    close(y, x * s[:, :, None] + b[:, :, None])
    y2, = run("type: 'Bias' bias_param { axis: 0 }", x, s)
    close(y2, x + s[:, :, None])
    with pytest.raises(LayerError, match="does not match input axes"):
        run("type: 'Scale'", x, arange(4))


def np_lrn_across(x, size, alpha, beta, k):
    n, c, h, w = x.shape
    y = np.zeros_like(x)
    pre = (size - 1) // 2
    for ci in range(c):
        lo, hi = max(0, ci - pre), min(c, ci - pre + size)
        s = k + alpha / size * (x[:, lo:hi] ** 2).sum(axis=1)
        y[:, ci] = x[:, ci] * s ** -beta
    return y


def test_lrn_across_channels():
    x = arange(2, 7, 2, 3, start=-2.0, step=0.1)
    y, = run("type: 'LRN' lrn_param { local_size: 5 alpha: 0.3 beta: 0.75 k: 2 }", x)
    close(y, np_lrn_across(x, 5, 0.3, 0.75, 2.0))
    # hand-checked: one channel at a border, x = [1, 2], size 3, alpha 3, beta 1, k 1
    y2, = run("type: 'LRN' lrn_param { local_size: 3 alpha: 3 beta: 1 }", np.array([1.0, 2.0]).reshape(1, 2, 1, 1))
    close(y2.ravel(), [1 / (1 + 1 * (1 + 4)), 2 / (1 + 1 * (1 + 4))])


def test_lrn_within_channel_uses_shift_one_and_window_area():
    x = arange(1, 2, 4, 5, start=-1.0, step=0.2)
    size, alpha, beta = 3, 0.6, 0.5
    y, = run(f"type: 'LRN' lrn_param {{ local_size: {size} alpha: {alpha} beta: {beta} k: 7 "
             f"norm_region: WITHIN_CHANNEL }}", x)
    exp = np.zeros_like(x)
    for i in range(4):
        for j in range(5):
            win = x[:, :, max(0, i - 1):i + 2, max(0, j - 1):j + 2]
            exp[:, :, i, j] = x[:, :, i, j] * (1 + alpha / size ** 2 * (win ** 2).sum(axis=(2, 3))) ** -beta
    close(y, exp)  # k = 7 is ignored by Caffe here; the divisor is size^2 even at the borders


def test_lrn_windows_wider_than_the_input():
    x = arange(1, 3, 2, 2, start=0.5, step=0.25)
    y, = run("type: 'LRN' lrn_param { local_size: 100001 alpha: 2 beta: 0.5 }", x)
    close(y, x * (1 + 2 / 100001 * (x ** 2).sum(axis=1, keepdims=True)) ** -0.5)
    y, = run("type: 'LRN' lrn_param { local_size: 100001 alpha: 2 beta: 0.5 norm_region: WITHIN_CHANNEL }", x)
    close(y, x * (1 + 2 / 100001 ** 2 * (x ** 2).sum(axis=(2, 3), keepdims=True)) ** -0.5)


def test_absurd_geometry_is_refused_before_allocating():
    x = arange(1, 2, 4, 4)
    with pytest.raises(LayerError, match="more than Caffe's limit of 2147483647 per blob"):
        run("type: 'Deconvolution' convolution_param { num_output: 2 kernel_size: 2 stride: 1000000 }",
            x, blobs=[arange(2, 2, 2, 2), arange(2)])
    with pytest.raises(LayerError, match="more than Caffe's limit"):
        run("type: 'Convolution' convolution_param { num_output: 2 kernel_size: 1 pad: 100000 }",
            x, blobs=[arange(2, 2, 1, 1), arange(2)])
    with pytest.raises(LayerError, match="more than Caffe's limit"):
        run("type: 'Pooling' pooling_param { kernel_size: 1000000000 pad: 999999999 }", x)


def test_lrn_even_size_is_refused():
    with pytest.raises(LayerError, match="odd values for local_size"):
        run("type: 'LRN' lrn_param { local_size: 4 }", arange(1, 4, 2, 2))


# -- pooling ------------------------------------------------------------------------

def np_caffe_pool(x, method, kh, kw, sh, sw, ph, pw, ceil=True):
    """pooling_layer.cpp's Reshape and Forward_cpu, transcribed."""
    n, c, h, w = x.shape
    rnd = math.ceil if ceil else math.floor
    oh = int(rnd((h + 2 * ph - kh) / sh)) + 1
    ow = int(rnd((w + 2 * pw - kw) / sw)) + 1
    if ph or pw:
        if (oh - 1) * sh >= h + ph:
            oh -= 1
        if (ow - 1) * sw >= w + pw:
            ow -= 1
    y = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * sh - ph, j * sw - pw
            if method == "MAX":
                he, we = min(hs + kh, h), min(ws + kw, w)
                hs, ws = max(hs, 0), max(ws, 0)
                win = x[:, :, hs:he, ws:we]
                y[:, :, i, j] = win.max(axis=(2, 3)) if win.size else -FLT_MAX  # Caffe starts at -FLT_MAX
            else:
                he, we = min(hs + kh, h + ph), min(ws + kw, w + pw)
                size = (he - hs) * (we - ws)
                hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
                with np.errstate(invalid="ignore", divide="ignore"):
                    y[:, :, i, j] = x[:, :, hs:he, ws:we].sum(axis=(2, 3)) / size
    return y


def test_ave_pool_hand_checked_border_divisors():
    # 3x3 arange, k 2, s 2, pad 1: ceil((3+2-2)/2)+1 = 3, pad correction (3-1)*2 >= 3+1 -> 2x2.
    # Every window is clipped to 2x2 by the padded bounds: divisor 4 everywhere.
    y, = run("type: 'Pooling' pooling_param { pool: AVE kernel_size: 2 stride: 2 pad: 1 }", arange(1, 1, 3, 3))
    close(y[0, 0], [[0 / 4, (1 + 2) / 4], [(3 + 6) / 4, (4 + 5 + 7 + 8) / 4]])
    # 4x4 arange, k 3, s 2, pad 1: 3x3 output.  Top-left window rows/cols -1..1 -> divisor 9 (padding
    # counts); the last window starts at 3 and is clipped to the padded bound 5: 2x2 = 4, not 9, not 1.
    y, = run("type: 'Pooling' pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }", arange(1, 1, 4, 4))
    assert y.shape == (1, 1, 3, 3)
    assert y[0, 0, 0, 0] == pytest.approx((0 + 1 + 4 + 5) / 9)
    assert y[0, 0, 0, 2] == pytest.approx((3 + 7) / 6)
    assert y[0, 0, 2, 2] == pytest.approx(15 / 4)


def test_max_pool_ceil_rounding_hand_checked():
    # 5x5 arange, k 2, s 2: Caffe's ceil gives 3x3 (the last row/column window holds one pixel).
    y, = run("type: 'Pooling' pooling_param { pool: MAX kernel_size: 2 stride: 2 }", arange(1, 1, 5, 5))
    close(y[0, 0], [[6, 8, 9], [16, 18, 19], [21, 23, 24]])
    y, = run("type: 'Pooling' pooling_param { pool: MAX kernel_size: 2 stride: 2 round_mode: FLOOR }",
             arange(1, 1, 5, 5))
    close(y[0, 0], [[6, 8], [16, 18]])
    y, = run("type: 'Pooling' pooling_param { pool: MAX kernel_size: 2 stride: 2 ceil_mode: false }",
             arange(1, 1, 5, 5))
    close(y[0, 0], [[6, 8], [16, 18]])


def test_densenet_pool1_rounding():
    # DenseNet's pool1 (k 3, s 2, pad 1, ceil_mode: false): 112 -> 56; Caffe's default ceil -> 57.
    assert pooled_size(112, 3, 2, 1, ceil=False) == 56
    assert pooled_size(112, 3, 2, 1, ceil=True) == 57
    # the pad correction: ceil((6+2-2)/2)+1 = 4, but the 4th window would start at 6 >= 6+1? no;
    # with 5: ceil((5+2-2)/2)+1 = 4 and (4-1)*2 = 6 >= 5+1 -> 3
    assert pooled_size(5, 2, 2, 1, ceil=True) == 3


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("geom", [
    (3, 3, 2, 2, 0, 0), (3, 3, 2, 2, 1, 1), (2, 3, 2, 1, 1, 0), (3, 2, 3, 2, 2, 1), (4, 4, 3, 3, 1, 2),
    (1, 1, 2, 2, 0, 0),
])
@pytest.mark.parametrize("ceil", [True, False])
def test_pooling_against_transcribed_loops(method, geom, ceil):
    kh, kw, sh, sw, ph, pw = geom
    x = np.sin(arange(2, 3, 7, 8, step=0.37)) * 10  # distinct values, negative ones too
    text = (f"type: 'Pooling' pooling_param {{ pool: {method} kernel_h: {kh} kernel_w: {kw} stride_h: {sh} "
            f"stride_w: {sw} pad_h: {ph} pad_w: {pw} {'' if ceil else 'round_mode: FLOOR'} }}")
    y, = run(text, x)
    close(y, np_caffe_pool(x, method, kh, kw, sh, sw, ph, pw, ceil))


@settings(max_examples=150, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), kh=st.integers(1, 5), kw=st.integers(1, 5),
       sh=st.integers(1, 4), sw=st.integers(1, 4), ph=st.integers(0, 4), pw=st.integers(0, 4),
       method=st.sampled_from(["MAX", "AVE"]), ceil=st.booleans())
def test_pooling_property(h, w, kh, kw, sh, sw, ph, pw, method, ceil):
    """Any geometry Caffe accepts (pad < kernel) gives Caffe's loop result; others a LayerError."""
    x = np.cos(arange(1, 2, h, w, step=0.7)) * 5
    text = (f"type: 'Pooling' pooling_param {{ pool: {method} kernel_h: {kh} kernel_w: {kw} stride_h: {sh} "
            f"stride_w: {sw} pad_h: {ph} pad_w: {pw} {'' if ceil else 'round_mode: FLOOR'} }}")
    if ((ph or pw) and (ph >= kh or pw >= kw)):
        with pytest.raises(LayerError, match="must be smaller than the kernel"):
            run(text, x)
        return
    rnd = math.ceil if ceil else math.floor
    if min(int(rnd((h + 2 * ph - kh) / sh)) + 1, int(rnd((w + 2 * pw - kw) / sw)) + 1) <= 0:
        with pytest.raises(LayerError, match="smaller than the pooling window"):
            run(text, x)
        return
    y, = run(text, x)
    np.testing.assert_allclose(y, np_caffe_pool(x, method, kh, kw, sh, sw, ph, pw, ceil), rtol=1e-5, atol=1e-5)


def test_pad_correction_applies_to_both_axes_when_one_is_padded():
    # pad_h 1, pad_w 0: width 2, kernel 1, stride 2 gives ceil(1/2)+1 = 2 columns, but because the layer
    # has padding Caffe also checks the width: (2-1)*2 >= 2+0, so 1 column (found by the property test).
    y, = run("type: 'Pooling' pooling_param { pool: MAX kernel_h: 2 kernel_w: 1 stride_h: 1 stride_w: 2 pad_h: 1 "
             "pad_w: 0 }", arange(1, 1, 1, 2))
    assert y.shape == (1, 1, 2, 1)
    close(y[0, 0, :, 0], [0, 0])


def test_pooling_windows_past_the_input_follow_caffe():
    # kernel 1 < stride 2 on 4 columns with ceil rounding: ceil(3/2)+1 = 3 windows, the last starting at
    # column 4, outside the input.  Caffe: MAX -> -FLT_MAX (its initial value), AVE -> 0/0 = NaN.
    x = arange(1, 1, 1, 4)
    mx, = run("type: 'Pooling' pooling_param { pool: MAX kernel_size: 1 stride: 2 }", x)
    close(mx[0, 0, 0], [0, 2, -FLT_MAX])
    av, = run("type: 'Pooling' pooling_param { pool: AVE kernel_size: 1 stride: 2 }", x)
    assert av[0, 0, 0, :2].tolist() == [0, 2] and np.isnan(av[0, 0, 0, 2])


def test_global_pooling():
    x = arange(2, 3, 4, 5, step=0.5)
    mx, = run("type: 'Pooling' pooling_param { pool: MAX global_pooling: true }", x)
    av, = run("type: 'Pooling' pooling_param { pool: AVE global_pooling: true }", x)
    close(mx, x.max(axis=(2, 3), keepdims=True))
    close(av, x.mean(axis=(2, 3), keepdims=True))


def test_pooling_errors():
    with pytest.raises(LayerError, match="global_pooling: true, the filter size cannot be specified"):
        run("type: 'Pooling' pooling_param { global_pooling: true kernel_size: 2 }", arange(1, 1, 2, 2))
    with pytest.raises(LayerError, match="must be smaller than the kernel"):
        run("type: 'Pooling' pooling_param { kernel_size: 2 pad: 2 }", arange(1, 1, 4, 4))
    with pytest.raises(Unsupported, match="STOCHASTIC"):
        run("type: 'Pooling' pooling_param { pool: STOCHASTIC kernel_size: 2 }", arange(1, 1, 4, 4))
    with pytest.raises(LayerError, match="round_mode and ceil_mode disagree"):
        run("type: 'Pooling' pooling_param { kernel_size: 2 round_mode: CEIL ceil_mode: false }",
            arange(1, 1, 4, 4))


# -- element-wise ------------------------------------------------------------------

X = arange(2, 3, 2, 2, start=-2.4, step=0.2)


def test_relu_and_prelu():
    close(run("type: 'ReLU'", X)[0], np.maximum(X, 0))
    close(run("type: 'ReLU' relu_param { negative_slope: 0.1 }", X)[0], np.where(X > 0, X, 0.1 * X))
    a = np.array([0.25, -0.5, 2.0])
    close(run("type: 'PReLU'", X, blobs=[a])[0], np.where(X > 0, X, X * a.reshape(1, 3, 1, 1)))
    close(run("type: 'PReLU' prelu_param { channel_shared: true }", X, blobs=[np.array(0.3)])[0],
          np.where(X > 0, X, 0.3 * X))
    with pytest.raises(BlobError, match=r"has shape \(1,\) but this layer needs \(\)"):
        run("type: 'PReLU' prelu_param { channel_shared: true }", X, blobs=[np.array([0.3])])


def test_smooth_activations():
    close(run("type: 'Sigmoid'", X)[0], 1 / (1 + np.exp(-X)))
    close(run("type: 'TanH'", X)[0], np.tanh(X))
    close(run("type: 'AbsVal'", X)[0], np.abs(X))
    close(run("type: 'BNLL'", X)[0], np.log1p(np.exp(X)))
    close(run("type: 'ELU' elu_param { alpha: 0.5 }", X)[0], np.where(X > 0, X, 0.5 * (np.exp(X) - 1)))
    close(run("type: 'Threshold' threshold_param { threshold: 0.1 }", X)[0], (X > 0.1).astype(float))
    close(run("type: 'Clip' clip_param { min: -1 max: 0.5 }", X)[0], np.clip(X, -1, 0.5))


def test_power_exp_log():
    close(run("type: 'Power' power_param { power: 2 scale: 0.5 shift: 1 }", X)[0], (1 + 0.5 * X) ** 2)
    close(run("type: 'Power' power_param { power: 0 scale: 3 }", X)[0], np.ones_like(X))
    close(run("type: 'Power' power_param { power: 3 scale: 0 shift: 2 }", X)[0], np.full_like(X, 8.0))
    close(run("type: 'Exp' exp_param { base: 2 scale: 0.5 shift: 1 }", X)[0], 2 ** (1 + 0.5 * X))
    close(run("type: 'Exp'", X)[0], np.exp(X))
    pos = X + 3
    close(run("type: 'Log' log_param { base: 10 scale: 2 shift: 1 }", pos)[0], np.log10(1 + 2 * pos))
    close(run("type: 'Log'", pos)[0], np.log(pos))


# -- structure -----------------------------------------------------------------------

def test_eltwise():
    a, b, c = X, X[:, ::-1] * 0.5, np.cos(X)
    close(run("type: 'Eltwise'", a, b, c)[0], a + b + c)
    close(run("type: 'Eltwise' eltwise_param { operation: SUM coeff: 2 coeff: -1 coeff: 0.5 }", a, b, c)[0],
          2 * a - b + 0.5 * c)
    close(run("type: 'Eltwise' eltwise_param { operation: PROD }", a, b, c)[0], a * b * c)
    close(run("type: 'Eltwise' eltwise_param { operation: MAX }", a, b, c)[0], np.maximum(np.maximum(a, b), c))
    with pytest.raises(LayerError, match="only takes coefficients for summation"):
        run("type: 'Eltwise' eltwise_param { operation: PROD coeff: 1 coeff: 1 }", a, b)
    with pytest.raises(LayerError, match="does not broadcast"):
        run("type: 'Eltwise'", a, a[:1])
    with pytest.raises(LayerError, match="one coefficient per bottom"):
        run("type: 'Eltwise' eltwise_param { coeff: 1 }", a, b)


def test_concat_slice_split():
    a, b = arange(2, 1, 3), arange(2, 2, 3, start=100.0)
    close(run("type: 'Concat'", a, b)[0], np.concatenate([a, b], axis=1))
    close(run("type: 'Concat' concat_param { axis: -1 }", a, a)[0], np.concatenate([a, a], axis=2))
    close(run("type: 'Concat' concat_param { concat_dim: 0 }", a, a)[0], np.concatenate([a, a], axis=0))
    with pytest.raises(LayerError, match="either axis or concat_dim"):
        run("type: 'Concat' concat_param { axis: 1 concat_dim: 1 }", a, b)
    x = arange(2, 6, 2)
    parts = run("type: 'Slice' top: 'a' top: 'b' top: 'c' slice_param { slice_point: 1 slice_point: 4 }", x)
    for got, want in zip(parts, (x[:, :1], x[:, 1:4], x[:, 4:])):
        close(got, want)
    parts = run("type: 'Slice' top: 'a' top: 'b' slice_param { axis: 2 }", x)
    close(parts[0], x[:, :, :1])
    close(parts[1], x[:, :, 1:])
    with pytest.raises(LayerError, match="evenly divide"):
        run("type: 'Slice' top: 'a' top: 'b' top: 'c' top: 'd'", x)
    s1, s2 = run("type: 'Split' top: 'a' top: 'b'", x)
    close(s1, x)
    close(s2, x)


def test_flatten_reshape_crop_softmax_dropout():
    x = arange(2, 3, 4, 5)
    close(run("type: 'Flatten' bottom: 'x' top: 'y'", x)[0], x.reshape(2, 60))
    close(run("type: 'Flatten' bottom: 'x' top: 'y' flatten_param { axis: 1 end_axis: 2 }", x)[0],
          x.reshape(2, 12, 5))
    with pytest.raises(LayerError, match="does not allow in-place"):
        run("type: 'Flatten' bottom: 'x' top: 'x'", x)
    close(run("type: 'Reshape' reshape_param { shape { dim: 0 dim: -1 dim: 10 } }", x)[0], x.reshape(2, 6, 10))
    close(run("type: 'Reshape' reshape_param { axis: 1 num_axes: 2 shape { dim: 12 } }", x)[0], x.reshape(2, 12, 5))
    close(run("type: 'Reshape' reshape_param { axis: -1 num_axes: 0 shape { dim: 1 } }", x)[0],
          x.reshape(2, 3, 4, 5, 1))
    close(run("type: 'Reshape' reshape_param { axis: -2 shape { dim: 5 dim: 1 } }", x)[0], x.reshape(2, 3, 4, 5, 1))
    with pytest.raises(LayerError, match="must be divisible"):
        run("type: 'Reshape' reshape_param { shape { dim: 7 dim: -1 } }", x)
    ref = np.zeros((2, 3, 2, 3))
    close(run("type: 'Crop' crop_param { axis: 2 offset: 1 offset: 2 }", x, ref)[0], x[:, :, 1:3, 2:5])
    close(run("type: 'Crop'", x, ref)[0], x[:, :, :2, :3])
    e = np.exp(x / 10 - (x / 10).max(axis=2, keepdims=True))
    close(run("type: 'Softmax' softmax_param { axis: 2 }", x / 10)[0], e / e.sum(axis=2, keepdims=True))
    close(run("type: 'Dropout' dropout_param { dropout_ratio: 0.7 }", x)[0], x)


# -- DenseBlock ----------------------------------------------------------------------

def np_true_conv3x3(x, w):
    """Tongcheng's CPU convolution_Fwd: out[h, w] += f[i, j] * x[h + 1 - i, w + 1 - j] (zero padded)."""
    n, c, h, wd = x.shape
    o = w.shape[0]
    y = np.zeros((n, o, h, wd))
    for oc in range(o):
        for i in range(h):
            for j in range(wd):
                s = np.zeros(n)
                for ci in range(c):
                    for fi in range(3):
                        for fj in range(3):
                            a, b = i + 1 - fi, j + 1 - fj
                            if 0 <= a < h and 0 <= b < wd:
                                s += w[oc, ci, fi, fj] * x[:, ci, a, b]
                y[:, oc, i, j] = s
    return y


def np_dense_block(x, blobs, n, g, bc, use_factor):
    groups = 10 if bc else 5
    factor = blobs[groups * n][0]
    sf = (0.0 if factor == 0 else 1 / factor) if use_factor else 1.0

    def bn(v, k, t):
        sc, bi, mu, var = (blobs[(k + d) * n + t].reshape(1, -1, 1, 1) for d in range(4))
        return sc * ((v - mu * sf) / np.sqrt(var * sf + 1e-5)) + bi

    feats = x
    for t in range(n):
        y = np.maximum(bn(feats, 1, t), 0)
        if bc:
            w1 = blobs[5 * n + t][:, :, 0, 0]
            y = np.einsum("oc,nchw->nohw", w1, y)
            y = np.maximum(bn(y, 6, t), 0)
        feats = np.concatenate([feats, np_true_conv3x3(y, blobs[t])], axis=1)
    return feats


def dense_blobs(n, c0, g, bc, factor, seed=0):
    rng = np.random.default_rng(seed)
    groups = 10 if bc else 5
    blobs = [None] * (groups * n + 1)
    for t in range(n):
        c = c0 + t * g
        blobs[t] = rng.standard_normal((g, 4 * g if bc else c, 3, 3))
        blobs[n + t], blobs[2 * n + t] = rng.uniform(0.5, 1.5, (1, c, 1, 1)), rng.standard_normal((1, c, 1, 1))
        blobs[3 * n + t], blobs[4 * n + t] = rng.standard_normal((1, c, 1, 1)), rng.uniform(0.5, 2, (1, c, 1, 1))
        if bc:
            blobs[5 * n + t] = rng.standard_normal((4 * g, c, 1, 1))
            blobs[6 * n + t], blobs[7 * n + t] = rng.uniform(0.5, 1.5, (1, 4 * g, 1, 1)), \
                rng.standard_normal((1, 4 * g, 1, 1))
            blobs[8 * n + t], blobs[9 * n + t] = rng.standard_normal((1, 4 * g, 1, 1)), \
                rng.uniform(0.5, 2, (1, 4 * g, 1, 1))
    blobs[groups * n] = np.array([factor])
    return blobs


@pytest.mark.parametrize("bc", [False, True])
@pytest.mark.parametrize("mode", ["gpu", "cpu"])
def test_dense_block_against_tongcheng_cpu_loops(bc, mode):
    n, c0, g = 2, 3, 2
    blobs = dense_blobs(n, c0, g, bc, factor=2.0)
    x = np.sin(arange(2, c0, 4, 5, step=0.3))
    p = layer(f"type: 'DenseBlock' denseblock_param {{ numTransition: {n} initChannel: {c0} growthRate: {g} "
              f"use_BC: {str(bc).lower()} }}")
    kernel = KERNELS["DenseBlock"]
    with torch.no_grad():
        y = kernel(p, [torch.tensor(x, dtype=torch.float32)],
                   [torch.tensor(b, dtype=torch.float32) for b in blobs], factor_mode=mode)[0].numpy()
    assert y.shape == (2, c0 + n * g, 4, 5)
    close(y, np_dense_block(x, blobs, n, g, bc, use_factor=(mode == "cpu")), tol=1e-4)


def test_dense_block_blob_count_and_shapes_are_checked():
    blobs = [torch.zeros(1)] * 7
    p = layer("type: 'DenseBlock' denseblock_param { numTransition: 2 initChannel: 3 growthRate: 2 }")
    with pytest.raises(LayerError, match="needs 11"):
        KERNELS["DenseBlock"](p, [torch.zeros(1, 3, 4, 4)], blobs)
    with pytest.raises(LayerError, match="initChannel is 3 but the input has 5 channels"):
        KERNELS["DenseBlock"](p, [torch.zeros(1, 5, 4, 4)], blobs)
