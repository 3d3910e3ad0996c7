"""The rule walk (mapspec/invert/rules.py): each rule reversed through its transforms' inverses,
`each` and stacks undone, and lossy or non-invertible rules refused by rule.

Round trips run the forward spec with `apply`, the reverse written by `invert` with `apply` again, and
compare the result with the original file tensor by tensor (values, dtype, shape).
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mapspec.formats import module

from checkpoint_util import run, tensors
from conftest import fixture_file
from invert_util import assert_identical, round_trip


def test_caffenet_without_source_names_the_reshape(caffenet):
    code, _, err = run("invert", "caffenet/caffe-to-keras")
    assert code == 1
    assert "rule 3 (from 'fc6[0]'): cannot be reversed: reshape: the reverse needs the shape before it" in err
    assert "--source" in err and "Traceback" not in err


@pytest.mark.parametrize("spec,rule,why", [
    ("caffe/fold-bn", "rule 1 (from '<c:path>[0]')", "fold_bn folds a BatchNorm in"),
    ("caffe/fold-bn", "rule 3 (drop '<c:path>/bn[<k>]')", "the forward drops the source tensors"),
    ("densenet/caffe-to-torchvision", "rule 2 (from 'conv1/bn[0]')", "div by the tensor 'conv1/bn[2]'"),
    ("densenet/caffe-to-torchvision", "rule 4 (from 'conv1/bn[2]')", "fill replaces every value by 0"),
    ("densenet/caffe-to-torchvision", "rule 16 (from 'conv5<t:path>blk/scale[0]')",
     "the target name 'features.norm5.weight' does not contain <t>"),
    ("densenet/caffe-to-efficient-caffe", "rule 11 (drop 'conv<b>_<l>/x<k>/bn[2]')", "the forward drops"),
    ("mobilefacenet/mxnet-to-torch", "rule 4 (from 'dconv_<s>_conv_<p:word>_batchnorm_gamma')", "fill"),
])
def test_lossy_and_non_invertible_specs_are_refused_by_rule(spec, rule, why):
    code, out, err = run("invert", spec)
    assert code == 1 and out == ""
    line = next(l for l in err.splitlines() if rule in l)
    assert f"{rule}: cannot be reversed: " in line and why in line, line


def test_rounding_arithmetic_is_lossy(tmp_path):
    params = fixture_file("mobilefacenet-mxnet/model_mobilefacenet-0200.params")
    code, _, err = run("invert", "mobilefacenet/mxnet-to-torch", "--source", params)
    assert code == 1
    assert "rule 13 (from 'dconv_<s>_conv_<p:word>_batchnorm_moving_var'): cannot be reversed: add by 0.001 then " \
           "sub by 0.001 may round: not bit-exact" in err
    # with --lossy: the eps correction is undone approximately (said so), fc1_gamma is missing (said so),
    # the fill of every other gamma was a no-op (fix_gamma false in the symbol) and is undone exactly
    back, rev, notes = round_trip(tmp_path, "mobilefacenet/mxnet-to-torch", params, ".pth", "--source", params,
                                  "--lossy")
    assert "inexact: rule 13 (from 'dconv_<s>_conv_<p:word>_batchnorm_moving_var'): add by 0.001" in notes
    assert "missing: source tensors matching 'fc1_gamma'" in notes
    original, got = tensors(params), tensors(back)
    assert set(original) - set(got) == {"fc1_gamma"} and set(got) <= set(original)
    for k, v in got.items():
        if k.endswith("moving_var"):
            np.testing.assert_allclose(v, original[k], rtol=1e-6, atol=1e-9, err_msg=k)  # rounding near 1e-3
        else:
            assert np.array_equal(v, original[k]), k


def test_concat_is_undone_and_its_parts_written(tmp_path):
    """concat joins a referenced tensor in: the reverse slices both parts out, the referenced one as an output."""
    src = tmp_path / "src.npz"
    a = {f"a{i}": np.arange(6 * i, 6 * i + 6, dtype=np.float32).reshape(2, 3) for i in (1, 2)}
    b = {f"b{i}": np.arange(100 + 4 * i, 104 + 4 * i, dtype=np.float32).reshape(2, 2) for i in (1, 2)}
    module("npz").save(str(src), {**a, **b})
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"mapspec": 1, "source": {"format": "npz"}, "target": {"format": "npz"}, "rules": [
        {"from": "a<i>", "to": "joined.{i-1}", "apply": [{"concat": {"after": ["b{i}"], "axis": 1}},
                                                         {"transpose": [1, 0]}]}]}))
    code, _, err = run("invert", spec)
    assert code == 1 and "concat: the reverse needs the sizes of the joined parts" in err
    back, rev, _ = round_trip(tmp_path, spec, src, ".npz", "--source", src)
    assert_identical({**a, **b}, tensors(back))
    rule = yaml.safe_load(rev.read_text())["rules"][0]
    assert rule["also"] == [{"to": "b{_i+1}", "apply": [{"transpose": [1, 0]}, {"slice": {"start": 3, "stop": 5,
                                                                                              "axis": 1}}]}]


@pytest.mark.parametrize("src_dtype,want,lossy", [("float16", "float32", False), ("float32", "float16", True)])
def test_target_dtype_is_undone(tmp_path, src_dtype, want, lossy):
    x = {f"w{i}": (np.arange(6, dtype=np.float32).reshape(2, 3) / 4 + i).astype(src_dtype) for i in range(2)}
    src = tmp_path / "src.npz"
    module("npz").save(str(src), {**x, "steps": np.arange(3, dtype=np.int64)})
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"mapspec": 1, "source": {"format": "npz"},
                                    "target": {"format": "npz", "dtype": want},
                                    "rules": [{"from": "<n:word>", "to": "m.{n}"}]}))
    code, _, err = run("invert", spec)
    assert code == 1 and f"target.dtype casts every float output to {want}" in err and "--source" in err
    if lossy:
        code, _, err = run("invert", spec, "-s", src)
        assert code == 1 and "target.dtype casts float32 to float16, which rounds" in err
    back, rev, notes = round_trip(tmp_path, spec, src, ".npz", "-s", src, *(["--lossy"] if lossy else []))
    assert yaml.safe_load(rev.read_text())["target"]["dtype"] == src_dtype
    got = tensors(back)
    if lossy:
        assert "inexact: target.dtype: float32 -> float16 rounds" in notes
        assert got["steps"].dtype == np.int64 and all(got[k].dtype == np.float32 for k in x)
    else:
        assert_identical({**x, "steps": np.arange(3, dtype=np.int64)}, got)


def test_transforms_command_names_each_inverse():
    code, out, _ = run("transforms", "transpose")
    assert code == 0 and "  inverse (mapspec invert): The inverse permutation" in out
    code, out, _ = run("transforms", "fold_bn")
    assert "  inverse (mapspec invert): None: the folded weight or bias mixes the BatchNorm in" in out


def test_stack_is_undone_one_output_per_stacked_value(tmp_path):
    """Mixtral per-expert -> fused (stack over e, each expert's w1 and w3 concatenated): the reverse takes expert e
    back out of the stacked tensor and slices w1 and w3 apart again."""
    shapes = {"model.embed_tokens.weight": (10, 4), "model.norm.weight": (4,), "lm_head.weight": (10, 4)}
    for i in range(2):
        shapes[f"model.layers.{i}.block_sparse_moe.gate.weight"] = (3, 4)
        for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"):
            shapes[f"model.layers.{i}.{m}.weight"] = (4, 4)
        for m in ("input_layernorm", "post_attention_layernorm"):
            shapes[f"model.layers.{i}.{m}.weight"] = (4,)
        for e in range(3):
            for w, s in (("w1", (6, 4)), ("w2", (4, 6)), ("w3", (6, 4))):
                shapes[f"model.layers.{i}.block_sparse_moe.experts.{e}.{w}.weight"] = s
    sd = {k: np.arange(np.prod(s), dtype=np.float32).reshape(s) + 100 * n for n, (k, s) in enumerate(shapes.items())}
    src = tmp_path / "per-expert.safetensors"
    module("safetensors").save(str(src), sd)
    code, _, err = run("invert", "mixtral/per-expert-to-fused")
    assert code == 1 and "stack: the reverse needs how many <e> were stacked" in err
    back, rev, _ = round_trip(tmp_path, "mixtral/per-expert-to-fused", src, ".safetensors", "--source", src)
    assert_identical(sd, tensors(back))
    rule = yaml.safe_load(rev.read_text())["rules"][0]
    assert rule["each"] == {"e": {"range": [0, 3]}}
    assert rule["apply"][:2] == [{"take": {"indices": ["{e}"], "axis": 0}}, {"squeeze": [0]}]


def test_gpt_neox_take_under_each_is_joined_again(tmp_path):
    """Fused QKV -> q/k/v (reshape per head, take ["{j}"] under each j, reshape): the reverse joins the three
    outputs and puts each head's q, k, v rows back in place (head count from config.json beside the source)."""
    import json

    heads, hd, dim = 2, 4, 8
    shapes = {"gpt_neox.embed_in.weight": (10, dim), "gpt_neox.final_layer_norm.weight": (dim,),
              "gpt_neox.final_layer_norm.bias": (dim,), "embed_out.weight": (10, dim)}
    for i in range(2):
        shapes[f"gpt_neox.layers.{i}.attention.query_key_value.weight"] = (3 * heads * hd, dim)
        shapes[f"gpt_neox.layers.{i}.attention.query_key_value.bias"] = (3 * heads * hd,)
        shapes[f"gpt_neox.layers.{i}.attention.dense.weight"] = (dim, dim)
    sd = {k: np.arange(np.prod(s), dtype=np.float32).reshape(s) + 1000 * n for n, (k, s) in enumerate(shapes.items())}
    src = tmp_path / "neox" / "model.safetensors"
    src.parent.mkdir()
    module("safetensors").save(str(src), sd)
    (src.parent / "config.json").write_text(json.dumps({"num_attention_heads": heads}))
    back, rev, _ = round_trip(tmp_path, "gpt-neox/fused-qkv-to-split", src, ".safetensors", "--source", src)
    assert_identical(sd, tensors(back))
    rule = yaml.safe_load(rev.read_text())["rules"][0]
    assert rule["apply"][0] == {"concat": {"axis": 0, "after": ["gpt_neox.layers.{i}.attention.{qkv[1]}.weight",
                                                                "gpt_neox.layers.{i}.attention.{qkv[2]}.weight"]}}


def test_division_by_a_tensor_that_does_not_survive_is_refused_naming_it(tmp_path):
    """DenseNet Caffe -> torchvision divides mean and var by the factor blob, which becomes num_batches_tracked (0):
    refused naming the rule, the reference and what the forward did with it; --lossy leaves those blobs out."""
    from densenet_util import caffe_blobs
    from mapspec.formats import open_checkpoint
    from mapspec.models.densenet_caffe import caffe_prototxt

    proto = tmp_path / "DenseNet_121.prototxt"
    proto.write_text(caffe_prototxt(121))
    blobs = caffe_blobs("121", seed=3)
    src = tmp_path / "DenseNet_121.caffemodel"
    module("caffe").save(src, {k: blobs[k] for k in open_checkpoint(str(proto)).names()}, template=str(proto))
    code, _, err = run("invert", "densenet/caffe-to-torchvision", "-s", src)
    assert code == 1
    assert "rule 8 (from 'conv<b>_<l>/x<k>/bn[0]'): cannot be reversed: div by the tensor 'conv{b}_{l}/x{k}/bn[2]' " \
           "(e.g. 'conv2_1/x1/bn[2]'), which rule 10 (from 'conv<b>_<l>/x<k>/bn[2]') changes (squeeze, fill, cast): " \
           "it does not survive the trip, so the reverse has nothing to multiply by; --lossy leaves the rule out" in err
    code, _, err = run("invert", "densenet/caffe-to-torchvision")
    assert "div by the tensor 'conv1/bn[2]': the reverse would need that tensor, unchanged, in the target to " \
           "multiply by (give invert --source FILE" in err
    fwd, rev, back = tmp_path / "tv.pth", tmp_path / "rev.yaml", tmp_path / "back.caffemodel"
    assert run("apply", "densenet/caffe-to-torchvision", "-s", src, "-o", fwd, "-q")[0] == 0
    code, _, notes = run("invert", "densenet/caffe-to-torchvision", "-s", src, "--lossy", "-o", rev)
    assert code == 0, notes
    assert "missing: source tensors matching 'conv1/bn[0]'" in notes
    code, _, err = run("apply", rev, "-s", fwd, "-o", back, "-t", proto, "--relax", "missing-target", "-q")
    assert code == 0, err
    got = tensors(back)
    assert set(got) == {k for k in blobs if "/bn[" not in k}  # conv5_blk's own name comes back from the source
    for k, v in got.items():
        assert np.array_equal(v, blobs[k]), k


def test_take_under_each_from_the_data_is_undone_by_a_stack(tmp_path):
    """Mixtral fused -> per-expert: each e over range(shape()[0]) (read from the source when planning), take e and
    squeeze; w1 and w3 slice the two halves of one block. The reverse stacks the experts back and concatenates
    w1 with w3: the hand-written per-expert -> fused spec, found by invert."""
    shapes = {"model.embed_tokens.weight": (10, 4), "model.norm.weight": (4,), "lm_head.weight": (10, 4)}
    for i in range(2):
        shapes[f"model.layers.{i}.mlp.gate.weight"] = (3, 4)
        shapes[f"model.layers.{i}.mlp.experts.gate_up_proj"] = (3, 12, 4)
        shapes[f"model.layers.{i}.mlp.experts.down_proj"] = (3, 4, 6)
        for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"):
            shapes[f"model.layers.{i}.{m}.weight"] = (4, 4)
        for m in ("input_layernorm", "post_attention_layernorm"):
            shapes[f"model.layers.{i}.{m}.weight"] = (4,)
    sd = {k: np.arange(np.prod(s), dtype=np.float32).reshape(s) + 1000 * n for n, (k, s) in enumerate(shapes.items())}
    src = tmp_path / "fused.safetensors"
    module("safetensors").save(str(src), sd)
    code, _, err = run("invert", "mixtral/fused-to-per-expert")
    assert code == 1 and "each e range: shape() is known only when planning against a source checkpoint (give " \
                         "invert --source FILE)" in err
    back, rev, _ = round_trip(tmp_path, "mixtral/fused-to-per-expert", src, ".safetensors", "--source", src)
    assert_identical(sd, tensors(back))
    rules = yaml.safe_load(rev.read_text())["rules"]
    assert rules[0] == {"from": "model.layers.<i>.block_sparse_moe.experts.<e>.w1.weight",
                        "to": "model.layers.{i}.mlp.experts.gate_up_proj", "stack": {"over": "e", "axis": 0},
                        "apply": [{"concat": {"axis": 0, "after": [
                            "model.layers.{i}.block_sparse_moe.experts.{e}.w3.weight"]}}]}


def test_arithmetic_by_a_tensor_that_survives_uses_it_in_the_reverse(tmp_path):
    """div by a referenced tensor that another rule copies unchanged into the target: the reverse multiplies by
    the copy (approximately: listed as inexact, so only with --lossy)."""
    src = tmp_path / "src.npz"
    x = {"bn1.mean": np.arange(4, dtype=np.float32) * 3 + 1, "bn1.factor": np.float32([2, 4, 0.5, 8]),
         "bn2.mean": np.arange(4, dtype=np.float32) / 7, "bn2.factor": np.float32([3, 5, 7, 9])}
    module("npz").save(str(src), x)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"mapspec": 1, "source": {"format": "npz"}, "target": {"format": "npz"}, "rules": [
        {"from": "bn<i>.mean", "to": "norm.{i}.running_mean", "apply": [{"div": {"by": "bn{i}.factor"}}]},
        {"from": "bn<i>.factor", "to": "norm.{i}.scale"}]}))
    code, _, err = run("invert", spec)
    assert code == 1 and "rule 1 (from 'bn<i>.mean'): cannot be reversed: div by the tensor 'bn{i}.factor', which " \
                         "reaches the target unchanged as 'norm.{i}.scale': mul by it there may round" in err
    back, rev, notes = round_trip(tmp_path, spec, src, ".npz", "--lossy")
    assert "inexact: rule 1 (from 'bn<i>.mean'): div by the tensor 'bn{i}.factor'" in notes
    assert yaml.safe_load(rev.read_text())["rules"][0]["apply"] == [{"mul": {"by": "norm.{i}.scale"}}]
    got = tensors(back)
    assert sorted(got) == sorted(x)
    for k in x:
        np.testing.assert_allclose(got[k], x[k], rtol=1e-6, err_msg=k)
        if k.startswith("bn1"):  # powers of two: exact
            assert np.array_equal(got[k], x[k]), k


