"""mapspec draft never lets order alone decide between candidates, and never maps around a left-over tensor.

Real files: a two-tower Caffe net (tests/two_tower.py) against torch modules that register the towers
in the other order, torch against torch with crossed names, and Kaiming's Caffe ResNet-50 layout
(conv1 with a bias) against torchvision's (tests/resnet_kaiming.py).  Values are checked against
the Caffe executor's output and the source tensors, never against the draft's own output.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml

import two_tower as tt
from checkpoint_util import run, tensors

pytest.importorskip("torch")

WHY = "shapes and order alone cannot tell (the graph does not order the candidates; names do not decide)"


def drafted(tmp_path, source, template):
    spec = tmp_path / "draft.yaml"
    code, out, err = run("draft", "-s", source, "-t", template, "-o", spec)
    assert code == 0, out + err
    doc = yaml.safe_load(spec.read_text())
    assert "relax" not in doc  # a draft turns no check off
    return spec, doc, out


def todo_names(doc) -> list:
    return [r["name"] for r in doc["rules"] if str(r.get("name", "")).startswith("TODO")]


def line_of(spec, text) -> int:
    return next(k for k, t in enumerate(spec.read_text().splitlines(), 1) if text in t)


def applied(tmp_path, doc, source, name="out.pth") -> dict:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    code, _, err = run("apply", path, "-s", source, "-o", tmp_path / name, "-q", "--force")
    assert code == 0, err
    return tensors(tmp_path / name)


def test_two_towers_are_told_apart_by_names_not_by_file_order(tmp_path):
    """Caffe lists tower_left first, torch registers right first: the names decide (left <- tower_left), and the
    converted torch net computes what the Caffe net computes."""
    proto, model = tt.caffe_files(tmp_path, "tower_left", "tower_right")
    template = tt.torch_template(tmp_path / "tpl.pth", first="left", second="right", torch_order=("right", "left"))
    spec, doc, out = drafted(tmp_path, model, template)
    assert "mapped 8 of 8 targets, 0 left open" in out and not todo_names(doc)
    got, src = applied(tmp_path, doc, model), tensors(model)
    for side in ("left", "right"):
        assert np.array_equal(got[f"{side}.weight"], src[f"tower_{side}[0]"])
        assert np.array_equal(got[f"{side}.bias"], src[f"tower_{side}[1]"])
    x = np.random.default_rng(1).standard_normal((1, 3, tt.HW, tt.HW)).astype(np.float32)
    mine = tt.torch_output(got, x, first="left", second="right", torch_order=("right", "left"))
    assert tt.cosine(mine, tt.caffe_output(proto, src, x)) > 0.99999


def test_opaque_tower_names_leave_both_towers_open(tmp_path):
    """tower_a/tower_b against path_q/path_p (path_q registered first): shapes and order alone would decide, so
    both targets are TODOs naming both candidates, and the draft does not plan until they are resolved."""
    proto, model = tt.caffe_files(tmp_path, "tower_a", "tower_b")
    template = tt.torch_template(tmp_path / "tpl.pth", first="path_p", second="path_q",
                                 torch_order=("path_q", "path_p"))
    spec, doc, out = drafted(tmp_path, model, template)
    assert "mapped 4 of 8 targets, 4 left open, 4 source tensors unused; 2 TODO rules" in out
    assert todo_names(doc) == [f"TODO path_q (path_q.weight, path_q.bias): {WHY}; candidates tower_a, tower_b",
                               f"TODO path_p (path_p.weight, path_p.bias): {WHY}; candidates tower_a, tower_b"]
    code, _, err = run("plan", spec, "-s", model)
    assert code == 1
    assert f"draft.yaml:{line_of(spec, 'from: ' + repr('TODO: path_q'))}:10: rule 1 (TODO path_q (" in err, err
    assert f"draft.yaml:{line_of(spec, 'from: ' + repr('TODO: path_p'))}:10: rule 2 (TODO path_p (" in err, err
    code, _, err = run("apply", spec, "-s", model, "-o", tmp_path / "x.pth")
    assert code == 1 and "TODO path_q" in err and not (tmp_path / "x.pth").exists()
    # resolved as the Caffe graph says (tower_a is the Concat's first input, as path_p is torch's): right
    doc["rules"] = [{"from": "tower_a[0]", "to": "path_p.weight"}, {"from": "tower_a[1]", "to": "path_p.bias"},
                    {"from": "tower_b[0]", "to": "path_q.weight"}, {"from": "tower_b[1]", "to": "path_q.bias"}] \
        + [r for r in doc["rules"] if not str(r.get("name", "")).startswith("TODO")]
    got = applied(tmp_path, doc, model)
    x = np.random.default_rng(2).standard_normal((1, 3, tt.HW, tt.HW)).astype(np.float32)
    mine = tt.torch_output(got, x, first="path_p", second="path_q", torch_order=("path_q", "path_p"))
    assert tt.cosine(mine, tt.caffe_output(proto, tensors(model), x)) > 0.99999


def test_names_beat_file_order_without_a_graph(tmp_path):
    """torch -> torch (no graph on either side): encoder.*/decoder.* against decoder_proj.* listed first: the
    names decide, crossing the file order."""
    import torch

    rng = np.random.default_rng(3)
    src = {f"{m}.{r}": rng.standard_normal(s).astype(np.float32)
           for m in ("encoder", "decoder") for r, s in (("weight", (6, 6)), ("bias", (6,)))}
    torch.save({k: torch.from_numpy(v) for k, v in src.items()}, tmp_path / "a.pth")
    torch.save({f"{m}_proj.{r}": torch.zeros(v.shape) for m in ("decoder", "encoder") for r, v in
                (("weight", src["encoder.weight"]), ("bias", src["encoder.bias"]))}, tmp_path / "b.pth")
    spec, doc, out = drafted(tmp_path, tmp_path / "a.pth", tmp_path / "b.pth")
    assert "mapped 4 of 4 targets, 0 left open" in out
    got = applied(tmp_path, doc, tmp_path / "a.pth")
    for m in ("encoder", "decoder"):
        for r in ("weight", "bias"):
            assert np.array_equal(got[f"{m}_proj.{r}"], src[f"{m}.{r}"])


def test_same_shapes_without_graph_or_names_are_todos(tmp_path):
    """torch -> torch, opaque names, two layers of one shape: a TODO per target, never the file order."""
    import torch

    torch.save({"p.weight": torch.ones(4, 3), "q.weight": torch.full((4, 3), 2.0)}, tmp_path / "a.pth")
    torch.save({"x.weight": torch.zeros(4, 3), "y.weight": torch.zeros(4, 3)}, tmp_path / "b.pth")
    spec, doc, out = drafted(tmp_path, tmp_path / "a.pth", tmp_path / "b.pth")
    assert todo_names(doc) == [f"TODO x (x.weight): {WHY}; candidates p, q",
                               f"TODO y (y.weight): {WHY}; candidates p, q"]
    assert [r for r in doc["rules"] if "name" not in r] == []


@pytest.mark.slow
def test_kaiming_resnet50_conv1_bias_is_not_dropped(tmp_path):
    """Kaiming's Caffe ResNet-50 (conv1 with a bias) -> torchvision's layout (conv1 without): the bias is a TODO and
    bn1.running_mean, where it belongs, is held back; the TODO's own rule gives the Caffe net's output, the
    'obvious' completion (drop the bias, map the mean as is) does not.  The shortcut (res2a_branch1, listed first
    by Caffe, last by torch, the shape of res2a_branch2c) is paired by the graph: every other target is exact."""
    import resnet_kaiming as rk

    proto, model = rk.caffe_files(tmp_path, width=8, classes=10, hw=32)
    template = rk.torch_template(tmp_path / "tv.pth", width=8, classes=10)
    spec, doc, out = drafted(tmp_path, model, template)
    assert "mapped 319 of 320 targets, 1 left open, 2 source tensors unused; 1 TODO rule:" in out
    fix = {"from": "bn_conv1[0]", "to": "bn1.running_mean",
           "apply": [{"div": {"by": "bn_conv1[2]", "zero": 0}}, {"sub": {"by": "conv1[1]"}}]}
    assert todo_names(doc) == [
        "TODO conv1[1] (the bias of conv1) is not used, while its weight maps to conv1.weight, a layer without bias: "
        "bn_conv1 reads conv1's output, so the bias belongs in its mean: bn1.running_mean is left open; write it as "
        "{from: 'bn_conv1[0]', to: bn1.running_mean, apply: [{div: {by: 'bn_conv1[2]', zero: 0}}, "
        "{sub: {by: 'conv1[1]'}}]}"]
    code, _, err = run("plan", spec, "-s", model)
    assert code == 1 and f"draft.yaml:{line_of(spec, repr('TODO: conv1[1]'))}:" in err, err
    src = tensors(model)
    x = np.random.default_rng(4).standard_normal((1, 3, 32, 32)).astype(np.float32)
    want = rk.caffe_output(proto, src, x, classes=10)
    rest = doc["rules"][1:]
    got = applied(tmp_path, {**doc, "rules": [fix] + rest}, model, "fold.pth")
    assert np.array_equal(got["layer1.0.downsample.0.weight"], src["res2a_branch1[0]"])
    assert np.array_equal(got["layer1.0.conv3.weight"], src["res2a_branch2c[0]"])
    mine = rk.torch_output(got, x, width=8, classes=10)
    assert tt.cosine(mine, want) > 0.9999999 and np.abs(mine - want).max() < 1e-3
    obvious = {**fix, "apply": fix["apply"][:1]}
    got = applied(tmp_path, {**doc, "rules": [obvious, {"from": "conv1[1]", "drop": True}] + rest}, model,
                  "drop.pth")
    mine = rk.torch_output(got, x, width=8, classes=10)
    assert np.abs(mine - want).max() > 1  # what dropping the bias costs (cosine 0.99993 on these seeded weights)


@pytest.mark.parametrize("names,todo", [(("tower_left", "tower_right", "left", "right"), False),
                                        (("tower_a", "tower_b", "path_p", "path_q"), True)])
def test_parallel_towers_folded_into_a_caffe_net_listed_the_other_way(tmp_path, names, todo):
    """Towers of convolution + BatchNorm against a Caffe net with them folded (convolutions with a bias), listed in
    the other order: a fold is a pairing like any other, so names decide it or it is left open."""
    a, b, p, q = names
    proto, model = tt.caffe_files(tmp_path / "src", a, b, bn=True)
    target = tmp_path / "folded.prototxt"
    target.write_text(tt.caffe_prototxt(p, q, order=(q, p)))
    spec, doc, out = drafted(tmp_path, model, target)
    if todo:
        assert todo_names(doc) == [f"TODO {q} ({q}[0], {q}[1]): {WHY}; candidates tower_a, tower_b",
                                   f"TODO {p} ({p}[0], {p}[1]): {WHY}; candidates tower_a, tower_b"]
        return
    assert "mapped 8 of 8 targets, 0 left open" in out and not todo_names(doc)
    got = tmp_path / "got.caffemodel"
    assert run("apply", spec, "-s", model, "-o", got, "-q", "--allow-path", tmp_path)[0] == 0, "apply"
    x = np.random.default_rng(5).standard_normal((1, 3, tt.HW, tt.HW)).astype(np.float32)
    folded = tt.caffe_output(target, tensors(got), x)
    assert tt.cosine(folded, tt.caffe_output(proto, tensors(model), x)) > 0.99999


def test_module_lists_order_is_not_read_as_the_chain(tmp_path):
    """Two towers (a 3x3 and a 1x1 convolution, each with a BatchNorm of 4 channels; Caffe lists both convolutions,
    then both BatchNorms) against torch modules held in lists (convs.0, convs.1, then bns.0, bns.1): the
    convolutions pair by shape, but bns.0 listed after convs.1 says nothing about which BatchNorm it is (another
    module), so both are left open."""
    import torch
    from torch import nn

    from mapspec.models.seeded import write_caffemodel

    def conv(name, k, p):
        return (f'layer {{ name: "{name}" type: "Convolution" bottom: "stem" top: "{name}" convolution_param {{ '
                f'num_output: 4 kernel_size: {k} pad: {p} bias_term: false }} }}\n')

    def bn(name):
        return (f'layer {{ name: "{name}_bn" type: "BatchNorm" bottom: "{name}" top: "{name}" }}\n'
                f'layer {{ name: "{name}_scale" type: "Scale" bottom: "{name}" top: "{name}" '
                f'scale_param {{ bias_term: true }} }}\n')

    proto = tmp_path / "net.prototxt"
    proto.write_text('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 6 '
                     'dim: 6 } } }\n'
                     'layer { name: "stem" type: "Convolution" bottom: "data" top: "stem" convolution_param { '
                     'num_output: 4 kernel_size: 3 pad: 1 } }\n' + conv("conv_a", 3, 1) + conv("conv_b", 1, 0) + bn("conv_a") + bn("conv_b")
                     + 'layer { name: "concat" type: "Concat" bottom: "conv_a" bottom: "conv_b" top: "concat" }\n'
                     'layer { name: "fc" type: "InnerProduct" bottom: "concat" top: "fc" inner_product_param { '
                     'num_output: 5 } }\n')
    write_caffemodel(str(proto), str(tmp_path / "net.caffemodel"), seed=9)
    m = nn.Module()
    m.stem = nn.Conv2d(3, 4, 3, padding=1)
    m.convs = nn.ModuleList([nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.Conv2d(4, 4, 1, bias=False)])
    m.bns = nn.ModuleList([nn.BatchNorm2d(4), nn.BatchNorm2d(4)])
    m.fc = nn.Linear(8 * 36, 5)
    torch.save(m.state_dict(), tmp_path / "tpl.pth")
    spec, doc, out = drafted(tmp_path, tmp_path / "net.caffemodel", tmp_path / "tpl.pth")
    mapped = {**doc, "rules": [r for r in doc["rules"] if "name" not in r], "relax": ["missing-target", "unused-source"]}
    got = applied(tmp_path, mapped, tmp_path / "net.caffemodel")
    src = tensors(tmp_path / "net.caffemodel")
    assert np.array_equal(got["convs.0.weight"], src["conv_a[0]"]) and np.array_equal(got["convs.1.weight"],
                                                                                       src["conv_b[0]"])
    assert todo_names(doc) == [
        f"TODO bns.{k} (bns.{k}.running_mean, bns.{k}.running_var, bns.{k}.num_batches_tracked, bns.{k}.weight, "
        f"bns.{k}.bias): {WHY}; candidates conv_a_bn, conv_b_bn" for k in (0, 1)]
