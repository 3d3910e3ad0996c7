"""mapspec draft: specs proposed from a source and a template, judged against the shipped specs' outputs.

The oracle for "mapped right" is the shipped spec's own output (those specs are proved against
Keras/torch/MXNet by their end-to-end tests); the template given to draft holds zeros, so the
draft can only use names and shapes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from mapspec.formats import module, open_checkpoint

from checkpoint_util import run, tensors, tiny_caffenet
from conftest import fixture_file


def zeros_like_file(path, out):
    module(open_checkpoint(str(path)).format).save(str(out), {k: np.zeros_like(v) for k, v in tensors(path).items()})
    return out


def drafted_output(tmp_path, source, template, suffix, relax=()):
    spec = tmp_path / "draft.yaml"
    code, out, err = run("draft", "-s", source, "-t", template, "-o", spec)
    assert code == 0, out + err
    doc = yaml.safe_load(spec.read_text())
    doc["target"].pop("template")  # the writers check it; open targets are counted here instead
    assert not doc.get("relax")  # a draft relaxes no check: what it leaves open is a TODO rule
    doc["rules"] = [r for r in doc["rules"] if not str(r.get("name", "")).startswith("TODO")]
    loose = tmp_path / "loose.yaml"
    loose.write_text(yaml.safe_dump(doc))
    got = tmp_path / f"drafted{suffix}"
    code, _, err = run("apply", loose, "-s", source, "-o", got, "-q", *sum((["--relax", r] for r in relax), []))
    assert code == 0, err
    return spec, out, tensors(got)


def todos(spec) -> str:
    """The draft's TODO rules' texts, one a line."""
    return "\n".join(r["name"] for r in yaml.safe_load(Path(spec).read_text())["rules"]
                     if str(r.get("name", "")).startswith("TODO"))


def same_as_shipped(tmp_path, shipped_spec, source, prototxt, n):
    """Draft against a Caffe prototxt; the draft's output must equal the shipped spec's, tensor for tensor."""
    shipped = tmp_path / "shipped.caffemodel"
    assert run("apply", shipped_spec, "-s", source, "-t", prototxt, "-o", shipped, "-q")[0] == 0
    spec = tmp_path / "draft.yaml"
    code, out, err = run("draft", "-s", source, "-t", prototxt, "-o", spec)
    assert code == 0 and f"mapped {n} of {n} targets, 0 left open" in out, out + err
    got = tmp_path / "drafted.caffemodel"
    # the drafted spec names the template where it lies: outside its folder, so allowed explicitly
    assert run("apply", spec, "-s", source, "-o", got, "-q", "--allow-path", Path(prototxt).parent)[0] == 0
    want, have = tensors(shipped), tensors(got)
    assert sorted(want) == sorted(have) and all(np.array_equal(want[k], have[k]) for k in want)
    return spec


@pytest.fixture(scope="module")
def caffenet(tmp_path_factory):
    return tiny_caffenet(tmp_path_factory.mktemp("caffenet"))


@pytest.mark.parametrize("spec,n", [("caffenet/caffe-to-keras-grouped", 16), ("caffenet/caffe-to-keras", 22)])
def test_caffenet_to_keras_draft_matches_the_shipped_spec(caffenet, tmp_path, spec, n):
    shipped = tmp_path / "shipped.h5"
    assert run("apply", spec, "-s", caffenet / "tiny.caffemodel", "-o", shipped, "-q")[0] == 0
    template = zeros_like_file(shipped, tmp_path / "template.h5")
    path, out, got = drafted_output(tmp_path, caffenet / "tiny.caffemodel", template, ".h5")
    assert f"mapped {n} of {n} targets, 0 left open" in out
    want = tensors(shipped)
    assert sorted(got) == sorted(want)
    for k in want:
        assert np.array_equal(got[k], want[k]), k
    text = path.read_text()
    assert "reshape: [64, 32, -1]" in text  # fc6's C,H,W -> H,W,C rows, C from conv5
    if spec.endswith("keras"):  # a grouped convolution becomes two Keras layers: split, the second as also
        assert "split: {parts: 2, take: 1}" in text


def test_mobilefacenet_mxnet_to_caffe_draft(tmp_path):
    params = fixture_file("mobilefacenet-mxnet/model_mobilefacenet-0200.params")
    from mapspec.resources import shipped_specs

    proto = shipped_specs()["mobilefacenet/mxnet-to-caffe"].parent / "mobilefacenet.prototxt"
    spec = same_as_shipped(tmp_path, "mobilefacenet/mxnet-to-caffe", params, proto, 334)
    rules = yaml.safe_load(spec.read_text())["rules"]  # MXNet's fix_gamma carried over, read from the symbol
    assert {"from": "fc1_gamma", "to": "fc1_scale[0]",
            "apply": [{"fill": {"value": 1, "when": {"attr": "fix_gamma", "of": "fc1"}}}]} in rules


def _npz(path, tensors):
    module("npz").save(str(path), tensors)
    return path


def test_index_arithmetic_in_names(tmp_path):
    src, tgt = {}, {}
    for stage in (2, 3):
        for block in (0, 1, 2):  # each layer its own shape: with no graph, order alone decides nothing
            n = 3 * stage + block
            src[f"stage{stage}.block{block}.conv.weight"] = np.full((4, n), stage * 10 + block, np.float32)
            src[f"stage{stage}.block{block}.conv.bias"] = np.full((4,), stage, np.float32)
            tgt[f"layers.{stage - 1}.{block + 1}.linear.weight"] = np.zeros((4, n), np.float32)
            tgt[f"layers.{stage - 1}.{block + 1}.linear.bias"] = np.zeros((4,), np.float32)
    spec, out, got = drafted_output(tmp_path, _npz(tmp_path / "a.npz", src), _npz(tmp_path / "b.npz", tgt), ".npz")
    rules = yaml.safe_load(spec.read_text())["rules"]
    # numbers by index arithmetic; the word that differs (weight/bias) carried over as a word placeholder
    assert rules == [{"from": "stage<a>.block<b>.conv.<_w:word>", "to": "layers.{a-1}.{b+1}.linear.{_w}"}]
    for stage in (2, 3):
        for block in (0, 1, 2):
            assert got[f"layers.{stage - 1}.{block + 1}.linear.weight"][0, 0] == stage * 10 + block


def test_equal_candidates_are_left_open(tmp_path):
    """Two source layers fit one target layer equally well: a TODO naming both, never a guess."""
    src = _npz(tmp_path / "a.npz", {"p.weight": np.ones((4, 3), np.float32), "q.weight": np.ones((4, 3), np.float32)})
    tgt = _npz(tmp_path / "b.npz", {"x.weight": np.zeros((4, 3), np.float32)})
    spec, out, got = drafted_output(tmp_path, src, tgt, ".npz", relax=["missing-target", "unused-source"])
    assert "mapped 0 of 1 targets, 1 left open" in out
    # p and q are named as the candidates, not again as unused
    assert todos(spec) == "TODO x (x.weight): another source layer fits as well; candidates p, q"
    assert got == {}
    code, _, err = run("plan", spec, "-s", src)
    # the draft does not plan until its TODOs are resolved: the error names the TODO's line
    line = next(k for k, t in enumerate(spec.read_text().splitlines(), 1) if t == "  from: 'TODO: x'")
    assert code == 1 and f"draft.yaml:{line}:" in err and "TODO x (x.weight)" in err, err


def test_shuffled_template_is_not_read_as_graph_order(tmp_path):
    """A re-saved file whose layers' tensors lie apart: only layers one kind and shape leave are mapped."""
    src = _npz(tmp_path / "a.npz", {"c1.weight": np.full((4, 3), 1, np.float32), "c1.bias": np.ones(4, np.float32),
                                    "c2.weight": np.full((4, 4), 2, np.float32), "c2.bias": np.ones(4, np.float32),
                                    "c3.weight": np.full((4, 4), 3, np.float32), "c3.bias": np.ones(4, np.float32)})
    tgt = _npz(tmp_path / "b.npz", {"l3.weight": np.zeros((4, 4), np.float32),
                                    "l1.weight": np.zeros((4, 3), np.float32),
                                    "l2.weight": np.zeros((4, 4), np.float32), "l1.bias": np.zeros(4, np.float32),
                                    "l2.bias": np.zeros(4, np.float32), "l3.bias": np.zeros(4, np.float32)})
    spec, out, got = drafted_output(tmp_path, src, tgt, ".npz", relax=["missing-target", "unused-source"])
    text = spec.read_text()
    assert "b.npz is not in graph order" in text
    assert sorted(got) == ["l1.bias", "l1.weight"] and got["l1.weight"][0, 0] == 1  # the one unique layer
    assert "TODO l3 (l3.weight, l3.bias): candidates c2, c3" in todos(spec)


