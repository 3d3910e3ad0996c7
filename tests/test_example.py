"""`mapspec example [NAME] [DIR]` (mapspec/example.py) and refusals when torch is missing."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest

from mapspec import cli
from mapspec.formats import module


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.slow
def test_example_dir_converts_and_verifies(tmp_path):
    pytest.importorskip("torch")
    d = tmp_path / "ex"
    code, out, err = run("example", d)
    assert code == 0, err
    assert {p.name for p in d.iterdir()} == {"DenseNet_121.prototxt", "DenseNet_121.caffemodel", "densenet121.pth"}
    assert f"wrote {d / 'densenet121.pth'}: 727 tensors" in out
    assert out.rstrip().splitlines()[-1] == "PASS (max |a-b| <= 0.0001 and cosine >= 0.99999)"
    # made again without --force: refused, naming the output file (never a temporary one)
    code, _, err = run("example", "densenet", d)
    assert code == 1
    assert err == f"mapspec: error: {d / 'DenseNet_121.prototxt'}: exists; pass --force to make the example again\n"
    assert not [p for p in d.iterdir() if p.name.endswith(".tmp")]


def test_example_errors(tmp_path):
    code, _, err = run("example", "resnet", tmp_path / "x")
    assert code == 1 and err == "mapspec: error: unknown example 'resnet' (examples: densenet)\n"
    f = tmp_path / "file"
    f.write_text("")
    code, _, err = run("example", f)
    assert code == 1 and err == f"mapspec: error: {f}: exists and is not a directory\n"


def test_without_torch_example_refuses_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    code, out, err = run("example", tmp_path / "ex")
    assert code == 1 and out == ""
    assert err == ("mapspec: error: mapspec example (it runs the converted DenseNet) needs PyTorch, which is not "
                   "installed here; install it with: pip install torch\n")
    assert not (tmp_path / "ex").exists()


def test_without_torch_reading_a_torch_file_refuses_in_one_line(tmp_path, monkeypatch):
    p = tmp_path / "w.pth"
    module("torch").save(p, {"w": np.arange(3, dtype=np.float32)})  # written without torch
    monkeypatch.setitem(sys.modules, "torch", None)
    code, _, err = run("inspect", p)
    assert code == 1
    assert err == "mapspec: error: the torch format needs PyTorch; install it (pip install torch)\n"
