"""resnet/caffe-to-torchvision end to end: Kaiming's Caffe ResNet-50/101/152 (tests/resnet_kaiming.py builds
the prototxt with Kaiming's names and a torch module with torchvision's state-dict names and order) converted by the
shipped spec, then mapspec's Caffe executor on the Caffe net against that torch module on the converted state dict;
`mapspec draft` on the pair maps every tensor it maps as the shipped spec does."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest

from mapspec import cli
from mapspec.formats import open_checkpoint

torch = pytest.importorskip("torch")

import resnet_kaiming as rk

ROOT = Path(__file__).resolve().parents[2]

SPEC = "resnet/caffe-to-torchvision"
WIDTH, HW = 4, 32


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.slow
@pytest.mark.parametrize("depth", [50, 101, 152])
def test_kaiming_caffe_resnet_to_torchvision_layout_parity(depth, tmp_path):
    proto, model = rk.caffe_files(tmp_path, width=WIDTH, hw=HW, seed=depth, depth=depth)
    out = tmp_path / "tv.pth"
    code, _, err = run("apply", SPEC, "-s", model, "-o", out, "-q")
    assert code == 0, err
    state = torch.load(out, weights_only=True)
    template = rk.torch_module(WIDTH, depth=depth).state_dict()
    assert sorted(state) == sorted(template)  # torchvision's names, every one
    x = np.random.default_rng(depth).uniform(-120, 150, (2, 3, HW, HW)).astype(np.float32)
    with open_checkpoint(str(model)) as r:
        want = rk.caffe_output(proto, r, x)
    got = rk.torch_output({k: v.numpy() for k, v in state.items()}, x, WIDTH, depth=depth)  # strict load
    assert cosine(want, got) >= 0.99999 and np.abs(want.reshape(got.shape) - got).max() < 1e-3 * np.abs(want).max()
    factory = tmp_path / "tv_model.py"
    factory.write_text(f"import sys\nsys.path.insert(0, {str(ROOT / 'tests')!r})\nimport resnet_kaiming\n\n"
                       f"def net():\n    return resnet_kaiming.torch_module({WIDTH}, depth={depth})\n")
    code, text, err = run("verify", SPEC, "-s", model, "-c", out, "--source-graph", proto,
                          "--target-model", f"{factory}:net", "--input-shape", f"1,3,{HW},{HW}",
                          "--atol", 1e-5 * float(np.abs(want).max()))  # seeded weights: outputs ~1e5
    assert code == 0 and "\nPASS (" in "\n" + text, text + err


def test_conv1_bias_is_folded_into_bn1_mean(tmp_path):
    """bn1.running_mean = mean / factor - conv1.bias, against the caffemodel's own blobs."""
    proto, model = rk.caffe_files(tmp_path, width=WIDTH, hw=HW, depth=50)
    out = tmp_path / "tv.pth"
    assert run("apply", SPEC, "-s", model, "-o", out, "-q")[0] == 0
    state = torch.load(out, weights_only=True)
    with open_checkpoint(str(model)) as r:
        mean, factor, bias = (np.array(r.read(n)) for n in ("bn_conv1[0]", "bn_conv1[2]", "conv1[1]"))
    assert "conv1.bias" not in state and factor[0] != 1 and np.abs(bias).min() > 0
    np.testing.assert_allclose(state["bn1.running_mean"].numpy(), mean / factor[0] - bias, rtol=1e-6)


def _benchmark_draft():
    spec = importlib.util.spec_from_file_location("benchmark_draft", ROOT / "benchmarks" / "draft.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_draft_agrees_with_the_shipped_spec(tmp_path):
    """What the draft maps it maps bit for bit as the shipped spec does; it leaves bn1.running_mean (conv1's bias
    folded in) open."""
    _, model = rk.caffe_files(tmp_path / "r", width=WIDTH, hw=HW)
    template = rk.torch_template(tmp_path / "r" / "tv.pth", width=WIDTH)
    from mapspec.resources import shipped_specs

    m = _benchmark_draft().measure(tmp_path, "ResNet-50 Kaiming", str(shipped_specs()[SPEC]), model, ".pth",
                                   template)
    assert (m["wrong"], m["open"], m["open_names"]) == (0, 1, ["bn1.running_mean"]), m
    assert m["exact"] == m["targets"] - 1 == 319
