"""Which runner runs one side of a verification, decided from the runner registry's declarations alone.

What the user said beats what the files say: a command-line option that picks a runner over the spec
(``--SIDE-config``: a config.json is a transformers model's), then the spec's ``verify.SIDE.run``, then an
option that picks a runner the spec left open (``--SIDE-model``: a factory; with a ``run:`` it is the
factory that runner builds).  Otherwise each runner is asked whether it runs these weights (their format,
a graph, a marker file beside them): exactly one must say yes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from ...errors import MapspecError
from ...language.runners import RUNNERS
from ...paths import checkpoint_dir


@dataclass(frozen=True)
class Evidence:
    """What is known about one side before a runner is chosen."""

    side: str                        # "source" or "target"
    weights: str                     # the checkpoint
    format: Optional[str] = None     # the spec's format for it (None: its suffix says)
    run: Optional[str] = None        # the spec's verify.SIDE.run
    given: frozenset = frozenset()   # the runner inputs given: "config", "model" (command line) ...
    flags: frozenset = frozenset()   # ... and which of them came as command-line options
    graph: bool = False              # a graph (command line or spec)


def _format(ev: Evidence) -> Optional[str]:
    from ...formats.registry import FORMATS, by_suffix

    if ev.format:
        return FORMATS.aliases.get(ev.format, ev.format)
    return by_suffix(ev.weights)


def _why(name: str, ev: Evidence) -> Optional[str]:
    """Why runner ``name`` runs these weights, or None if its declaration does not accept them."""
    entry = RUNNERS[name]
    if entry.flag and entry.flag in ev.given:
        return f"--{ev.side}-{entry.flag} is given" if entry.flag in ev.flags else f"verify.{ev.side}.{entry.flag}"
    if entry.beside and ev.weights and os.path.isfile(os.path.join(checkpoint_dir(ev.weights), entry.beside)):
        return f"a {entry.beside} lies beside the weights"
    fmt = _format(ev)
    if fmt in entry.formats and (ev.graph or not entry.with_graph):
        return f"the weights are {fmt}" + (" with a graph" if entry.with_graph else "")
    return None


def accepting(ev: Evidence) -> dict:
    """The runners whose declarations accept this side's files: name -> why."""
    found = {name: _why(name, ev) for name in RUNNERS}
    return {name: why for name, why in found.items() if why}


def choose(ev: Evidence) -> str:
    """The runner for this side (see the module's docstring); none or two is an error saying how to pick one."""
    picked = [n for n, e in RUNNERS.items() if e.flag and e.over_spec and e.flag in ev.flags]
    if not picked and ev.run:
        return ev.run
    picked = picked or [n for n, e in RUNNERS.items() if e.flag and e.flag in ev.flags]
    if len(picked) > 1:
        raise MapspecError(f"{' and '.join(f'--{ev.side}-{RUNNERS[n].flag}' for n in picked)} pick different "
                           f"runners for the {ev.side} ({', '.join(picked)}): give one of them")
    if picked:
        return picked[0]
    found = accepting(ev)
    if len(found) == 1:
        return next(iter(found))
    if found:
        (a, why_a), (b, why_b) = list(found.items())[:2]
        flags = [f"--{ev.side}-{RUNNERS[n].flag} picks {n}" for n in found if RUNNERS[n].flag]
        raise MapspecError(f"the {ev.side} could run as {a} ({why_a}) or as {b} ({why_b}): name one with "
                           f"verify.{ev.side}.run in the spec" + (f" ({'; '.join(flags)})" if flags else ""))
    runs = "; ".join(f"{n}: {e.runs.replace('SIDE', ev.side)}" for n, e in RUNNERS.items())
    raise MapspecError(f"the spec has no 'verify:' section for the {ev.side} and nothing says how to run the "
                       f"{ev.side}: pass --{ev.side}-model (a factory module:function), --{ev.side}-config "
                       f"(a transformers config.json) or --{ev.side}-graph (a Caffe/MXNet graph), or name a "
                       f"runner in verify.{ev.side}.run (what each runner runs: {runs})")
