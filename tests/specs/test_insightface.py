"""insightface/mxnet-to-iresnet end to end: an insightface fresnet ResNet built and saved by real MXNet with random
weights (tests/mxnet_oracle/fresnet.py), converted by the shipped spec, loaded strictly into the registered iresnet
(arcface_torch's layout); real MXNet's embedding on raw pixels against iresnet's on the same pixels through the
spec's verify.target.input step (the normalisation MXNet's graph does inside)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from mapspec import cli

from mxnet_oracle import run as oracle

torch = pytest.importorskip("torch")

SPEC = "insightface/mxnet-to-iresnet"


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _target_runner(converted, depth):
    """The torch side exactly as `mapspec verify` builds it from the shipped spec (its input step included)."""
    from mapspec.resources import shipped_specs
    from mapspec import load_spec
    from mapspec.verify.core import _side
    from mapspec.verify.runners import make_runner

    spec = load_spec(str(shipped_specs()[SPEC]))
    cfg = {**spec.verify["target"], "params": {"depth": depth, "num_features": 128}}
    side = _side("target", cfg, spec, str(converted), "torch", None, None, None, {})
    return make_runner(side)


@pytest.mark.slow
@pytest.mark.parametrize("depth", [18, 50])
def test_fresnet_to_iresnet_gives_real_mxnets_embedding(mxnet_python, depth, tmp_path):
    from mapspec.models.iresnet import UNITS, iresnet

    sym, params = tmp_path / "model-symbol.json", tmp_path / "model-0000.params"
    oracle(mxnet_python, "fresnet.py", sym, params, ",".join(map(str, UNITS[depth])), "64,64,128,256,512", depth)
    out = tmp_path / "iresnet.pth"
    code, _, err = run("apply", SPEC, "-s", params, "-o", out, "-q")
    assert code == 0, err
    model = iresnet(depth, 128)
    model.load_state_dict(torch.load(out, weights_only=True), strict=True)
    assert len(model.layer3) == UNITS[depth][2] and model.fc.out_features == 128
    x = np.random.default_rng(depth).uniform(0, 255, (2, 3, 112, 112)).astype(np.float32)
    np.savez(tmp_path / "in.npz", data=x)
    oracle(mxnet_python, "forward.py", sym, params, tmp_path / "in.npz", tmp_path / "out.npz")
    theirs = np.load(tmp_path / "out.npz")["fc1_output"]
    ours = next(iter(_target_runner(out, depth).run(x)[0].values()))
    assert ours.shape == theirs.shape == (2, 128)
    assert cosine(ours, theirs) >= 0.99999
    assert np.abs(ours - theirs).max() <= 1e-3 * np.abs(theirs).max()
    # without the step the same model is far off: the step is what makes them agree
    with torch.no_grad():
        raw = model(torch.from_numpy(x)).numpy()
    assert cosine(raw, theirs) < 0.999
    # mapspec's MXNet executor vs iresnet, through the spec's verify: section (random weights: embeddings ~1e3)
    from mapspec.resources import shipped_specs

    spec = tmp_path / "mxnet-to-iresnet.yaml"
    spec.write_text(shipped_specs()[SPEC].read_text().replace("params: {depth: 50, num_features: 512}",
                                                              f"params: {{depth: {depth}, num_features: 128}}"))
    code, text, err = run("verify", spec, "-s", params, "-c", out, "--atol", 1e-5 * float(np.abs(theirs).max()))
    assert code == 0 and "\nPASS (" in "\n" + text, text + err
    # the user's own model from a file on the command line (arcface_torch's, here ours): the spec's input step holds
    user = tmp_path / "my_iresnet.py"
    user.write_text(f"from mapspec.models.iresnet import iresnet\n\ndef build():\n    return iresnet({depth}, 128)\n")
    code, text, err = run("verify", SPEC, "-s", params, "-c", out, "--target-model", f"{user}:build",
                          "--atol", 1e-5 * float(np.abs(theirs).max()))
    assert code == 0 and "\nPASS (" in "\n" + text, text + err


def test_iresnet_refuses_a_depth_it_does_not_know():
    from mapspec.errors import MapspecError
    from mapspec.models.iresnet import iresnet

    with pytest.raises(MapspecError, match="iresnet depth 20 is not one of 18, 34, 50, 100"):
        iresnet(depth=20, num_features=8)


def test_a_spec_names_no_model_file(tmp_path):
    """Your own model code comes only from the command line (--target-model file.py:function); a spec naming a
    file is refused where it says so."""
    from mapspec.resources import shipped_specs

    spec = tmp_path / "s.yaml"
    spec.write_text(shipped_specs()[SPEC].read_text().replace("model: iresnet, params: {depth: 50, num_features: 512}",
                                                              "model: \"my_iresnet.py:build\""))
    code, _, err = run("validate", spec)
    assert code == 1 and "verify.target.model: 'my_iresnet.py:build' names code, not a registered model factory" in err
    assert "--target-model on the command line" in err
