"""verify.<side>.input: each side's own input step (channel order, scale, mean, std, layout), so that a graph
that normalises inside itself is compared with one that does not."""

from __future__ import annotations

import io
import textwrap

import numpy as np
import pytest

from mapspec import cli
from mapspec.errors import MapspecError
from mapspec.verify.preprocess import Preprocess, apply


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_step_order_channels_scale_mean_std_layout():
    x = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    step = Preprocess(scale=2.0, mean=(1.0, 2.0, 3.0), std=(4.0, 5.0, 8.0), channels="bgr", layout="nhwc")
    got = apply(step, x, "nchw", "verify.target")
    bgr = x[:, [2, 1, 0]]
    want = ((bgr * 2.0 - np.array([1.0, 2.0, 3.0]).reshape(1, 3, 1, 1)) / np.array([4.0, 5.0, 8.0]).reshape(1, 3, 1, 1))
    np.testing.assert_array_equal(got, want.transpose(0, 2, 3, 1).astype(np.float32))
    np.testing.assert_array_equal(apply(Preprocess(), x, "nchw", "v"), x)
    with pytest.raises(MapspecError, match="verify.source.input.mean has 2 values; the input has 3 channels"):
        apply(Preprocess(mean=(1.0, 2.0)), x, "nchw", "verify.source")


MODELS = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, inside):
        super().__init__()
        self.inside = inside
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        if self.inside:  # insightface's MXNet head: (x - 127.5) * 0.0078125 inside the graph
            x = (x - 127.5) * 0.0078125
        return self.conv(x)


def inside():
    return Net(True)


def plain():
    return Net(False)
'''

SPEC = '''
mapspec: 1
name: normalise-inside
source: {format: torch}
target: {format: torch}
rules:
  - {from: "<n:path>", to: "{n}"}
verify:
  input: {shape: [1, 3, 8, 8], range: [0, 255]}
  source: {run: model}
  target: {run: model%s}
'''


@pytest.fixture
def pair(tmp_path):
    torch = pytest.importorskip("torch")
    (tmp_path / "models.py").write_text(MODELS)
    torch.manual_seed(0)
    weights = tmp_path / "w.pth"
    torch.save({f"conv.{k}": v for k, v in torch.nn.Conv2d(3, 4, 3).state_dict().items()}, weights)
    return tmp_path, weights


@pytest.mark.parametrize("step, ok", [("", False), (", input: {mean: 127.5, std: 128}", True),
                                      (", input: {scale: 0.0078125, mean: 0.99609375}", True)])
def test_a_graph_that_normalises_inside_against_one_that_does_not(pair, step, ok):
    d, weights = pair
    spec = d / "s.yaml"
    spec.write_text(SPEC % step)
    models = d / "models.py"
    code, text, err = run("verify", spec, "-s", weights, "-c", weights, "--source-model", f"{models}:inside",
                          "--target-model", f"{models}:plain")
    assert code == (0 if ok else 1), text + err
    assert ("PASS" if ok else "FAIL") in text


@pytest.mark.parametrize("target, message", [
    ("{run: model, channels: rgb, input: {channels: bgr}}",
     "s.yaml:11:46: verify.target: channels 'rgb' and input.channels 'bgr' disagree: give the channel order once"),
    ("{run: model, input: {mean: [1, 2], std: [1, 2, 3]}}",
     "s.yaml:11:31: verify.target.input: mean has 2 values and std 3: one per channel each"),
    ("{run: model, input: {std: 0}}", "s.yaml:11:"),
    ("{run: model, input: {layout: nwhc}}", "s.yaml:11:"),
    ("{run: model, input: {offset: 1}}", "s.yaml:11:"),
])
def test_contradictory_or_mistyped_steps_are_spec_errors(tmp_path, target, message):
    spec = tmp_path / "s.yaml"
    spec.write_text((SPEC % "").replace("target: {run: model}", "target: " + target))
    code, text, err = run("validate", spec)
    assert code == 1 and message in err + text, text + err
    assert "Traceback" not in err