def test_draft_output_is_not_overwritten(tmp_path):
    src = _npz(tmp_path / "a.npz", {"p.weight": np.ones((4, 3), np.float32)})
    out = tmp_path / "d.yaml"
    out.write_text("keep")
    code, _, err = run("draft", "-s", src, "-t", src, "-o", out)
    assert code == 1 and "output exists; pass --force" in err and out.read_text() == "keep"


def test_torch_to_mxnet_symbol_draft_restores_the_original(tmp_path):
    """MXNet -> torch with the shipped spec, then back with a draft against the MXNet symbol: the
    original parameters again (eps difference taken back out of the variance; num_batches_tracked dropped)."""
    params = fixture_file("mobilefacenet-mxnet/model_mobilefacenet-0200.params")
    symbol = fixture_file("mobilefacenet-mxnet/model_mobilefacenet-symbol.json")
    converted = tmp_path / "converted.pth"
    assert run("apply", "mobilefacenet/mxnet-to-torch", "-s", params, "-o", converted, "-q")[0] == 0
    # as a user has it: loaded into the model and saved, so in the model's order (apply wrote MXNet's file order)
    from mapspec.models.mobilefacenet import mobilefacenet

    sd = tensors(converted)
    pth = tmp_path / "mfn.pth"
    module("torch").save(str(pth), {k: sd[k] for k in mobilefacenet().state_dict()})
    spec = tmp_path / "draft.yaml"
    code, out, err = run("draft", "-s", pth, "-t", symbol, "--template-option", "input_shape=1,3,112,112", "-o", spec)
    assert code == 0 and "mapped 284 of 284 targets, 0 left open" in out, out + err
    back = tmp_path / "back.params"
    assert run("apply", spec, "-s", pth, "-o", back, "-q", "--allow-path", Path(symbol).parent)[0] == 0
    want, got = tensors(params), tensors(back)
    assert sorted(want) == sorted(got)
    for k in want:
        if k == "fc1_gamma":  # fix_gamma: MXNet uses 1 whatever is stored, and so did the forward spec
            assert np.all(got[k] == 1)
        else:  # the variances went through + eps - 1e-5 and back: float rounding only
            np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-9, err_msg=k)


