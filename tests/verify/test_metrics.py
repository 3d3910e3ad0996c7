"""How close two outputs are (mapspec/verify/metrics.py), against the definitions computed with numpy."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mapspec.errors import MapspecError
from mapspec.verify.metrics import ATOL, COSINE, compare


def test_measures_are_the_textbook_ones():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 7)).astype(np.float32)
    b = a + rng.standard_normal((3, 7)).astype(np.float32) * 1e-3
    c = compare(a, b)
    x, y = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    assert c.max_abs == np.max(np.abs(x - y))
    assert c.max_rel == pytest.approx(np.max(np.abs(x - y)) / np.max(np.abs(x)), rel=1e-12)
    assert c.cosine == pytest.approx(x @ y / np.sqrt((x @ x) * (y @ y)), rel=1e-12)
    assert c.shape == (3, 7) and not c.ok() and compare(a, a).ok()


def test_nan_and_zero_edge_cases_never_pass_wrongly():
    nan = np.array([1.0, np.nan])
    assert compare(nan, nan).ok()  # NaN in the same places: compared elsewhere
    bad = compare(nan, np.array([np.nan, 1.0]))
    assert not bad.ok() and math.isinf(bad.max_abs)
    assert json.loads(json.dumps(bad.to_json()))["cosine"] == "nan"  # valid JSON
    assert compare(np.zeros(3), np.zeros(3)).ok()
    assert not compare(np.zeros(3), np.full(3, ATOL * 2)).ok()
    assert compare(np.zeros(0), np.zeros(0)).ok() and 0 < COSINE < 1
    with pytest.raises(MapspecError, match="different shapes"):
        compare(np.zeros(2), np.zeros(3))
