"""The command line, called in-process through cli.run(argv, stdout=..., stderr=...)."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest

from mapspec import cli
from mapspec.formats import module


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def ckpt(tmp_path):
    p = tmp_path / "a.npz"
    module("npz").save(p, {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.arange(2, dtype=np.int64)})
    return p


def test_inspect_table_and_json(ckpt):
    code, out, _ = run("inspect", str(ckpt))
    assert code == 0
    assert out.splitlines()[0].split() == ["name", "shape", "dtype", "values", "bytes"]
    assert "w     2x3    float32  6       24 B" in out
    assert "2 tensors, 8 values, 40 B; format npz" in out
    code, out, _ = run("inspect", str(ckpt), "--json")
    doc = json.loads(out)
    assert doc["tensors"][0] == {"name": "w", "shape": [2, 3], "dtype": "float32", "numel": 6, "nbytes": 24}
    assert doc["total"] == {"tensors": 2, "numel": 8, "nbytes": 40}


def test_inspect_missing_file_is_a_clean_error(tmp_path):
    code, out, err = run("inspect", str(tmp_path / "nope.npz"))
    assert code == 1
    assert err == f"mapspec: error: {tmp_path / 'nope.npz'}: no such file\n"


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


def test_plan_and_diff(tmp_path, ckpt):
    spec = tmp_path / "s.yaml"
    spec.write_text("mapspec: 1\nrules:\n  - from: w\n    to: weight\n    apply: [{transpose: [1, 0]}]\n"
                    "  - from: b\n    to: bias\n")
    code, out, err = run("plan", str(spec), "--source", str(ckpt))
    assert code == 0, err
    assert "w       2x3    transpose(axes=[1,0])  weight  3x2    float32" in out
    assert out.rstrip().endswith("coverage: OK")
    o1, o2 = tmp_path / "o1.npz", tmp_path / "o2.npz"
    assert run("apply", str(spec), "-s", str(ckpt), "-o", str(o1), "-q")[0] == 0
    assert run("apply", str(spec), "-s", str(ckpt), "-o", str(o2), "-q")[0] == 0
    code, out, _ = run("diff", str(o1), str(o2))
    assert code == 0 and "2 common tensors, 0 differ" in out
    code, out, _ = run("diff", str(ckpt), str(o1))
    assert code == 1
    assert "only in" in out
    # a numeric difference within and beyond atol
    module("npz").save(o2, {"weight": np.arange(6, dtype=np.float32).reshape(3, 2).T.T + 0.01,
                            "bias": np.arange(2, dtype=np.int64)})
    code, out, _ = run("diff", str(o1), str(o2), "--json")
    doc = json.loads(out)
    assert code == 1 and doc["tensors"][0]["status"] == "DIFFERENT"


def test_diff_close_within_atol(tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    module("npz").save(a, {"x": np.zeros(4, np.float32)})
    module("npz").save(b, {"x": np.full(4, 1e-6, np.float32)})
    code, out, _ = run("diff", str(a), str(b), "--atol", "1e-5")
    assert code == 0 and "max |a-b| 1e-06" in out


def test_specs_lists_shipped_specs():
    code, out, _ = run("specs")
    assert code == 0 and "densenet/caffe-to-torchvision" in out


def test_shipped_spec_by_name_unknown(tmp_path, ckpt):
    code, _, err = run("plan", "densenet/caffe-to-torchvisoin", "-s", str(ckpt))
    assert code == 1
    assert "did you mean densenet/caffe-to-torchvision" in err  # resnet/caffe-to-torchvision is close too


def test_console_script_runs():
    r = subprocess.run([sys.executable, "-m", "mapspec", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("mapspec ")