def test_batchnorm_folded_into_the_convolution(tmp_path):
    """MobileNet (conv -> LAYER/bn -> LAYER/scale) against its folded prototxt: fold_bn and fold_bn_bias with
    each BatchNorm's own eps, the same values as the shipped caffe/fold-bn spec gives."""
    proto = fixture_file("mobilenet-caffe/mobilenet_deploy.prototxt")
    from mapspec.models.seeded import write_caffemodel

    model = tmp_path / "m.caffemodel"
    write_caffemodel(str(proto), str(model), seed=5)
    assert run("fold-bn", proto, model, "-o", tmp_path / "folded")[0] == 0
    spec = same_as_shipped(tmp_path, "caffe/fold-bn", model, tmp_path / "folded.prototxt", 56)
    assert {"from": "conv1[0]", "to": "conv1[0]", "apply": [{"fold_bn": {
        "var": "conv1/bn[1]", "eps": {"attr": "eps", "of": "conv1/bn"}, "factor": "conv1/bn[2]",
        "gamma": "conv1/scale[0]"}}]} in yaml.safe_load(spec.read_text())["rules"]


def test_printed_draft_is_checked_and_holds_anywhere(tmp_path, monkeypatch):
    src = _npz(tmp_path / "a.npz", {"p.weight": np.ones((4, 3), np.float32)})
    tgt = _npz(tmp_path / "b.npz", {"q.weight": np.zeros((4, 3), np.float32)})
    monkeypatch.chdir(tmp_path)
    code, out, err = run("draft", "-s", "a.npz", "-t", "b.npz")
    assert code == 0 and "mapped 1 of 1 targets" in err
    assert yaml.safe_load(out)["target"]["template"] == str(tgt)  # absolute: the text may be saved anywhere
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "b.npz"]  # nothing written


