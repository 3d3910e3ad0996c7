"""A deliberately broken spec for each cause the README documents, diagnosed as that cause by
`mapspec verify --layers` (real MobileFaceNet MXNet checkpoint -> the torch MobileFaceNet; the
factor on a seeded Caffe DenseNet; the flatten order and the kernel flip are in tests/specs)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from mapspec import cli
from mapspec.resources import shipped_specs

from conftest import fixture_file

MFN = "mobilefacenet-mxnet/model_mobilefacenet-0200.params"
HERE = Path(__file__).resolve().parent


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


CONV1 = '''  - from: "<u:word>_conv2d_weight"
    to: "{u}.conv.weight"
'''

FIRST = """  - from: conv_1_conv2d_weight
    to: conv_1.conv.weight
    apply: [{}]
""".replace("{}", "{0}")

# cause -> (text replaced in mobilefacenet/mxnet-to-torch, its replacement, words the diagnosis must hold)
BREAKS = {
    "swapped kernel axes": (CONV1, FIRST.format("{transpose: [0, 1, 3, 2]}") + CONV1,
                            "swapped kernel axes: conv_1.conv.weight holds conv_1_conv2d_weight with its H and W"),
    "reversed channels": (CONV1, FIRST.format("{take: {indices: [2, 1, 0], axis: 1}}") + CONV1,
                          "input channels of conv_1.conv.weight are in reverse order: RGB vs BGR"),
    "flipped kernel": (CONV1, FIRST.format("{reverse: 2}, {reverse: 3}") + CONV1, "flipped kernel"),
    "gamma": ('    to: "{u}.bn.weight"\n    apply: [{fill: {value: 1, when: {attr: fix_gamma, of: "{u}_batchnorm"}}}]',
              '    to: "{u}.bn.weight"\n    apply: [{fill: 1}]', "gamma is missing or wrong"),
    "missing mean": ('    to: "{u}.bn.running_mean"\n', '    to: "{u}.bn.running_mean"\n    apply: [{mul: 0}]\n',
                     "a per-channel offset differs: the BatchNorm mean, beta"),
    "missing beta": ('  - from: "<u:word>_batchnorm_beta"\n    to: "{u}.bn.bias"\n',
                     '  - from: "<u:word>_batchnorm_beta"\n    to: "{u}.bn.bias"\n    apply: [{mul: 0}]\n',
                     "a per-channel offset differs: the BatchNorm mean, beta"),
    "eps": ('- add: {attr: eps, of: "{u}_batchnorm"}', "- add: 1.0e-5", "BatchNorm eps mismatch"),
}


@pytest.fixture(scope="module")
def params():
    pytest.importorskip("torch")
    return fixture_file(MFN)


@pytest.mark.slow
@pytest.mark.parametrize("cause", list(BREAKS))
def test_each_documented_cause_is_diagnosed(cause, params, tmp_path):
    old, new, expected = BREAKS[cause]
    text = shipped_specs()["mobilefacenet/mxnet-to-torch"].read_text()
    assert old in text
    spec = tmp_path / "broken.yaml"
    spec.write_text(text.replace(old, new, 1))
    out = tmp_path / "broken.pth"
    code, _, err = run("apply", spec, "-s", params, "-o", out, "-q")
    assert code == 0, err
    code, text, err = run("verify", spec, "-s", params, "-c", out, "--layers")
    assert code == 1 and "FAIL" in text, text + err
    first = "conv_1_conv2d -> conv_1.conv" if "conv2d" in old else "conv_1_batchnorm -> conv_1.bn"
    assert f"first divergence: {first}" in text, text
    causes = [l for l in text.splitlines() if l.startswith("  likely cause:")]
    assert causes and expected in causes[0], text


def test_shape_difference_is_diagnosed_even_when_the_model_then_fails(params, tmp_path):
    """A target model whose first convolution pads by 2, not 1: the layers up to where the model breaks are
    compared, the first is named with different shapes, and the failure is reported in one line."""
    out = tmp_path / "mfn.pth"
    assert run("apply", "mobilefacenet/mxnet-to-torch", "-s", params, "-o", out, "-q")[0] == 0
    code, text, err = run("verify", "mobilefacenet/mxnet-to-torch", "-s", params, "-c", out, "--layers",
                          "--target-model", f"{HERE / 'bad_models.py'}:mobilefacenet_pad2")
    assert code == 1 and "FAIL" in text, text + err
    assert "first divergence: conv_1_conv2d -> conv_1.conv" in text
    assert "likely cause: the activations have different shapes ((1, 64, 56, 56) vs (1, 64, 57, 57))" in text
    assert "error: target: the torch model failed on the input: RuntimeError" in text
