"""The verify runners: one module per way of running a model, registered in ``RUNNERS``.

``RUNNERS`` (:mod:`mapspec.language.runners`) is a lazy table: runner name -> its module, what it runs and
the optional packages it needs.  Modules are imported on first use (so that naming a runner never imports
torch, keras or transformers until it runs) and each defines ``build(side) -> Runner`` for a :class:`Side`;
:mod:`.choice` picks a side's runner from the table's declarations.  Adding a runner is one module plus one
entry in :mod:`mapspec.language.runners`.
"""

from __future__ import annotations

from ...language.runners import RUNNERS
from .base import Runner, RunError, Side, build_model, load_factory

__all__ = ["RUNNERS", "RunError", "Runner", "Side", "build_model", "load_factory", "make_runner"]


def make_runner(side: Side) -> Runner:
    runner = RUNNERS.load(side.kind).build(side)
    runner.name, runner.preprocess = side.name, side.preprocess
    return runner
