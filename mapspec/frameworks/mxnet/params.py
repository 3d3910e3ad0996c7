"""How MXNet names the arrays of a checkpoint: ``arg:``/``aux:`` prefixes and ``PREFIX-NNNN.params`` files.

* ``mx.model.save_checkpoint`` writes ``PREFIX-symbol.json`` and ``PREFIX-NNNN.params`` (epoch
  ``NNNN``); :func:`symbol_file_name` gives the symbol file beside a ``.params`` file.
* Names in a checkpoint's ``.params`` are ``arg:NAME`` (learned arguments) or ``aux:NAME``
  (auxiliary states such as a BatchNorm's moving mean/var); Gluon files have bare names.
  :func:`split_name` separates the prefix; :func:`role_by_name` is the role a bare name has by
  MXNet's naming conventions (``_moving_mean``/``_moving_var``, and Gluon's
  ``_running_mean``/``_running_var``, are auxiliary states).
"""

from __future__ import annotations

import re
from typing import Optional

PREFIXES = ("arg", "aux")
AUX_SUFFIXES = ("_moving_mean", "_moving_var", "_running_mean", "_running_var")
CHECKPOINT_PARAMS = re.compile(r"^(?P<prefix>.+)-\d+\.params$", re.IGNORECASE)


def split_name(raw: str) -> tuple:
    """(bare name, "arg"/"aux"/None)."""
    head, sep, rest = raw.partition(":")
    if sep and head in PREFIXES:
        return rest, head
    return raw, None


def role_by_name(name: str) -> str:
    """"aux" for a bare name MXNet's conventions make an auxiliary state, else "arg"."""
    return "aux" if name.endswith(AUX_SUFFIXES) else "arg"


def symbol_file_name(params_name: str) -> Optional[str]:
    """``PREFIX-symbol.json`` for a file named ``PREFIX-NNNN.params`` (any case), else None."""
    m = CHECKPOINT_PARAMS.match(params_name)
    return m.group("prefix") + "-symbol.json" if m else None