@settings(max_examples=20, deadline=None)
@given(st.data())
def test_random_parts_under_each_are_joined_again(tmp_path_factory, data):
    """Property: a tensor cut into parts under each (take one index, or split into equal parts, on a random axis),
    then transposed or reshaped, round-trips bit for bit through the reverse's join."""
    d = tmp_path_factory.mktemp("parts")
    shape = tuple(data.draw(st.lists(st.integers(1, 4), min_size=2, max_size=3)))
    axis = data.draw(st.integers(0, len(shape) - 1))
    shape = shape[:axis] + (data.draw(st.integers(2, 4)),) + shape[axis + 1:]
    if data.draw(st.booleans()):
        n, cut = shape[axis], {"take": {"indices": ["{j}"], "axis": axis}}
    else:
        n = data.draw(st.sampled_from([p for p in (2, 3, 4) if shape[axis] % p == 0] or [1]))
        cut = {"split": {"parts": n, "take": "{j}", "axis": axis}}
    after = data.draw(st.sampled_from(["none", "reshape", "transpose"]))
    calls = [cut] + {"none": [], "reshape": [{"reshape": [-1]}],
                     "transpose": [{"transpose": list(range(len(shape)))[::-1]}]}[after]
    x = (np.arange(int(np.prod(shape)), dtype=np.float32) - 5).reshape(shape)
    src = d / "src.npz"
    module("npz").save(str(src), {"w3": x, "w4": x + 100})
    spec = d / "spec.yaml"
    spec.write_text(yaml.safe_dump({"mapspec": 1, "source": {"format": "npz"}, "target": {"format": "npz"}, "rules": [
        {"from": "w<i>", "to": "part{j}.w{i}", "each": {"j": list(range(n))}, "apply": calls}]}))
    fwd, rev, back = d / "fwd.npz", d / "rev.yaml", d / "back.npz"
    assert run("apply", spec, "-s", src, "-o", fwd, "-q")[0] == 0
    code, _, err = run("invert", spec, "-s", src, "-o", rev)
    assert code == 0, (calls, err)
    code, _, err = run("apply", rev, "-s", fwd, "-o", back, "-q")
    assert code == 0, (calls, rev.read_text(), err)
    assert_identical({"w3": x, "w4": x + 100}, tensors(back))


