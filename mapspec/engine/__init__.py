"""Planning and applying a spec.

``plan`` works from metadata only (names, shapes, dtypes, layer attributes): it
matches every source tensor against the rules, binds each transform's arguments,
infers every output's shape and dtype through the transform chain, checks coverage
and the template, and collects every problem it finds.  ``apply`` then streams: for
each output, in output order, it reads the source tensor (a memory-mapped view where
the format allows), runs the transforms, hands the result to the streaming writer and
lets it go.  A tensor referenced by several rules (a Caffe BatchNorm factor blob) is
read once and kept only until its last use.  The output is written to a temporary
file beside the target and renamed into place only when everything succeeded.

The rooms: :mod:`.steps` (what a plan is made of), :mod:`.names` (closest-name hints, listings),
:mod:`.rules` (per-rule helpers: each, constants, possible shapes), :mod:`.plan` (the planner),
:mod:`.execute` (streaming into the writer), :mod:`.report` (the result and ``--report``).
"""

from .execute import DEFAULT_GROWTH, DEFAULT_SLACK, apply, check_size, execute
from .names import MAX_LISTED, MAX_SUGGEST, MAX_SUGGEST_LEN, MAX_SUGGESTIONS
from .plan import _as_spec, open_template, plan, with_vars
from .report import Result
from .rules import _each_envs
from .steps import _IMPLICIT_CAST, BoundCall, Plan, Step

__all__ = ["BoundCall", "DEFAULT_GROWTH", "DEFAULT_SLACK", "MAX_LISTED", "MAX_SUGGEST", "MAX_SUGGEST_LEN",
           "MAX_SUGGESTIONS", "Plan", "Result", "Step", "apply", "check_size", "execute", "open_template",
           "plan", "with_vars", "_IMPLICIT_CAST", "_as_spec", "_each_envs"]
