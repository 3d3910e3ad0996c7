"""mapspec.dtypes: names of numpy and ml_dtypes dtypes."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from mapspec import dtypes


@pytest.mark.parametrize("name", [n for n in dtypes.known() if not dtypes.in_numpy(n)])
def test_an_extension_dtype_is_named_when_it_is_the_first_one_seen(name):
    """float8_e5m2 is numpy kind 'f', not 'V' like the other ml_dtypes types: named in a fresh interpreter too."""
    code = ("import ml_dtypes, numpy as np\nfrom mapspec import dtypes\n"
            f"print(dtypes.name_of(np.zeros(2, ml_dtypes.{name}).dtype))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == name


def test_in_numpy_is_what_np_load_reads_back(tmp_path):
    """A dtype is 'in numpy' exactly when np.save then np.load gives it back (the npz writer refuses the others)."""
    for name in dtypes.known():
        a = np.zeros(3, dtypes.to_numpy(name))
        np.save(tmp_path / "a.npy", a)
        try:
            same = np.load(tmp_path / "a.npy").dtype == a.dtype
        except (ValueError, TypeError):
            same = False
        assert dtypes.in_numpy(name) == same, name
    assert not dtypes.in_numpy("bfloat16") and dtypes.in_numpy("float16")