def test_transposed_weights_and_square_ones(tmp_path):
    """Conv1D-style (in, out) weights against Linear (out, in): non-square ones are transposed.  A square one
    fits both ways: transposed when every non-square weight of layers like it was, else left open."""
    def case(d, extra):
        d.mkdir()
        src = {"h.0.fc.weight": np.arange(12, dtype=np.float32).reshape(3, 4),
               "h.0.fc.bias": np.zeros(4, np.float32),
               "h.0.proj.weight": np.arange(16, dtype=np.float32).reshape(4, 4),
               "h.0.proj.bias": np.ones(4, np.float32)}
        tgt = {"b.0.fc.weight": np.zeros((4, 3), np.float32), "b.0.fc.bias": np.zeros(4, np.float32),
               "b.0.proj.weight": np.zeros((4, 4), np.float32), "b.0.proj.bias": np.zeros(4, np.float32)}
        if extra:  # a layer of the same make stored the same way on both sides: the evidence disagrees
            src.update({"h.0.out.weight": np.ones((2, 4), np.float32), "h.0.out.bias": np.ones(2, np.float32)})
            tgt.update({"b.0.out.weight": np.zeros((2, 4), np.float32), "b.0.out.bias": np.zeros(2, np.float32)})
        return src, drafted_output(d, _npz(d / "a.npz", src), _npz(d / "b.npz", tgt), ".npz",
                                   relax=["missing-target", "unused-source"])
    src, (spec, out, got) = case(tmp_path / "same", False)
    assert np.array_equal(got["b.0.fc.weight"], src["h.0.fc.weight"].T)
    assert np.array_equal(got["b.0.proj.weight"], src["h.0.proj.weight"].T)
    assert "# NOTE square 2-D weights transposed like every other weight of layers with the same roles" \
        in spec.read_text()
    src, (spec, out, got) = case(tmp_path / "mixed", True)
    assert np.array_equal(got["b.0.fc.weight"], src["h.0.fc.weight"].T) and "b.0.proj.weight" not in got
    assert "TODO b.0.proj (b.0.proj.weight, b.0.proj.bias): h.0.proj fits, but square: stored as is or " \
           "transposed?" in todos(spec)


def test_rotary_layouts_are_not_guessed(tmp_path):
    """Meta's wq/wk against HF's q_proj/k_proj: same shapes, rows in another order (rotary): left open."""
    src, tgt = {}, {}
    for i in range(2):
        for m, h in (("wq", "q_proj"), ("wk", "k_proj"), ("wv", "v_proj"), ("wo", "o_proj")):
            src[f"layers.{i}.attention.{m}.weight"] = np.full((8, 8), i, np.float32)
            tgt[f"model.layers.{i}.self_attn.{h}.weight"] = np.zeros((8, 8), np.float32)
    spec, out, got = drafted_output(tmp_path, _npz(tmp_path / "a.npz", src), _npz(tmp_path / "b.npz", tgt), ".npz",
                                    relax=["missing-target", "unused-source"])
    assert sorted(got) == sorted(f"model.layers.{i}.self_attn.{h}_proj.weight" for i in range(2) for h in "vo")
    assert "TODO model.layers.0.self_attn.q_proj (model.layers.0.self_attn.q_proj.weight): layers.0.attention.wq " \
           "fits, but Meta and HF order a q/k projection's rotary rows differently" in todos(spec)


