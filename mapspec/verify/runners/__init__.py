"""The verify runners: one module per way of running a model, registered in ``RUNNERS``.

``RUNNERS`` is data: runner name -> module.  Modules are imported on first use (so that
naming a runner never imports torch, keras or transformers until it runs) and each defines
``build(side) -> Runner`` for a :class:`Side`.  Adding a runner is one module plus one
line in :mod:`mapspec.language.runners`.
"""

from __future__ import annotations

import importlib

from ...errors import MapspecError
from ...language.runners import RUNNERS
from .base import Runner, RunError, Side, build_model, load_factory


__all__ = ["RUNNERS", "RunError", "Runner", "Side", "build_model", "load_factory", "make_runner", "check_name"]


def check_name(kind) -> None:
    if kind not in RUNNERS:
        raise MapspecError(f"unknown runner {kind!r}; known runners: {', '.join(RUNNERS)}")


def make_runner(side: Side) -> Runner:
    check_name(side.kind)
    try:
        mod = importlib.import_module(RUNNERS[side.kind])
    except ModuleNotFoundError as e:
        raise MapspecError(f"the {side.kind} runner needs the Python package {e.name!r}; install it "
                           f"(pip install {e.name})") from None
    runner = mod.build(side)
    runner.name, runner.preprocess = side.name, side.preprocess
    return runner
