"""The npz format (mapspec/formats/npz.py): what it writes np.load reads back; what numpy cannot hold is refused
before a byte is written."""

from __future__ import annotations

import numpy as np
import pytest

from mapspec import dtypes
from mapspec.errors import FormatError
from mapspec.formats import npz


def test_numpy_dtypes_written_are_what_np_load_reads(tmp_path):
    tensors = {n: (np.arange(24) % 7).astype(dtypes.to_numpy(n)).reshape(2, 3, 4)
               for n in dtypes.known() if dtypes.in_numpy(n)}
    npz.save(str(tmp_path / "a.npz"), tensors)
    with np.load(tmp_path / "a.npz") as got:
        assert sorted(got.files) == sorted(tensors)
        for n, want in tensors.items():
            assert got[n].dtype == want.dtype and np.array_equal(got[n], want), n


@pytest.mark.parametrize("name", [n for n in dtypes.known() if not dtypes.in_numpy(n)])
def test_ml_dtypes_types_are_refused_before_writing(tmp_path, name):
    """float8_e5m2 (numpy kind 'f') too: numpy saved it as '<f1', which np.load cannot read."""
    a = np.zeros(3, dtypes.to_numpy(name))
    with pytest.raises(FormatError, match=f"npz cannot hold {name}.*add a cast"):
        npz.save(str(tmp_path / "a.npz"), {"w": a})
    assert not (tmp_path / "a.npz").exists()
