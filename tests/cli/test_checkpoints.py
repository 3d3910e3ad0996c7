"""mapspec inspect and diff (mapspec/cli/checkpoints.py), called in-process through cli.run."""

from __future__ import annotations

import json

import numpy as np

from mapspec.formats import module

from cli_util import run


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


def test_diff_close_within_atol(tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    module("npz").save(a, {"x": np.zeros(4, np.float32)})
    module("npz").save(b, {"x": np.full(4, 1e-6, np.float32)})
    code, out, _ = run("diff", str(a), str(b), "--atol", "1e-5")
    assert code == 0 and "max |a-b| 1e-06" in out
