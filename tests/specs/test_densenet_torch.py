"""Shipped spec densenet/torchvision-to-efficient-pytorch, end to end, new and old torchvision keys."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest

from mapspec import cli

torch = pytest.importorskip("torch")

SPEC = "densenet/torchvision-to-efficient-pytorch"


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from mapspec.models.densenet import densenet121

    d = tmp_path_factory.mktemp("tv")
    torch.manual_seed(0)
    m = densenet121()
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.normal_()
            mod.running_var.uniform_(0.5, 2)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.normal_()
    sd = m.state_dict()
    torch.save(sd, d / "new.pth")
    # torchvision's old checkpoints: norm.1 / conv.2 keys in dense layers, no num_batches_tracked
    old = {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k): v
           for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    assert "features.denseblock1.denselayer1.norm.1.weight" in old
    torch.save(old, d / "old.pth")
    return d, sd


@pytest.mark.slow
@pytest.mark.parametrize("which", ["new", "old"])
def test_converts_and_loads_strictly(checkpoints, which):
    from mapspec.models.densenet import efficient_densenet121

    d, sd = checkpoints
    out = d / f"eff_{which}.pth"
    code, _, err = run("apply", SPEC, "-s", d / f"{which}.pth", "-o", out, "--force", "-q")
    assert code == 0, err
    got = torch.load(out, weights_only=True)
    model = efficient_densenet121()
    model.load_state_dict(got, strict=True)
    # independent expectation: every key identical but norm5 -> norm_final
    for k, v in sd.items():
        k2 = k.replace("features.norm5.", "features.norm_final.")
        assert torch.equal(got[k2], v if not k.endswith("num_batches_tracked") or which == "new"
                           else torch.tensor(0)), k
    code, text, _ = run("verify", SPEC, "-s", d / "new.pth", "-c", out)
    assert code == 0 and "max |a-b| 0," in text


def test_condition_excluded_rule_message(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text('mapspec: 1\nrules:\n  - from: "a.<p:word>"\n    absent: ["a.nbt"]\n    to: "b.{p}"\n'
                    '  - from: "<x:path>"\n    to: "{x}"\n')
    torch.save({"a.w": torch.zeros(1), "a.nbt": torch.zeros(1)}, tmp_path / "s.pth")
    code, _, err = run("plan", spec, "-s", tmp_path / "s.pth")
    assert code == 1
    assert ("rule 1 (from 'a.<p:word>'): matches no source tensor; its pattern matches 2 names (e.g. 'a.w') but "
            "its require:/absent: conditions exclude them; add 'optional: true' if that can happen") in err
