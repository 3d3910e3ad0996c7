"""The command line's parser and entry points (mapspec/cli/__init__.py), called in-process through cli.run."""

from __future__ import annotations

import subprocess
import sys
from cli_util import run


def test_usage_errors_exit_2():
    code, _, err = run("apply", "x.yaml")
    assert code == 2
    assert "the following arguments are required: --source/-s" in err
    code, _, err = run("apply", "x.yaml", "-s", "a.npz")
    assert code == 2
    assert "the following arguments are required: -o/--output" in err
    code, _, err = run("frobnicate")
    assert code == 2 and "invalid choice: 'frobnicate'" in err


def test_no_command_prints_help():
    code, out, _ = run()
    assert code == 2 and "usage: mapspec" in out


def test_console_script_runs():
    r = subprocess.run([sys.executable, "-m", "mapspec", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("mapspec ")
