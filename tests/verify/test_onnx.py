"""The onnx runner: a torch model's weights converted into an ONNX model (a template exported by torch) and
run by onnxruntime, compared with the torch model layer by layer."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from mapspec import cli

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

HERE = Path(__file__).resolve().parent
NET = f"{HERE / 'bad_models.py'}:tiny_conv"
SPEC = """mapspec: 1
name: torch-to-onnx
source: {format: torch}
target: {format: onnx}
rules:
%s  - from: "<n:path>"
    to: "{n}"
verify:
  input: {shape: [1, 3, 8, 8]}
  source: {run: torch}
  target: {run: onnx}
"""


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture()
def files(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bad_models_onnx", HERE / "bad_models.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    template = mod.tiny_conv()
    torch.onnx.export(template, (torch.zeros(1, 3, 8, 8),), str(tmp_path / "template.onnx"), dynamo=False,
                      do_constant_folding=False)
    torch.manual_seed(1)
    other = mod.tiny_conv()  # other weights than the template's: the conversion must put them there
    for p in other.parameters():
        p.data.normal_()
    torch.save(other.state_dict(), tmp_path / "weights.pt")
    return tmp_path


@pytest.mark.parametrize("broken", [False, True])
def test_torch_to_onnx_runs_in_onnxruntime(files, broken):
    rule = ('  - from: "0.weight"\n    to: "0.weight"\n    apply: [{transpose: [0, 1, 3, 2]}]\n') if broken else ""
    spec = files / "s.yaml"
    spec.write_text(SPEC % rule)
    out = files / "out.onnx"
    code, _, err = run("apply", spec, "-s", files / "weights.pt", "-t", files / "template.onnx", "-o", out, "-q")
    assert code == 0, err
    code, text, err = run("verify", spec, "-s", files / "weights.pt", "-c", out, "--source-model", NET, "--layers")
    if not broken:
        assert code == 0 and "PASS" in text and "first divergence" not in text, text + err
    else:
        assert code == 1 and "first divergence: 0 -> /0/Conv" in text, text + err
        assert "likely cause: swapped kernel axes: 0.weight holds 0.weight" in text
