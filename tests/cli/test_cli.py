"""The command line's parser (mapspec/cli/__init__.py), called in-process through cli.run."""

from __future__ import annotations

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
