"""mapspec.kernels against numpy, and the bfloat16 cast against torch, bit for bit."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapspec.formats.chunks import c_order_chunks
from mapspec.kernels import copy_strided
from mapspec.transforms.cast import cast

DTYPES = [np.float32, np.float16, np.int64, np.uint8, ml_dtypes.bfloat16, np.float64]


@pytest.mark.slow  # property test over shapes: ~5 s
@settings(max_examples=60, deadline=None)
@given(shape=st.lists(st.integers(1, 70), min_size=1, max_size=4), dtype=st.sampled_from(DTYPES),
       data=st.data())
def test_copy_strided_equals_numpy(shape, dtype, data):
    src = (np.arange(int(np.prod(shape))) % 251).astype(dtype).reshape(shape)
    axes = data.draw(st.permutations(range(len(shape))))
    view = src.transpose(axes)
    if data.draw(st.booleans()) and view.shape[-1] > 1:
        view = view[..., ::-1]  # negative strides too
    out = np.empty(view.shape, view.dtype)
    copy_strided(out, view)
    assert out.tobytes() == np.ascontiguousarray(view).tobytes()


def test_transposed_matrix_through_chunks():
    a = np.arange(300 * 517, dtype=np.float32).reshape(300, 517)
    got = b"".join(bytes(p) for p in c_order_chunks(a.T, limit=4096))
    assert got == np.ascontiguousarray(a.T).tobytes()


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
def test_bfloat16_cast_bit_exact_against_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2 ** 32, size=1 << 18, dtype=np.uint64).astype(np.uint32)
    edge = np.array([0, 0x80000000, 1, 0x00008000, 0x00018000, 0x3F808000, 0x3F818000, 0x7F7FFFFF, 0xFF7FFFFF,
                     0x7F800000, 0xFF800000, 0x7F7F8000, 0x0080_0000, 0x007F_FFFF], np.uint32)
    x = np.concatenate([bits, edge]).view(np.float32)
    # float32 subnormals round to bf16 zero: the kernel's bits are what is compared here, so underflow is allowed
    # (numeric safety refuses it by default: tests/test_hostile_numeric.py)
    ours = cast(x, "bfloat16", frozenset({"underflow"})).view(np.uint16)
    ref = torch.from_numpy(x.copy()).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    nan = np.isnan(x)
    assert np.array_equal(ours[~nan], ref[~nan])
    # NaN stays NaN, sign kept (torch canonicalises NaN payloads, so only NaN-ness is compared with it)
    assert np.isnan(cast(x[nan], "bfloat16").astype(np.float32)).all()
    assert np.array_equal(np.signbit(cast(x[nan], "bfloat16").astype(np.float32)), np.signbit(x[nan]))
