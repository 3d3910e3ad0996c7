"""ggml block quantization, both ways, and the float encodings a GGUF file stores.

Quantizers (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) give the bytes that llama.cpp's converter writes:
the arithmetic of gguf-py's reference (``gguf.quants.quantize``), in float32, step for step
(the tests compare byte for byte on random, extreme and subnormal values).  Block layouts
(ggml-common.h), little-endian, ``d``/``m`` float16:

* Q8_0: 32 values: ``d``, 32 x int8 ``q``; ``v = d * q``; ``d = max|x| / 127``, ``q`` rounded
  half away from zero.
* Q4_0: 32 values: ``d``, 16 bytes; value ``j < 16`` is the low nibble of byte ``j``, value
  ``16 + j`` its high nibble; ``v = d * (q - 8)``; ``d = x_m / -8`` with ``x_m`` the value of
  largest magnitude (the first such).
* Q4_1: ``d``, ``m``, 16 bytes as Q4_0; ``v = d * q + m``; ``m = min``, ``d = (max - min) / 15``.
* Q5_0: ``d``, 4 bytes ``qh`` (bit ``j``: the fifth bit of value ``j``), 16 bytes of low
  nibbles as Q4_0; ``v = d * (q - 16)``; ``d = x_m / -16``.
* Q5_1: ``d``, ``m``, ``qh``, 16 bytes; ``v = d * q + m``; ``d = (max - min) / 31``.
* Q4_K, Q6_K (dequantize only): see :func:`_q4_k`, :func:`_q6_k`.

:func:`encode` turns a float tensor into one ggml type's bytes, a bounded number of rows at a
time (memory ~ a few MB beyond the input, which may be a memory-mapped view).  It refuses
what would corrupt values: NaN or infinity in a quantized block (the whole block would be
garbage), a value that overflows float16/bfloat16, a block scale beyond float16's range.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from ...errors import MapspecError
from .ggml import by_name

F32 = np.float32


class QuantError(MapspecError):
    """A tensor cannot be encoded in the asked type (the caller names the tensor)."""


# -- dequantize: raw blocks (uint8, (blocks, bytes)) -> float32 (blocks, values) ------------------

def _f16(b: np.ndarray) -> np.ndarray:
    """Columns of little-endian float16 bytes -> float32, shape (blocks, 1)."""
    return np.ascontiguousarray(b).view("<f2").astype(F32)


def _dq8_0(b: np.ndarray) -> np.ndarray:
    return _f16(b[:, :2]) * b[:, 2:].view(np.int8).astype(F32)


def _nibbles(q: np.ndarray) -> np.ndarray:
    return np.concatenate([q & 0x0F, q >> 4], axis=1)


def _dq4_0(b: np.ndarray) -> np.ndarray:
    x = _nibbles(b[:, 2:]).astype(np.int8) - 8
    return _f16(b[:, :2]) * x.astype(F32)


def _dq4_1(b: np.ndarray) -> np.ndarray:
    return _f16(b[:, :2]) * _nibbles(b[:, 4:]).astype(F32) + _f16(b[:, 2:4])


def _fifth_bits(qh: np.ndarray) -> np.ndarray:
    return np.unpackbits(np.ascontiguousarray(qh), axis=1, bitorder="little") << 4


def _dq5_0(b: np.ndarray) -> np.ndarray:
    q = (_nibbles(b[:, 6:]) | _fifth_bits(b[:, 2:6])).astype(np.int8) - 16
    return _f16(b[:, :2]) * q.astype(F32)


def _dq5_1(b: np.ndarray) -> np.ndarray:
    q = _nibbles(b[:, 8:]) | _fifth_bits(b[:, 4:8])
    return _f16(b[:, :2]) * q.astype(F32) + _f16(b[:, 2:4])


def _k_scales(s: np.ndarray) -> tuple:
    """Q4_K's 12 bytes -> (scales, mins), each (blocks, 8) of 6-bit values."""
    lo, hi = s[:, 0:4], s[:, 4:8]
    top = s[:, 8:12]
    sc = np.concatenate([lo & 63, (top & 0x0F) | ((lo >> 6) << 4)], axis=1)
    mn = np.concatenate([hi & 63, (top >> 4) | ((hi >> 6) << 4)], axis=1)
    return sc.astype(F32), mn.astype(F32)


