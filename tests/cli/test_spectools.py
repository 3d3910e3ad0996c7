"""mapspec validate and specs (mapspec/cli/spectools.py), called in-process through cli.run."""

from __future__ import annotations

from cli_util import run


def test_validate_reports_all_errors(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("mapspec: 1\nrules:\n  - from: a\n    to: b\n    apply: [{nope: 1}, {transpose: x}]\n")
    code, out, err = run("validate", str(spec))
    assert code == 1
    lines = err.splitlines()
    assert lines[0] == f"{spec}:5:14: rule 1 (from 'a'): unknown transform 'nope'; known transforms: " + ", ".join(
        sorted(__import__("mapspec.transforms", fromlist=["TRANSFORMS"]).TRANSFORMS))
    assert lines[1] == f"{spec}:5:36: rule 1 (from 'a'): transpose axes must be a list of integers, not 'x'"
    assert lines[2] == f"{spec}: 2 errors"


def test_specs_lists_shipped_specs():
    code, out, _ = run("specs")
    assert code == 0 and "densenet/caffe-to-torchvision" in out