def test_an_optional_drop_that_matched_is_lossy(tmp_path):
    """A Meta Llama checkpoint with rope.freqs and an optional drop rule: the drop lost a tensor (plan counts it
    dropped), so invert refuses it without --lossy, naming rule and tensor, instead of 'nothing matched'."""
    src = tmp_path / "src.npz"
    x = {"tok_embeddings.weight": np.arange(6, dtype=np.float32).reshape(3, 2),
         "rope.freqs": np.arange(4, dtype=np.float32) / 8}
    module("npz").save(str(src), x)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"mapspec": 1, "source": {"format": "npz"}, "target": {"format": "npz"}, "rules": [
        {"from": "tok_embeddings.weight", "to": "model.embed_tokens.weight"},
        {"from": "rope.freqs", "drop": True, "optional": True}]}))
    code, out, _ = run("plan", spec, "-s", src)
    assert code == 0 and "1 dropped" in out, out
    code, _, err = run("invert", spec, "-s", src, "-o", tmp_path / "rev.yaml")
    assert code == 1 and "rule 2 (drop 'rope.freqs'): cannot be reversed: the forward drops the source tensor " \
        "'rope.freqs'" in err and "--lossy" in err, err
    code, _, notes = run("invert", spec, "-s", src, "-o", tmp_path / "rev.yaml", "--lossy")
    assert code == 0 and "rope.freqs" in notes and "nothing of the source matched" not in notes, notes
    # a source without rope.freqs: the optional rule matched nothing, nothing is lost
    module("npz").save(str(src), {"tok_embeddings.weight": x["tok_embeddings.weight"]})
    back, _, notes = round_trip(tmp_path, spec, src, ".npz", "--source", src)
    assert "optional, and nothing of the source matched it" in notes
    assert_identical({"tok_embeddings.weight": x["tok_embeddings.weight"]}, tensors(back))


