"""Fixtures of the command-line tests."""

from __future__ import annotations

import numpy as np
import pytest

from mapspec.formats import module


@pytest.fixture
def ckpt(tmp_path):
    p = tmp_path / "a.npz"
    module("npz").save(p, {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.arange(2, dtype=np.int64)})
    return p
