"""``python -m mapspec`` (mapspec/__main__.py)."""

from __future__ import annotations

import subprocess
import sys


def test_console_script_runs():
    r = subprocess.run([sys.executable, "-m", "mapspec", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("mapspec ")
