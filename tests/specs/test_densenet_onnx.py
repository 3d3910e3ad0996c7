"""densenet/torchvision-to-onnx end to end: a tiny torch DenseNet exported to ONNX as the template,
other weights converted into it by the spec, and onnxruntime's output compared with torch's."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

from mapspec import cli
from mapspec.formats import open_checkpoint

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def seeded_densenet(seed: int):
    from mapspec.models.densenet import DenseNet

    torch.manual_seed(seed)
    m = DenseNet(growth_rate=4, block_config=(2, 3), num_init_features=8, num_classes=5).eval()
    with torch.no_grad():
        for v in m.state_dict().values():
            if v.dtype.is_floating_point:
                v.copy_(torch.rand_like(v) + 0.5)  # distinct values: the exporter merges equal initializers
    return m


def export(model, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, 32, 32),), str(path), dynamo=False, do_constant_folding=False)


@pytest.mark.parametrize("old_keys", [False, True])
@pytest.mark.parametrize("external", [False, True])
def test_torchvision_to_onnx_runs_like_torch(tmp_path, old_keys, external):
    template = tmp_path / "template.onnx"
    export(seeded_densenet(0), template)
    model = seeded_densenet(1)
    state = dict(model.state_dict())
    if old_keys:  # torchvision's pre-0.4 names: norm.1, conv.2
        state = {k.replace(".norm1.", ".norm.1.").replace(".conv2.", ".conv.2."): v for k, v in state.items()
                 if not k.endswith("num_batches_tracked")}
    src = tmp_path / "densenet.pth"
    torch.save(state, src)
    out = tmp_path / "densenet.onnx"
    args = ["apply", "densenet/torchvision-to-onnx", "-s", src, "-o", out, "--template", template]
    if external:
        args += ["--target-option", "external_data=true"]
    code, text, err = run(*args)
    assert code == 0, err
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32)
    sess = ort.InferenceSession(str(out))
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
        before = seeded_densenet(0)(torch.from_numpy(x)).numpy()
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
    assert np.abs(before - want).max() > 1e-2  # the template's own weights would not pass
    assert (tmp_path / "densenet.onnx.data").exists() == external
    with open_checkpoint(out) as r:  # our reader of our output, external data included
        for k, v in model.state_dict().items():
            if not k.endswith("num_batches_tracked"):
                assert np.array_equal(r.read(k), v.numpy()), k


def plain_densenet(seed: int = 0):
    """torch's own initialisation (activations of a usual size), BatchNorm randomised so that no two
    initializers are equal; also the factory `mapspec verify --source-model` builds the original from."""
    from mapspec.models.densenet import DenseNet

    torch.manual_seed(seed)
    m = DenseNet(growth_rate=4, block_config=(2, 3), num_init_features=8, num_classes=5).eval()
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.normal_(0, 0.1)
            mod.running_var.uniform_(0.5, 2)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.normal_(0, 0.1)
    return m


@pytest.mark.parametrize("same", [True, False])
def test_verify_runs_torch_against_onnxruntime(tmp_path, same):
    template = tmp_path / "template.onnx"
    export(plain_densenet(0), template)
    for seed in (1, 2):
        torch.save(plain_densenet(seed).state_dict(), tmp_path / f"w{seed}.pth")
    out = tmp_path / "densenet.onnx"
    code, _, err = run("apply", "densenet/torchvision-to-onnx", "-s", tmp_path / "w1.pth", "-o", out,
                       "--template", template, "-q")
    assert code == 0, err
    # the original is the weights converted (passes) or other weights (the comparison must fail)
    src = tmp_path / ("w1.pth" if same else "w2.pth")
    code, text, err = run("verify", "densenet/torchvision-to-onnx", "-s", src, "-c", out,
                          "--source-model", f"{__file__}:plain_densenet", "--input-shape", "1,3,32,32")
    if same:
        assert code == 0 and "PASS" in text, text + err
    else:
        assert code == 1 and "FAIL" in text, text + err
