"""Shared test fixtures.

Real model files live outside the project (``../shared/fixtures`` beside the project
root, or ``$MAPSPEC_FIXTURES``); tests that need them skip cleanly when absent.
The MXNet oracle is a separate interpreter (``$MAPSPEC_MXNET_PYTHON``, a virtual
environment with ``mxnet==1.9.1`` and ``numpy<1.24``, made by ``.ci/run``); tests
that need it skip with the reason when it is not configured.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _fixtures_dir() -> Path | None:
    env = os.environ.get("MAPSPEC_FIXTURES")
    candidates = [Path(env)] if env else []
    candidates.append(ROOT.parent / "shared" / "fixtures")
    for c in candidates:
        if c.is_dir():
            return c
    return None


FIXTURES = _fixtures_dir()


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if FIXTURES is None:
        pytest.skip("real model fixtures not found (../shared/fixtures or $MAPSPEC_FIXTURES)")
    return FIXTURES


def fixture_file(rel: str) -> Path:
    """Path of one fixture file, or skip the test when it is missing."""
    if FIXTURES is None or not (FIXTURES / rel).exists():
        pytest.skip(f"fixture {rel} not found (../shared/fixtures or $MAPSPEC_FIXTURES)")
    return FIXTURES / rel


@pytest.fixture(scope="session")
def mxnet_python() -> str:
    """Interpreter of the MXNet oracle environment, or skip."""
    exe = os.environ.get("MAPSPEC_MXNET_PYTHON")
    if not exe:
        pytest.skip("MXNet oracle not configured: set MAPSPEC_MXNET_PYTHON to a python with mxnet==1.9.1 "
                    "(.ci/run creates one)")
    try:
        subprocess.run([exe, "-c", "import mxnet"], check=True, capture_output=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"MXNet oracle at {exe} is not usable: {e}")
    return exe
