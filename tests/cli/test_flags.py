"""The one flag vocabulary (mapspec/cli/flags.py): a flag means the same in every command that has it, and its
argument types refuse bad values with exit status 2 naming the flag."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from mapspec.cli import build_parser
from mapspec.formats import module

from cli_util import run


def _commands() -> dict:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_a_flag_means_the_same_in_every_command():
    seen = {}
    for name, p in _commands().items():
        for action in p._actions:
            for flag in action.option_strings:
                if flag in ("-h", "--help") or type(action).__name__ == "_Deprecated":
                    continue  # an old spelling keeps its old meaning and says so when used
                meaning = (action.dest, type(action).__name__, action.nargs, tuple(action.choices or ()))
                first = seen.setdefault(flag, (name, meaning))
                assert first[1] == meaning, f"{flag} means {meaning} in {name} but {first[1]} in {first[0]}"
    assert "--source" in seen and "--output" in seen


@pytest.fixture
def spec_and_source(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("mapspec: 1\nrules:\n  - from: w\n    to: w\n")
    module("npz").save(tmp_path / "a.npz", {"w": np.arange(3, dtype=np.float32)})
    return spec, tmp_path / "a.npz"


@pytest.mark.parametrize("flag,value,message", [
    ("--jobs", "0", "--jobs takes a whole number >= 1, not '0'"),
    ("--jobs", "two", "--jobs takes a whole number >= 1, not 'two'"),
    ("--max-output-size", "lots", "--max-output-size"),
])
def test_bad_flag_values_exit_2_naming_the_flag(spec_and_source, tmp_path, flag, value, message):
    spec, src = spec_and_source
    code, _, err = run("apply", str(spec), "-s", str(src), "-o", str(tmp_path / "o.npz"), flag, value)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "o.npz").exists()


def test_an_option_the_format_does_not_take_is_refused_naming_the_flag(spec_and_source, tmp_path):
    spec, src = spec_and_source
    code, _, err = run("apply", str(spec), "-s", str(src), "-o", str(tmp_path / "o.npz"),
                       "--source-option", "symbol=x", "--source-format", "npz")
    assert code != 0 and "--source-option" in err and "'symbol'" in err
    assert not (tmp_path / "o.npz").exists()
