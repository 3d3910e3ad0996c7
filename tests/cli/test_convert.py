"""mapspec plan and apply (mapspec/cli/convert.py), called in-process through cli.run."""

from __future__ import annotations

import json

import numpy as np

from mapspec.formats import module

from cli_util import run


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


def test_shipped_spec_by_name_unknown(tmp_path, ckpt):
    code, _, err = run("plan", "densenet/caffe-to-torchvisoin", "-s", str(ckpt))
    assert code == 1
    assert "did you mean densenet/caffe-to-torchvision" in err  # resnet/caffe-to-torchvision is close too
