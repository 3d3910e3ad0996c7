"""A side's own input step (the spec language's `verify.<side>.input`): what one model expects its input
to be, from the shared verify input.  The verify layer applies it (`mapspec.verify.preprocess`).

Both sides of a verification see the same input ``x`` (NCHW, RGB, in ``verify.input.range``).  A graph
that normalises inside itself (insightface's MXNet ``_minus_scalar``/``_mul_scalar`` head) and one that
does not (arcface_torch's iresnet) are compared by giving the second its step in the spec::

    verify:
      target: {run: model, input: {mean: 127.5, std: 128}}

The step, in this order: channel order (``bgr`` reverses the channel axis), then ``x * scale``, then
``- mean``, then ``/ std`` (each a number or one value per channel, in the side's channel order), then
the layout the model takes (``nhwc`` moves channels last).  Data only: typed by the schema, applied here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import MapspecError

KEYS = ("name", "scale", "mean", "std", "channels", "layout")
LAYOUTS = ("nchw", "nhwc")


@dataclass(frozen=True)
class Preprocess:
    scale: float = 1.0
    mean: tuple = (0.0,)
    std: tuple = (1.0,)
    channels: str = "rgb"
    layout: Optional[str] = None     # None: the runner's own (nchw; keras: nhwc)

    @property
    def identity(self) -> bool:
        return (self.scale, self.mean, self.std, self.channels, self.layout) == (1.0, (0.0,), (1.0,), "rgb", None)

    def describe(self) -> str:
        parts = []
        if self.channels == "bgr":
            parts.append("BGR")
        if self.scale != 1.0:
            parts.append(f"x{self.scale:g}")
        if self.mean != (0.0,):
            parts.append("-" + _values(self.mean))
        if self.std != (1.0,):
            parts.append("/" + _values(self.std))
        if self.layout:
            parts.append(self.layout.upper())
        return " ".join(parts)


def _values(v: tuple) -> str:
    return f"{v[0]:g}" if len(v) == 1 else "[" + ", ".join(f"{x:g}" for x in v) + "]"


def from_side(raw: dict, where: str) -> Preprocess:
    """The step a spec's ``verify.<side>`` asks for: ``input`` as a mapping, and the older ``channels:``."""
    inp = raw.get("input") if isinstance(raw.get("input"), dict) else {}
    ch_outer, ch_inner = raw.get("channels"), inp.get("channels")
    if ch_outer is not None and ch_inner is not None and ch_outer != ch_inner:
        raise MapspecError(f"{where}: channels {ch_outer!r} and input.channels {ch_inner!r} disagree: give the "
                           f"channel order once")
    mean, std = _tuple(inp.get("mean", 0.0)), _tuple(inp.get("std", 1.0))
    if len(mean) > 1 and len(std) > 1 and len(mean) != len(std):
        raise MapspecError(f"{where}.input: mean has {len(mean)} values and std {len(std)}: one per channel each")
    if any(s == 0 for s in std):
        raise MapspecError(f"{where}.input.std: a zero would divide by zero")
    return Preprocess(scale=float(inp.get("scale", 1.0)), mean=mean, std=std,
                      channels=ch_inner or ch_outer or "rgb", layout=inp.get("layout"))


def _tuple(v) -> tuple:
    return tuple(float(x) for x in v) if isinstance(v, (list, tuple)) else (float(v),)


def apply(step: Preprocess, x: np.ndarray, default_layout: str, where: str) -> np.ndarray:
    """``x`` (NCHW) as this side takes it."""
    x = np.asarray(x, dtype=np.float32)
    if step.channels == "bgr":
        x = x[:, ::-1]
    c = x.shape[1] if x.ndim >= 2 else 1
    shape = [1] * x.ndim
    if x.ndim >= 2:
        shape[1] = -1
    for key, vals in (("mean", step.mean), ("std", step.std)):
        if len(vals) not in (1, c):
            raise MapspecError(f"{where}.input.{key} has {len(vals)} values; the input has {c} channels")
    if step.scale != 1.0:
        x = x * np.float32(step.scale)
    if step.mean != (0.0,):
        x = x - np.asarray(step.mean, dtype=np.float32).reshape(shape if len(step.mean) > 1 else [1])
    if step.std != (1.0,):
        x = x / np.asarray(step.std, dtype=np.float32).reshape(shape if len(step.std) > 1 else [1])
    layout = step.layout or default_layout
    if layout == "nhwc":
        if x.ndim != 4:
            raise MapspecError(f"{where}.input.layout nhwc needs a 4-d input, not shape {tuple(x.shape)}")
        x = x.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x, dtype=np.float32)


def side_errors(raw, where: str) -> list:
    """[(message, key)] for a spec's ``verify.<side>`` whose input step contradicts itself (the schema checked
    the types; a side with wrong types is left to it)."""
    if not isinstance(raw, dict) or not (isinstance(raw.get("input"), dict) or "channels" in raw):
        return []
    try:
        from_side(raw, where)
    except MapspecError as e:
        return [(str(e), "input" if isinstance(raw.get("input"), dict) else "channels")]
    except (TypeError, ValueError):
        pass
    return []