def _q4_k(b: np.ndarray) -> np.ndarray:
    """256 values: ``d``, ``dmin``, 12 bytes of eight 6-bit (scale, min) pairs, 128 bytes; each 64
    values take 32 bytes, low nibbles then high nibbles; ``v = d * scale * q - dmin * min``."""
    n = b.shape[0]
    d, dmin = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    sc, mn = _k_scales(b[:, 4:16])
    q = b[:, 16:].reshape(n, 4, 1, 32)
    q = np.concatenate([q & 0x0F, q >> 4], axis=2).reshape(n, 8, 32).astype(F32)
    return ((d * sc)[:, :, None] * q - (dmin * mn)[:, :, None]).reshape(n, 256)


def _q6_k(b: np.ndarray) -> np.ndarray:
    """256 values: 128 bytes low 4 bits ``ql``, 64 bytes high 2 bits ``qh``, 16 int8 scales, ``d``;
    ``v = d * scale[k // 16] * (q - 32)``."""
    n = b.shape[0]
    ql = b[:, :128].reshape(n, 2, 1, 64)
    qh = b[:, 128:192].reshape(n, 2, 1, 32)
    scales = b[:, 192:208].view(np.int8).astype(F32)
    d = _f16(b[:, 208:210])
    low = np.concatenate([ql & 0x0F, ql >> 4], axis=2).reshape(n, 2, 4, 32)
    high = (qh >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)) & 3
    q = (low | (high << 4)).astype(np.int8) - 32
    q = q.reshape(n, 16, 16).astype(F32)
    return (d[:, :, None] * scales[:, :, None] * q).reshape(n, 256)


DEQUANTIZE = {"Q8_0": _dq8_0, "Q4_0": _dq4_0, "Q4_1": _dq4_1, "Q5_0": _dq5_0, "Q5_1": _dq5_1,
              "Q4_K": _q4_k, "Q6_K": _q6_k}
_BLOCKS = 1 << 16  # blocks per step: bounds the temporaries to a few MB


