"""Where a path really lies: one containment check for every place that confines paths.

A spec's include/template/graph paths (``spec/load.py``), the shards named by an index
(``formats/sharded.py``) and ONNX external data (``formats/onnx.py``) must stay under a folder,
symbolic links resolved.
"""

from __future__ import annotations

import os


def within(path, roots, itself: bool = True) -> bool:
    """Does ``path``, symbolic links resolved, lie under one of ``roots`` (resolved too)?

    ``itself``: whether a root itself counts as inside.  May raise OSError/ValueError for a name
    the file system cannot look up (a NUL byte, a name too long)."""
    real = os.path.realpath(path)
    for root in roots:
        r = os.path.realpath(root)
        if (itself and real == r) or real.startswith(r.rstrip(os.sep) + os.sep):
            return True
    return False


def checkpoint_dir(path) -> str:
    """The folder a checkpoint lives in, where its config files lie beside it: the folder itself for a
    directory (a sharded checkpoint as ``apply -s DIR`` takes it), else the folder of the file (an index too)."""
    path = os.path.abspath(path)
    return path if os.path.isdir(path) else os.path.dirname(path)
