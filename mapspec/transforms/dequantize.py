"""dequantize: ggml block-quantized rows (raw bytes from a GGUF file) -> float32 values.

The input is what the GGUF reader hands out for a quantized tensor: ``uint8`` of shape
``(*rows, bytes_per_row)``; the output is float32 of shape ``(*rows, values_per_row)``.
Block layouts (ggml-quants.c; checked against gguf-py's ``gguf.quants.dequantize`` in
the tests), all little-endian, ``d``/``dmin`` float16:

* Q8_0: 32 values: ``d``, 32 x int8 ``q``; ``v = d * q``.
* Q4_0: 32 values: ``d``, 16 bytes; value ``j < 16`` is the low nibble of byte ``j``,
  value ``16 + j`` its high nibble; ``v = d * (nibble - 8)``.
* Q4_K: 256 values: ``d``, ``dmin``, 12 bytes of eight 6-bit (scale, min) pairs, 128 bytes;
  each 64 values take 32 bytes, low nibbles then high nibbles, sub-blocks 2i and 2i+1;
  ``v = d * scale * nibble - dmin * min``.
* Q6_K: 256 values: 128 bytes low 4 bits ``ql``, 64 bytes high 2 bits ``qh``, 16 int8 scales,
  ``d``; ``v = d * scale[k // 16] * (q - 32)``.
"""

from __future__ import annotations

import numpy as np

from .registry import Arg, Meta, TransformError, transform

# type -> (values per block, bytes per block); the same numbers as the GGUF reader's table.
BLOCKS = {"Q8_0": (32, 34), "Q4_0": (32, 18), "Q4_K": (256, 144), "Q6_K": (256, 210)}


def _f16(b: np.ndarray) -> np.ndarray:
    """Columns of little-endian float16 bytes -> float32, shape (blocks, 1)."""
    return np.ascontiguousarray(b).view("<f2").astype(np.float32)


def _q8_0(b: np.ndarray) -> np.ndarray:
    return _f16(b[:, :2]) * b[:, 2:].view(np.int8).astype(np.float32)


def _q4_0(b: np.ndarray) -> np.ndarray:
    q = b[:, 2:]
    x = np.concatenate([q & 0x0F, q >> 4], axis=1).astype(np.int8) - 8
    return _f16(b[:, :2]) * x.astype(np.float32)


def _k_scales(s: np.ndarray) -> tuple:
    """Q4_K's 12 bytes -> (scales, mins), each (blocks, 8) of 6-bit values."""
    lo, hi = s[:, 0:4], s[:, 4:8]
    top = s[:, 8:12]
    sc = np.concatenate([lo & 63, (top & 0x0F) | ((lo >> 6) << 4)], axis=1)
    mn = np.concatenate([hi & 63, (top >> 4) | ((hi >> 6) << 4)], axis=1)
    return sc.astype(np.float32), mn.astype(np.float32)


def _q4_k(b: np.ndarray) -> np.ndarray:
    n = b.shape[0]
    d, dmin = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    sc, mn = _k_scales(b[:, 4:16])
    q = b[:, 16:].reshape(n, 4, 1, 32)
    q = np.concatenate([q & 0x0F, q >> 4], axis=2).reshape(n, 8, 32).astype(np.float32)
    return ((d * sc)[:, :, None] * q - (dmin * mn)[:, :, None]).reshape(n, 256)


def _q6_k(b: np.ndarray) -> np.ndarray:
    n = b.shape[0]
    ql = b[:, :128].reshape(n, 2, 1, 64)
    qh = b[:, 128:192].reshape(n, 2, 1, 32)
    scales = b[:, 192:208].view(np.int8).astype(np.float32)
    d = _f16(b[:, 208:210])
    low = np.concatenate([ql & 0x0F, ql >> 4], axis=2).reshape(n, 2, 4, 32)
    high = (qh >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)) & 3
    q = (low | (high << 4)).astype(np.int8) - 32
    q = q.reshape(n, 16, 16).astype(np.float32)
    return (d[:, :, None] * scales[:, :, None] * q).reshape(n, 256)


KERNELS = {"Q8_0": _q8_0, "Q4_0": _q4_0, "Q4_K": _q4_k, "Q6_K": _q6_k}
_ROWS = 1 << 16  # blocks per step: bounds the temporaries to a few MB


def dequantize(x: np.ndarray, type: str) -> np.ndarray:  # noqa: A002 - the spec's argument name
    per, nbytes = BLOCKS[type]
    if x.dtype != np.uint8 or x.ndim == 0 or x.shape[-1] % nbytes:
        raise TransformError(f"{type} rows must be uint8 bytes in whole blocks of {nbytes}, not {x.dtype} "
                             f"{tuple(x.shape)}")
    blocks = x.reshape(-1, nbytes)
    out = np.empty((blocks.shape[0], per), dtype=np.float32)
    for i in range(0, blocks.shape[0], _ROWS):
        out[i:i + _ROWS] = KERNELS[type](blocks[i:i + _ROWS])
    return out.reshape(tuple(x.shape[:-1]) + (x.shape[-1] // nbytes * per,))


@transform("dequantize", kernel=dequantize, short="type",
           args={"type": Arg("choice", required=True, choices=tuple(BLOCKS),
                             doc="the ggml block type (the GGUF reader's meta ggml_type)")})
def infer(meta: Meta, type: str) -> Meta:  # noqa: A002
    """Raw ggml blocks (uint8 rows from a GGUF file) -> float32 values of the logical shape."""
    per, nbytes = BLOCKS[type]
    if meta.dtype != "uint8" or not meta.shape or meta.shape[-1] % nbytes:
        raise TransformError(f"{type} needs uint8 rows of whole {nbytes}-byte blocks (a quantized GGUF tensor "
                             f"as read)")
    return Meta(tuple(meta.shape[:-1]) + (meta.shape[-1] // nbytes * per,), "float32")
