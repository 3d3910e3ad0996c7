"""How close two outputs are (max abs error, relative error, cosine) and the default tolerances.

The tolerances are defined here once: a conversion passes when every compared output has
``max |a-b| <= ATOL`` and ``cosine >= COSINE``; a layer is "on track" while its relative error
stays within ``LAYER_REL_TOL``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import MapspecError

ATOL = 1e-4
COSINE = 0.99999
LAYER_REL_TOL = 1e-3


@dataclass
class Comparison:
    max_abs: float
    max_rel: float
    cosine: float
    shape: tuple

    def ok(self, atol: float = ATOL, cosine: float = COSINE) -> bool:
        return bool(self.max_abs <= atol and self.cosine >= cosine)  # False for NaN

    def to_json(self) -> dict:
        return {"max_abs": _num(self.max_abs), "max_rel": _num(self.max_rel), "cosine": _num(self.cosine),
                "shape": list(self.shape)}


def _num(v: float):
    """JSON has no inf/NaN: write them as strings so that the report stays valid JSON."""
    return v if math.isfinite(v) else str(v)


def compare(a: np.ndarray, b: np.ndarray) -> Comparison:
    if a.shape != b.shape:
        raise MapspecError(f"outputs have different shapes: {a.shape} vs {b.shape}")
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.size == 0:
        return Comparison(0.0, 0.0, 1.0, a.shape)
    if np.isnan(x).any() or np.isnan(y).any():
        same_nan = bool((np.isnan(x) == np.isnan(y)).all())
        if not same_nan:
            return Comparison(math.inf, math.inf, float("nan"), a.shape)
        keep = ~np.isnan(x)
        x, y = x[keep], y[keep]
        if x.size == 0:
            return Comparison(0.0, 0.0, 1.0, a.shape)
    d = np.abs(x - y)
    max_abs = float(d.max())
    scale = float(np.abs(x).max())
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    nx, ny = np.linalg.norm(x), np.linalg.norm(y)
    if nx == 0 and ny == 0:
        cos = 1.0
    elif nx == 0 or ny == 0:
        cos = 0.0
    else:
        cos = float(np.dot(x, y) / (nx * ny))
    return Comparison(max_abs, max_rel, cos, a.shape)
