"""Scripts run by the MXNet oracle interpreter ($MAPSPEC_MXNET_PYTHON), and the helper that runs them.

The scripts import only mxnet, numpy and the standard library; they exchange data with the
tests through .npz/.json files.  ``run`` is imported by the tests.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(python: str, script: str, *args, timeout: float = 600) -> str:
    """Run ``script`` (a file in this folder) with the oracle interpreter; its stdout, or raise with stderr."""
    env = dict(os.environ, MXNET_ENGINE_TYPE="NaiveEngine", OMP_NUM_THREADS="2",
               MXNET_SUBGRAPH_BACKEND="NONE", MXNET_MKLDNN_ENABLED="0")  # reference kernels, all internals
    proc = subprocess.run([python, str(HERE / script), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"oracle {script} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc.stdout


def run_json(python: str, script: str, *args, timeout: float = 600):
    """Run a script that prints one JSON document as its last stdout line."""
    out = run(python, script, *args, timeout=timeout)
    return json.loads(out.strip().splitlines()[-1])