def _bias_spec(tmp_path) -> str:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"mapspec": 1, "source": {"format": "npz"}, "target": {"format": "npz"}, "rules": [
        {"from": "conv<i>[0]", "to": "w{i}", "apply": [{"sub": {"by": {"ref": "conv{i}[1]", "optional": True},
                                                                "axis": 0}}]},
        {"from": "conv<i>[1]", "to": "b{i}", "optional": True}]}))
    return spec


def test_a_missing_optional_operand_is_the_identity_and_inverts_exactly(tmp_path):
    """sub by an optional bias the source lacks subtracts 0 (a bias-less convolution); invert undoes nothing."""
    w = (np.arange(6, dtype=np.float32) - 2.5).reshape(3, 2)
    src = tmp_path / "src.npz"
    module("npz").save(str(src), {"conv1[0]": w})
    spec = _bias_spec(tmp_path)
    code, out, err = run("plan", spec, "-s", src)
    assert code == 0 and "sub(by=0" in out, out + err
    back, rev, _ = round_trip(tmp_path, spec, src, ".npz", "--source", src)
    assert_identical({"conv1[0]": w}, tensors(back))
    assert np.array_equal(tensors(tmp_path / "forward.npz")["w1"], w)  # w - 0


def test_a_present_optional_operand_inverts_to_an_optional_one(tmp_path):
    w = (np.arange(6, dtype=np.float32) - 2.5).reshape(3, 2)
    b = np.array([0.5, -1.0, 2.0], dtype=np.float32)
    src = tmp_path / "src.npz"
    module("npz").save(str(src), {"conv1[0]": w, "conv1[1]": b})
    spec = _bias_spec(tmp_path)
    code, _, err = run("invert", spec, "-s", src)
    assert code == 1 and "sub by the tensor 'conv{i}[1]', which reaches the target unchanged as 'b{i}'" in err, err
    back, rev, _ = round_trip(tmp_path, spec, src, ".npz", "--source", src, "--lossy")
    assert yaml.safe_load(rev.read_text())["rules"][0]["apply"] == [
        {"add": {"by": {"ref": "b{i}", "optional": True}, "axis": 0}}]
    assert np.array_equal(tensors(tmp_path / "forward.npz")["w1"], w - b[:, None])  # numpy's own broadcast
    assert_identical({"conv1[0]": w, "conv1[1]": b}, tensors(back))  # halves and small integers: exact