def test_unknown_batchnorm_eps_is_said(tmp_path):
    """A Keras weights file does not say its BatchNorm's epsilon (Keras defaults to 1e-3): the draft says so."""
    src = _npz(tmp_path / "a.npz", {f"bn.{k}": np.full(4, i + 1, np.float32)
                                    for i, k in enumerate(("weight", "bias", "running_mean", "running_var"))})
    tgt = tmp_path / "b.h5"
    module("keras").save(str(tgt), {f"bn/{k}": np.zeros(4, np.float32)
                                    for k in ("gamma", "beta", "moving_mean", "moving_variance")})
    spec, out, got = drafted_output(tmp_path, src, tgt, ".h5")
    assert got["bn/moving_variance"][0] == 4 and got["bn/gamma"][0] == 1
    assert "# NOTE keras weights do not say a BatchNorm's eps" in spec.read_text()


@pytest.mark.slow
def test_densenet_caffe_to_torchvision_draft(tmp_path):
    """The issue's example: conv<b>_<l>/x<k> -> features.denseblock{b-1}.denselayer{l}.norm{k}, the factor divided
    out, num_batches_tracked from it, fc6's 1x1 convolution squeezed; every value as the shipped spec gives it."""
    torch = pytest.importorskip("torch")
    from mapspec.models.densenet import densenet121
    from mapspec.models.seeded import write_caffemodel

    model = tmp_path / "d.caffemodel"
    write_caffemodel(str(fixture_file("densenet-caffe/DenseNet_121.prototxt")), str(model), seed=121)
    template = tmp_path / "tv.pth"
    torch.manual_seed(0)
    torch.save(densenet121().state_dict(), template)  # the target as a user has it: a fresh model's state dict
    shipped = tmp_path / "shipped.pth"
    assert run("apply", "densenet/caffe-to-torchvision", "-s", model, "-o", shipped, "-q")[0] == 0
    spec, out, got = drafted_output(tmp_path, model, template, ".pth")
    assert "mapped 727 of 727 targets, 0 left open" in out
    want = tensors(shipped)
    assert sorted(got) == sorted(want) and all(np.array_equal(got[k], want[k]) for k in want)
    rules = yaml.safe_load(spec.read_text())["rules"]
    assert {"from": "conv<a>_<b>/x<c>/bn[0]", "to": "features.denseblock{a-1}.denselayer{b}.norm{c}.running_mean",
            "apply": [{"div": {"by": "conv{a}_{b}/x{c}/bn[2]", "zero": 0}}]} in rules
    assert {"from": "fc6[0]", "to": "classifier.weight", "apply": [{"squeeze": [2, 3]}]} in rules
    assert len(rules) <= 25  # as compact as the hand-written spec


def test_names_sorted_are_not_graph_order_but_same_names_still_map(tmp_path):
    """A safetensors file lists names sorted, not in the order layers run: same names are still mapped (GPT-2 HF
    -> nanoGPT keeps them), other layers only where kind and shape leave one choice."""
    src = {f"h.{i}.{m}.weight": np.full((4, 4), 10 * i + k, np.float32)
           for i in range(3) for k, m in enumerate(("attn", "mlp"))}
    src["zz.weight"] = np.ones((2, 4), np.float32)  # sorted last here, yet the one 2x4 layer
    src = dict(sorted(src.items()))
    tgt = {f"h.{i}.{m}.weight": np.zeros((4, 4), np.float32) for i in range(3) for m in ("attn", "mlp")}
    tgt["aa.weight"] = np.zeros((2, 4), np.float32)
    spec, out, got = drafted_output(tmp_path, _npz(tmp_path / "a.npz", src), _npz(tmp_path / "b.npz", dict(sorted(
        tgt.items()))), ".npz", relax=["missing-target", "unused-source"])
    assert "a.npz is not in graph order (sorted by name" in spec.read_text()
    assert sorted(got) == sorted(tgt) and got["h.2.mlp.weight"][0, 0] == 21 and got["aa.weight"][0, 0] == 1


