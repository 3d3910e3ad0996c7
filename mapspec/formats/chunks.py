"""An array's bytes in C order, as a stream of bounded pieces: what every streaming writer needs.

Writers receive whatever the transforms produced: usually a zero-copy view of the
source (contiguous, or a transposed/strided view, possibly in the other byte order).
:func:`c_order_chunks` turns it into the file's byte layout without ever copying the
whole array:

* a C-contiguous array already in the wanted byte order is cut into zero-copy slices;
* anything else is copied slab by slab (leading axes) into one reusable buffer of at
  most ``limit`` bytes (or one innermost row, if that is larger), byte-swapped there
  if needed.  When the innermost axis is strided (a transposed view) the copy goes in
  cache-line stripes (:func:`mapspec.kernels.copy_strided`): numpy's plain strided copy
  of a transposed 4096 x 4096 float32 is about 7x slower.

Pieces are ``memoryview`` s of bytes that are only valid until the next piece is
requested (the buffer is reused): write or hash each one before asking for the next.
"""

from __future__ import annotations

import sys
from typing import Iterator

import numpy as np

from ..kernels import copy_strided

CHUNK = 16 << 20  # bytes per piece
_SLICE = 8 << 20  # zero-copy pieces of a contiguous array (small enough to stay in cache between hash and write)


def _stored_little(dt: np.dtype) -> bool:
    return dt.itemsize == 1 or dt.byteorder == "<" or (dt.byteorder in ("=", "|") and sys.byteorder == "little")


def c_order_chunks(arr: np.ndarray, limit: int = CHUNK, byteorder: str = "<") -> Iterator[memoryview]:
    """The bytes of ``arr`` in C order and ``byteorder`` (``"<"`` little-endian, ``"="`` native).

    Extra memory is at most ``limit`` bytes (one innermost row if that is larger).
    """
    arr = np.asarray(arr)
    if arr.size == 0:
        return
    want_little = byteorder == "<" or (byteorder == "=" and sys.byteorder == "little")
    if arr.flags.c_contiguous and _stored_little(arr.dtype) == want_little:
        flat = memoryview(arr.reshape(-1).view(np.uint8))
        step = min(limit, _SLICE) if limit > 0 else _SLICE
        for i in range(0, len(flat), step):
            yield flat[i:i + step]
        return
    native = arr.dtype.newbyteorder("=") if arr.dtype.byteorder not in ("=", "|") else arr.dtype
    swap = (sys.byteorder == "little") != want_little and native.itemsize > 1
    row = (arr.shape[-1] if arr.ndim else 1) * arr.dtype.itemsize  # one innermost row
    buf = np.empty(max(min(limit, arr.nbytes), row), np.uint8)
    for block in _blocks(arr, max(limit, 1)):
        out = buf[:block.nbytes].view(native).reshape(block.shape)
        _copy(out, block)
        if swap:
            out.byteswap(inplace=True)
        yield memoryview(buf[:block.nbytes])


def _blocks(arr: np.ndarray, limit: int) -> Iterator[np.ndarray]:
    """Consecutive C-order pieces of ``arr`` (leading-axis slabs), each at most ``limit`` bytes if possible."""
    if arr.ndim == 0 or arr.nbytes <= limit:
        yield arr
    elif arr.ndim == 1:
        step = max(1, limit // arr.dtype.itemsize)
        for i in range(0, arr.shape[0], step):
            yield arr[i:i + step]
    elif arr[0].nbytes > limit:
        for i in range(arr.shape[0]):
            yield from _blocks(arr[i], limit)
    else:
        step = max(1, limit // arr[0].nbytes)
        for i in range(0, arr.shape[0], step):
            yield arr[i:i + step]


def _copy(out: np.ndarray, block: np.ndarray) -> None:
    """``out[...] = block``, in cache-line stripes when the last axis is strided (transposed views)."""
    copy_strided(out, block)
