"""mapspec verify: output parity, layer-by-layer comparison and the diagnosis of the first divergence."""

from __future__ import annotations

import io

import numpy as np
import pytest

from mapspec import cli
from mapspec.verify import compare, diagnose

from conftest import fixture_file


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_compare_metrics():
    a = np.array([1.0, 2.0, -4.0])
    c = compare(a, a + np.array([0, 0.5, 0]))
    assert c.max_abs == 0.5 and c.max_rel == 0.125
    assert c.cosine == pytest.approx(np.dot(a, a + [0, .5, 0]) / np.linalg.norm(a) / np.linalg.norm(a + [0, .5, 0]))
    nan = compare(a, np.array([1.0, np.nan, -4.0]))
    assert not nan.ok(1.0, 0.0)


def _bn_like(rng, c=8):
    return rng.standard_normal((1, c, 5, 5))


def test_diagnose_eps_mismatch():
    rng = np.random.default_rng(0)
    s = _bn_like(rng)
    var = np.r_[np.full(7, 4.0), 1e-4]
    a = np.sqrt((var + 1e-5) / (var + 1e-3))  # target used a smaller eps than the source... or the reverse
    t = s * a[None, :, None, None]
    assert "eps mismatch" in diagnose(s, t)[0]


def test_diagnose_uniform_scale_factor():
    rng = np.random.default_rng(1)
    s = _bn_like(rng)
    assert "moving-average factor" in diagnose(s, s * 31.6)[0]


def test_diagnose_gamma():
    rng = np.random.default_rng(2)
    s = _bn_like(rng)
    gamma = rng.uniform(0.2, 3, 8)
    assert "fix_gamma" in diagnose(s, s * gamma[None, :, None, None])[0]


def test_diagnose_offset_channel_order_and_transpose():
    rng = np.random.default_rng(3)
    s = _bn_like(rng)
    assert "offset" in diagnose(s, s + rng.uniform(1, 2, 8)[None, :, None, None])[0]
    assert "output channels are in reverse order" in diagnose(s, s[:, ::-1])[0]
    assert "transposed in height and width" in diagnose(s, s.swapaxes(2, 3))[0]
    assert "different shapes" in diagnose(s, s[:, :, :4])[0]


MFN = "mobilefacenet-mxnet/model_mobilefacenet-0200.params"


@pytest.fixture(scope="module")
def mfn_torch(tmp_path_factory):
    pytest.importorskip("torch")
    params = fixture_file(MFN)
    out = tmp_path_factory.mktemp("mfn") / "mobilefacenet.pth"
    code, _, err = run("apply", "mobilefacenet/mxnet-to-torch", "-s", params, "-o", out, "-q")
    assert code == 0, err
    return params, out


def test_mobilefacenet_mxnet_to_torch_parity(mfn_torch):
    params, out = mfn_torch
    image = fixture_file("images/Aaron_Eckhart_0001.jpg")
    for extra in ([], ["--input", image]):
        code, text, err = run("verify", "mobilefacenet/mxnet-to-torch", "-s", params, "-c", out, *extra)
        assert code == 0, text + err
        assert "PASS" in text


@pytest.mark.slow
def test_broken_eps_is_diagnosed_at_the_first_batchnorm(mfn_torch, tmp_path):
    params, _ = mfn_torch
    from mapspec.resources import shipped_specs

    text = shipped_specs()["mobilefacenet/mxnet-to-torch"].read_text()
    broken = text.replace('- add: {attr: eps, of: "{u}_batchnorm"}', "- add: 0.0").replace("- sub: 1.0e-5", "- sub: 0.0")
    assert broken != text
    spec = tmp_path / "broken.yaml"
    spec.write_text(broken)
    out = tmp_path / "b.pth"
    assert run("apply", spec, "-s", params, "-o", out, "-q")[0] == 0
    code, text, _ = run("verify", spec, "-s", params, "-c", out, "--layers")
    assert code == 1 and "FAIL" in text
    assert "first divergence: conv_1_batchnorm -> conv_1.bn" in text
    assert "eps mismatch" in text
