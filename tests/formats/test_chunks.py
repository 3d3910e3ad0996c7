"""An array's bytes in C order as bounded pieces (mapspec/formats/chunks.py), against numpy's tobytes."""

from __future__ import annotations

import numpy as np
import pytest

from mapspec.formats.chunks import c_order_chunks

BASE = np.arange(4 * 6 * 5, dtype=np.float32).reshape(4, 6, 5)
VIEWS = {"contiguous": BASE, "transposed": BASE.transpose(2, 0, 1), "strided": BASE[::2, 1::2, ::-1],
         "big-endian": BASE.astype(">f4"), "0-d": np.array(7, np.int64), "bool": BASE > 50,
         "empty": BASE[:0]}


@pytest.mark.parametrize("name", list(VIEWS))
@pytest.mark.parametrize("limit", [1, 24, 64, 1 << 20])
@pytest.mark.parametrize("order", ["<", ">"])
def test_pieces_join_to_numpys_c_order_bytes(name, limit, order):
    arr = VIEWS[name]
    pieces = [bytes(p) for p in c_order_chunks(arr, limit=limit, byteorder=order if order == "<" else ">")]
    want = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder(order)).tobytes(order="C")
    assert b"".join(pieces) == want
    row = (arr.shape[-1] if arr.ndim else 1) * arr.dtype.itemsize
    assert all(len(p) <= max(limit, row) for p in pieces), "a piece is larger than the limit (or a row)"