def dequantize(x: np.ndarray, type_name: str) -> np.ndarray:
    """uint8 rows of whole blocks (``(*rows, bytes_per_row)``) -> float32 ``(*rows, values_per_row)``."""
    t = by_name(type_name)
    if x.dtype != np.uint8 or x.ndim == 0 or x.shape[-1] % t.nbytes:
        raise QuantError(f"{t.name} rows must be uint8 bytes in whole blocks of {t.nbytes}, not {x.dtype} "
                         f"{tuple(x.shape)}")
    blocks = x.reshape(-1, t.nbytes)
    out = np.empty((blocks.shape[0], t.block), dtype=F32)
    for i in range(0, blocks.shape[0], _BLOCKS):
        out[i:i + _BLOCKS] = DEQUANTIZE[t.name](blocks[i:i + _BLOCKS])
    return out.reshape(tuple(x.shape[:-1]) + (x.shape[-1] // t.nbytes * t.block,))


# -- quantize: float32 blocks (blocks, 32) -> uint8 (blocks, bytes) -------------------------------

def _inverse(d: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(d == 0, F32(0), F32(1) / d)


def _round_away(x: np.ndarray) -> np.ndarray:
    """Round half away from zero (C's roundf) in float32, the value gguf-py's ``np_roundf`` gives:
    ``t + trunc(2 * (x - t))`` with ``t = trunc(x)`` (``x - t`` is exact below 2**23)."""
    t = np.trunc(x)
    f = x - t
    f += f
    return t + np.trunc(f, out=f)


def _half(v: np.ndarray) -> np.ndarray:
    return v.astype(np.float16).view(np.uint8)


def _pack4(q: np.ndarray) -> np.ndarray:
    """(blocks, 32) values 0..31 -> 16 bytes: value j's low nibble, value 16 + j's in the high one."""
    return (q[:, :16] & 0x0F) | (q[:, 16:] << 4)


def _qh(q: np.ndarray) -> np.ndarray:
    """Each value's fifth bit, value j at bit j of a little-endian uint32."""
    return np.packbits(q >> 4, axis=1, bitorder="little")


def _max_abs(b: np.ndarray) -> np.ndarray:
    """max |x| of each block, (blocks, 1): the blocks transposed (one copy), then halving pairwise maxima
    over contiguous rows (numpy's reduction along a short axis, or over strided halves, is several times
    slower)."""
    m = np.ascontiguousarray(np.abs(b).T)
    while m.shape[0] > 1:
        h = m.shape[0] // 2
        m = np.maximum(m[:h], m[h:])
    return m.reshape(-1, 1)


def _abs_max(b: np.ndarray) -> np.ndarray:
    """The value of largest magnitude in each block (the first, on a tie), sign kept, (blocks, 1): a
    tournament of neighbours, the left one winning a tie."""
    v = b
    while v.shape[1] > 1:
        pair = v.reshape(v.shape[0], -1, 2)
        left, right = pair[:, :, 0], pair[:, :, 1]
        v = np.where(np.abs(left) >= np.abs(right), left, right)
    return v


def _symmetric(b: np.ndarray, levels: int) -> tuple:
    d = _abs_max(b) / F32(-levels)
    q = np.trunc(b * _inverse(d) + F32(levels + 0.5)).astype(np.uint8).clip(0, 2 * levels - 1)
    return d, q


def _affine(b: np.ndarray, top: int) -> tuple:
    lo = b.min(axis=1, keepdims=True)
    d = (b.max(axis=1, keepdims=True) - lo) / F32(top)
    q = np.trunc((b - lo) * _inverse(d) + F32(0.5)).astype(np.uint8).clip(0, top)
    return d, lo, q


def _q8_0(b: np.ndarray) -> np.ndarray:
    d = _max_abs(b) / F32(127)
    out = np.empty((b.shape[0], 34), np.uint8)
    out[:, :2] = _half(d)
    out[:, 2:] = _round_away(b * _inverse(d)).astype(np.int8).view(np.uint8)
    return out


def _q4_0(b: np.ndarray) -> np.ndarray:
    d, q = _symmetric(b, 8)
    return np.concatenate([_half(d), _pack4(q)], axis=1)


def _q5_0(b: np.ndarray) -> np.ndarray:
    d, q = _symmetric(b, 16)
    return np.concatenate([_half(d), _qh(q), _pack4(q)], axis=1)


def _q4_1(b: np.ndarray) -> np.ndarray:
    d, lo, q = _affine(b, 15)
    return np.concatenate([_half(d), _half(lo), _pack4(q)], axis=1)


def _q5_1(b: np.ndarray) -> np.ndarray:
    d, lo, q = _affine(b, 31)
    return np.concatenate([_half(d), _half(lo), _qh(q), _pack4(q)], axis=1)


# type -> (kernel, byte columns holding float16 scales: d, and m where the type has one)
QUANTIZE = {"Q8_0": (_q8_0, 2), "Q4_0": (_q4_0, 2), "Q5_0": (_q5_0, 2), "Q4_1": (_q4_1, 4),
            "Q5_1": (_q5_1, 4)}


def _bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits: NaN made quiet (sign and top mantissa bits kept), else round to
    nearest even (ggml_compute_fp32_to_bf16)."""
    n = x.view(np.uint32)
    n = np.where((n & 0x7FFFFFFF) > 0x7F800000, (n & np.uint32(0xFFFF0000)) | np.uint32(0x400000), n)
    return ((n + (np.uint32(0x7FFF) + ((n >> 16) & 1))) >> 16).astype(np.uint16)


def quantize(x: np.ndarray, type_name: str) -> np.ndarray:
    """Float rows ``(*rows, n)`` (n a multiple of the block size) -> the type's stored form: uint8
    ``(*rows, n / block * bytes)`` for a block type, else float32 / float16 / bfloat16 bits (uint16)."""
    out = [np.asarray(p) for p in _encode_rows(np.asarray(x).reshape(-1, x.shape[-1] if x.ndim else 1),
                                               type_name, "tensor", _AS_GGUF_PY)]
    flat = np.concatenate(out) if out else np.empty((0,), _stored(type_name))
    t = by_name(type_name)
    row = (x.shape[-1] // t.block * t.nbytes) if x.ndim else 1
    return flat.reshape(tuple(x.shape[:-1]) + ((row,) if t.dtype is None else (x.shape[-1],)) if x.ndim else ())


def _stored(type_name: str):
    return {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}.get(type_name, np.uint8)


def _as_f32(x: np.ndarray, what: str) -> np.ndarray:
    """Float values as float32 (what the converter quantizes); float64 that overflows is refused."""
    if x.dtype == np.float32:
        return x
    with np.errstate(over="ignore", invalid="ignore"):
        y = x.astype(F32)
    if x.dtype.itemsize > 4 and not np.array_equal(np.isfinite(y), np.isfinite(x)):
        raise QuantError(f"{what}: a value beyond float32's range (+-3.4e38)")
    return y


_AS_GGUF_PY = frozenset({"underflow"})  # quantize(): exactly gguf-py's arithmetic, tiny values flushed as it does


def _encode_rows(rows: np.ndarray, type_name: str, what: str, allow: frozenset) -> Iterator[np.ndarray]:
    """2-D float rows -> the type's bytes, a bounded number of rows at a time (C order)."""
    t = by_name(type_name)
    if t.dtype is None and type_name not in QUANTIZE:
        raise QuantError(f"{what}: mapspec cannot quantize to {type_name} (it can: {', '.join(QUANTIZE)})")
    if t.dtype is None and rows.shape[1] % t.block:
        raise QuantError(f"{what}: rows of {rows.shape[1]} values are not whole {type_name} blocks of {t.block}")
    # ~16K values per step: temporaries of 64 KB stay in cache and come from the heap (larger ones are fresh
    # mmap pages for every numpy call: 3x slower)
    step = max(1, (1 << 14) // max(1, rows.shape[1]))
    for i in range(0, rows.shape[0], step):
        x = _as_f32(np.ascontiguousarray(rows[i:i + step]), what)
        yield _encode_f32(x, rows[i:i + step], type_name, what, allow)


def _encode_f32(x: np.ndarray, original: np.ndarray, type_name: str, what: str, allow: frozenset) -> np.ndarray:
    if type_name == "F32":
        return x
    if type_name in ("F16", "BF16"):
        if type_name == "F16" and original.dtype == np.float16:
            return original
        with np.errstate(over="ignore"):
            y = x.astype(np.float16) if type_name == "F16" else _bf16(x)
        fin = np.isfinite(y.view(np.float16) if type_name == "F16" else
                          (y.astype(np.uint32) << 16).view(np.float32))
        if not np.array_equal(fin, np.isfinite(x)):
            big = np.abs(x[np.isfinite(x) & ~fin]).max()
            raise QuantError(f"{what}: value {big:g} overflows {type_name.lower()} (it would become infinity); "
                             f"write it as f32" + (" or bf16" if type_name == "F16" else ""))
        if "underflow" not in allow:
            _check_underflow(x, y.view(np.float16).astype(F32) if type_name == "F16" else
                             (y.astype(np.uint32) << 16).view(np.float32), type_name, what)
        return y
    if not np.isfinite(x).all():
        raise QuantError(f"{what}: NaN or infinity cannot be quantized to {type_name} (its whole block would be "
                         f"lost)")
    kernel, scales = QUANTIZE[type_name]
    t = by_name(type_name)
    with np.errstate(all="ignore"):  # a subnormal block: 1/d overflows, d rounds to 0 in float16 (as gguf-py)
        out = kernel(x.reshape(-1, t.block))
    if not np.isfinite(out[:, :scales].copy().view(np.float16)).all():
        raise QuantError(f"{what}: values up to {np.abs(x).max():g} give a {type_name} block scale beyond "
                         f"float16's range (65504); write this tensor as f32 or bf16")
    return out


def _check_underflow(x: np.ndarray, stored: np.ndarray, type_name: str, what: str) -> None:
    """Nonzero values stored as zero in F16/BF16 are underflow (the numeric-safety rule of
    :mod:`mapspec.numeric`): refused unless ``allow: [underflow]``.  (A block-quantized type rounds small
    values of a block to zero by design: that is its documented quantization error, not checked here.)"""
    lost = (stored == 0) & (x != 0)
    if lost.any():
        n, big = int(np.count_nonzero(lost)), float(np.abs(x[lost]).max())
        tiny = float(np.finfo(np.float16).smallest_subnormal) if type_name == "F16" else \
            float(np.finfo(np.float32).smallest_normal)
        raise QuantError(f"{what}: {n} nonzero value{'s' if n > 1 else ''} (up to {big:g}) would underflow to 0 "
                         f"in {type_name.lower()} (its smallest is {tiny:g}); write the model as bf16 or f32 "
                         f"(--outtype bf16, auto or f32), or accept the loss with --target-option allow=underflow")


def encode(array: np.ndarray, type_name: str, what: str, allow: frozenset = frozenset()) -> Iterator[memoryview]:
    """The bytes of a float tensor stored as ggml type ``type_name`` (little-endian), in pieces.
    ``allow``: numeric-safety kinds accepted (``underflow``: nonzero values stored as 0 in F16/BF16)."""
    array = np.asarray(array)
    rows = array.reshape(-1, array.shape[-1]) if array.ndim else array.reshape(1, 1)
    for piece in _encode_rows(rows, type_name, what, allow):
        piece = np.ascontiguousarray(piece)
        if piece.dtype.byteorder == ">" or (piece.dtype.byteorder == "=" and np.little_endian is False):
            piece = piece.byteswap()
        yield memoryview(piece.reshape(-1).view(np.uint8))