def _meta_llama(d, heads=4, kv=2, dim=16, hidden=24, layers=2):
    """A tiny Meta Llama checkpoint (distinct values per tensor) with its params.json."""
    import json

    hd = dim // heads
    shapes = {"tok_embeddings.weight": (40, dim), "norm.weight": (dim,), "output.weight": (40, dim)}
    for i in range(layers):
        for name, shape in (("attention.wq", (heads * hd, dim)), ("attention.wk", (kv * hd, dim)),
                            ("attention.wv", (kv * hd, dim)), ("attention.wo", (dim, heads * hd)),
                            ("feed_forward.w1", (hidden, dim)), ("feed_forward.w2", (dim, hidden)),
                            ("feed_forward.w3", (hidden, dim)), ("attention_norm", (dim,)), ("ffn_norm", (dim,))):
            shapes[f"layers.{i}.{name}.weight"] = shape
    d.mkdir()
    src = d / "consolidated.00.pth"
    module("torch").save(str(src), {k: np.arange(np.prod(s), dtype=np.float32).reshape(s) + 1000 * n
                                    for n, (k, s) in enumerate(shapes.items())})
    (d / "params.json").write_text(json.dumps({"dim": dim, "n_layers": layers, "n_heads": heads, "n_kv_heads": kv,
                                               "vocab_size": 40, "norm_eps": 1e-5}))
    return src


def sorted_zeros(path, out):
    """A template as transformers saves one: names sorted (no graph order), zeros."""
    module("safetensors").save(str(out), {k: np.zeros_like(v) for k, v in sorted(tensors(path).items())})
    assert list(open_checkpoint(str(out)).names()) == sorted(tensors(path))
    return out


def test_llama_meta_to_hf_against_a_sorted_template_maps_every_tensor(tmp_path):
    """Every name differs (synonyms: attention.wq <-> self_attn.q_proj, feed_forward.w1 <-> mlp.gate_proj,
    tok_embeddings <-> embed_tokens, output <-> lm_head, ...), shapes repeat and the template's names are sorted
    (as safetensors stores them): layers read the same through the synonym table and layer index, and q/k get
    rope_permute with the head counts of params.json. Equal to the shipped spec's output, tensor for tensor."""
    src = _meta_llama(tmp_path / "meta")
    shipped = tmp_path / "shipped.safetensors"
    assert run("apply", "llama/meta-to-hf", "-s", src, "-o", shipped, "-q")[0] == 0
    template = sorted_zeros(shipped, tmp_path / "template.safetensors")
    spec, out, got = drafted_output(tmp_path, src, template, ".safetensors")
    want = tensors(shipped)
    assert sorted(got) == sorted(want) and len(want) == 21
    for k in want:
        assert got[k].dtype == want[k].dtype and np.array_equal(got[k], want[k]), k
    text = spec.read_text()
    assert "21 of 21 targets mapped, 0 left open" in text and "TODO" not in text
    assert "rope_permute: {heads: 2, to: hf}" in text and "rope_permute: {heads: 4, to: hf}" in text


def test_llama_without_a_config_leaves_q_and_k_open(tmp_path):
    """Without params.json (or config.json) the head count is unknown: q/k are left open, saying what is missing;
    every other layer is still mapped."""
    src = _meta_llama(tmp_path / "meta")
    shipped = tmp_path / "shipped.safetensors"
    assert run("apply", "llama/meta-to-hf", "-s", src, "-o", shipped, "-q")[0] == 0
    (tmp_path / "meta" / "params.json").unlink()
    template = sorted_zeros(shipped, tmp_path / "template.safetensors")
    spec, out, got = drafted_output(tmp_path, src, template, ".safetensors", relax=["missing-target",
                                                                                    "unused-source"])
    want = tensors(shipped)
    assert sorted(set(want) - set(got)) == sorted(f"model.layers.{i}.self_attn.{p}_proj.weight" for i in range(2)
                                                  for p in "qk")
    assert all(np.array_equal(got[k], want[k]) for k in got)
    assert "rotary rows differently: rope_permute, with the head count from the model's config (no params.json " \
           "or config.json beside the files)" in todos(spec)
