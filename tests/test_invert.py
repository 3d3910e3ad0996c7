"""mapspec invert: reverse specs that round-trip bit for bit, and clear refusals where they cannot.

Round trips run the forward spec with `apply`, the reverse written by `invert` with `apply`
again, and compare the result with the original file tensor by tensor (values, dtype, shape).
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mapspec.formats import module
from mapspec.invert import template_pattern, pattern_template
from mapspec.language.expr import Template
from mapspec.language.pattern import Pattern
from mapspec.transforms.inverse import NotInvertible

from checkpoint_util import run, tensors, tiny_caffenet
from conftest import fixture_file


def assert_identical(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert np.array_equal(a[k], b[k]), k


def round_trip(tmp_path, spec, source, suffix, *invert_args, template=None):
    fwd = tmp_path / f"forward{suffix}"
    code, _, err = run("apply", spec, "-s", source, "-o", fwd, "-q")
    assert code == 0, err
    rev = tmp_path / "reverse.yaml"
    code, out, notes = run("invert", spec, "-o", rev, *invert_args)
    assert code == 0, notes
    assert run("validate", rev)[0] == 0
    back = tmp_path / ("back" + source.suffix)
    code, _, err = run("apply", rev, "-s", fwd, "-o", back, "-q", *(["-t", template] if template else []))
    assert code == 0, err
    return back, rev, notes


# -- names -----------------------------------------------------------------------------

def test_index_arithmetic_is_solved():
    text, solved = template_pattern(Template("features.denseblock{b-1}.denselayer{l}.norm{k}"),
                                    {"b": "int", "l": "int", "k": "int"}, {})
    assert text == "features.denseblock<_b>.denselayer<l>.norm<k>"
    back = pattern_template(Pattern("conv<b>_<l>/x<k>/bn[0]"), solved)
    assert back == "conv{_b+1}_{l}/x{k}/bn[0]"
    assert Template(back).render({"_b": 3, "l": 5, "k": 2}) == "conv4_5/x2/bn[0]"


def test_multiples_and_vars():
    vars_ = {"blocks": {2: 6, 3: 12}}
    text, solved = template_pattern(Template("denseblock{b-1}[{2 * blocks[b] + l - 1}]"),
                                    {"b": "int", "l": "int"}, vars_)
    assert text == "denseblock<_b>[<_l>]"
    tmpl = Template(pattern_template(Pattern("conv<b>_<l>"), solved))
    # denseblock2[2*12 + 7 - 1 = 30] came from conv3_7
    assert tmpl.render({**vars_, "_b": 2, "_l": 30}) == "conv3_7"
    text, solved = template_pattern(Template("w{2*i+1}"), {"i": "int"}, {})
    assert Template(pattern_template(Pattern("v<i>"), solved)).render({"_i": 9}) == "v4"


@pytest.mark.parametrize("to,why", [("w{i*i}", "cannot be solved for i"), ("w{i//2}", "cannot be solved"),
                                    ("w", "does not contain <i>")])
def test_unsolvable_names_say_why(to, why):
    with pytest.raises(NotInvertible, match=why):
        template_pattern(Template(to), {"i": "int"}, {})


# -- shipped specs ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def caffenet(tmp_path_factory):
    return tiny_caffenet(tmp_path_factory.mktemp("caffenet"))


@pytest.mark.parametrize("spec", ["caffenet/caffe-to-keras", "caffenet/caffe-to-keras-grouped"])
def test_caffenet_round_trip_is_bit_identical(caffenet, tmp_path, spec):
    src = caffenet / "tiny.caffemodel"
    back, rev, _ = round_trip(tmp_path, spec, src, ".h5", "--source", src, template=caffenet / "tiny.prototxt")
    assert_identical(tensors(src), tensors(back))
    if spec.endswith("keras"):  # the two Conv2D halves are joined again, each once
        doc = yaml.safe_load(rev.read_text())
        assert {"concat": {"axis": 3, "after": ["{l}_2/kernel"]}} in doc["rules"][0]["apply"]


def test_caffenet_without_source_names_the_reshape(caffenet):
    code, _, err = run("invert", "caffenet/caffe-to-keras")
    assert code == 1
    assert "rule 3 (from 'fc6[0]'): cannot be reversed: reshape: the reverse needs the shape before it" in err
    assert "--source" in err and "Traceback" not in err


def test_torchvision_to_efficient_round_trip(tmp_path):
    names = ["features.conv0.weight"]
    for m in ("features.norm0", "features.denseblock1.denselayer1.norm1", "features.transition1.norm",
              "features.norm5"):
        names += [f"{m}.weight", f"{m}.bias", f"{m}.running_mean", f"{m}.running_var"]
    names += ["features.denseblock1.denselayer1.conv1.weight", "classifier.weight", "classifier.bias"]
    sd = {n: np.arange(i * 8, i * 8 + 8, dtype=np.float32).reshape(2, 4) for i, n in enumerate(names)}
    for i, m in enumerate(("features.norm0", "features.denseblock1.denselayer1.norm1", "features.transition1.norm",
                           "features.norm5")):
        sd[f"{m}.num_batches_tracked"] = np.array(7 + i, dtype=np.int64)
    src = tmp_path / "tv.pth"
    module("torch").save(str(src), sd)
    back, rev, err = round_trip(tmp_path, "densenet/torchvision-to-efficient-pytorch", src, ".pth")
    assert_identical(sd, tensors(back))
    # the old-checkpoint rules are alternatives the reverse does not write, and it says so
    assert "rule 1 (from 'features.denseblock<b>.denselayer<l>.<m:word>.<k>.running_var'): an optional " \
           "alternative" in err


def test_mobilefacenet_to_caffe_lossy_round_trip(tmp_path):
    params = fixture_file("mobilefacenet-mxnet/model_mobilefacenet-0200.params")
    code, _, err = run("invert", "mobilefacenet/mxnet-to-caffe", "--source", params)
    assert code == 1 and "rule 11 (from 'fc1_gamma'): cannot be reversed: fill replaces every value by 1" in err
    back, rev, _ = round_trip(tmp_path, "mobilefacenet/mxnet-to-caffe", params, ".caffemodel", "--source", params,
                              "--lossy")
    original, got = tensors(params), tensors(back)
    assert set(original) - set(got) == {"fc1_gamma"}  # exactly what invert said would be missing
    assert_identical({k: v for k, v in original.items() if k != "fc1_gamma"}, got)
    assert "missing from the reverse output: source tensors matching 'fc1_gamma'" in rev.read_text()


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


def test_output_is_not_overwritten(tmp_path):
    out = tmp_path / "r.yaml"
    out.write_text("keep")
    code, _, err = run("invert", "densenet/torchvision-to-efficient-pytorch", "-o", out)
    assert code == 1 and "output exists; pass --force" in err and out.read_text() == "keep"
    assert run("invert", "densenet/torchvision-to-efficient-pytorch", "-o", out, "--force")[0] == 0
    assert out.read_text().startswith("# The reverse of")
    assert [p.name for p in tmp_path.iterdir()] == ["r.yaml"]  # no temporary file left behind


# -- property: random chains of invertible transforms -----------------------------------

def _chain(draw, shape):
    """A random chain of transforms that can be undone exactly (tracking the shape it goes through)."""
    calls = []
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["transpose", "reshape", "reverse", "take", "unsqueeze", "squeeze", "cast",
                                     "mul", "ungroup", "optional"]))
        n = len(shape)
        if kind == "transpose":
            axes = draw(st.permutations(list(range(n))))
            calls.append({"transpose": list(axes)})
            shape = tuple(shape[a] for a in axes)
        elif kind == "reshape":
            size = int(np.prod(shape))
            first = draw(st.sampled_from([d for d in range(1, size + 1) if size % d == 0]))
            calls.append({"reshape": [first, -1]})
            shape = (first, size // first)
        elif kind == "reverse":
            calls.append({"reverse": draw(st.integers(0, n - 1))})
        elif kind == "take":
            axis = draw(st.integers(0, n - 1))
            calls.append({"take": {"indices": list(draw(st.permutations(list(range(shape[axis]))))), "axis": axis}})
        elif kind == "unsqueeze" and n < 5:
            axis = draw(st.integers(0, n))
            calls.append({"unsqueeze": [axis]})
            shape = shape[:axis] + (1,) + shape[axis:]
        elif kind == "squeeze" and 1 in shape and n > 1:
            calls.append({"squeeze": [shape.index(1)]})
            shape = tuple(d for i, d in enumerate(shape) if i != shape.index(1))
        elif kind == "cast":
            calls.append({"cast": "float64"})
        elif kind == "mul":
            calls.append({"mul": draw(st.sampled_from([2, 0.5, -4, 0.125]))})
        elif kind == "optional":  # an operand the source lacks: the identity, undone by nothing
            op = draw(st.sampled_from(["add", "sub", "mul", "div"]))
            calls.append({op: {"by": {"ref": "layer{i}.absent", "optional": True}}})
        elif kind == "ungroup" and n >= 2 and shape[0] % 2 == 0:
            calls.append({"ungroup": 2})
            shape = (shape[0], shape[1] * 2) + shape[2:]
    return calls


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_random_invertible_chains_round_trip(tmp_path_factory, data):
    d = tmp_path_factory.mktemp("chain")
    shape = tuple(data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    calls = _chain(data.draw, shape)
    x = (np.arange(int(np.prod(shape)), dtype=np.float32) - 3.5).reshape(shape)
    src = d / "src.npz"
    module("npz").save(str(src), {"layer7.w": x, "other": np.arange(3, dtype=np.int32)})
    spec = d / "spec.yaml"
    spec.write_text(yaml.safe_dump({"mapspec": 1, "source": {"format": "npz"}, "target": {"format": "npz"}, "rules": [
        {"from": "layer<i>.w", "to": "block{i-2}.weight", "apply": calls},
        {"from": "<n:word>", "to": "kept.{n}"}]}))
    fwd, rev, back = d / "fwd.npz", d / "rev.yaml", d / "back.npz"
    assert run("apply", spec, "-s", src, "-o", fwd, "-q")[0] == 0
    code, _, err = run("invert", spec, "-s", src, "-o", rev)
    assert code == 0, (calls, err)
    code, _, err = run("apply", rev, "-s", fwd, "-o", back, "-q")
    assert code == 0, (calls, rev.read_text(), err)
    assert_identical(tensors(src), tensors(back))


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


def _shipped():
    from mapspec.resources import shipped_specs

    return sorted(shipped_specs())


@pytest.mark.parametrize("name", _shipped())
@pytest.mark.parametrize("lossy", [False, True])
def test_every_shipped_spec_is_reversed_or_refused_by_rule(name, lossy, tmp_path):
    """Without a source file: a reverse that validates, or one line per rule saying why not; never a traceback."""
    out = tmp_path / "r.yaml"
    code, text, err = run("invert", name, "-o", out, *(["--lossy"] if lossy else []))
    assert "Traceback" not in err
    if code == 0:
        assert run("validate", out)[0] == 0
    else:
        assert code == 1 and not out.exists()
        lines = [l for l in err.splitlines() if "cannot be reversed: " in l]
        config = "from the model's config file; the reverse needs their values: give invert --source FILE" in err
        assert config or lines and all(": rule " in l or "target.dtype" in l or "ignores" in l for l in lines), err


def test_llama_meta_to_hf_reversed_with_rope_permute(tmp_path):
    """rope_permute's inverse is the other direction; the head counts come from params.json beside the source."""
    import json

    dim, heads, kv, hd, hidden = 16, 4, 2, 4, 24
    shapes = {"tok_embeddings.weight": (40, dim), "norm.weight": (dim,), "output.weight": (40, dim)}
    per_layer = {"attention.wq": (heads * hd, dim), "attention.wk": (kv * hd, dim), "attention.wv": (kv * hd, dim),
                 "attention.wo": (dim, heads * hd), "feed_forward.w1": (hidden, dim),
                 "feed_forward.w2": (dim, hidden), "feed_forward.w3": (hidden, dim), "attention_norm": (dim,),
                 "ffn_norm": (dim,)}
    shapes.update({f"layers.{i}.{k}.weight": s for i in range(2) for k, s in per_layer.items()})
    sd = {k: np.arange(np.prod(s), dtype=np.float32).reshape(s) + 1000 * n for n, (k, s) in enumerate(shapes.items())}
    src = tmp_path / "meta" / "consolidated.00.pth"
    src.parent.mkdir()
    module("torch").save(str(src), sd)
    (src.parent / "params.json").write_text(json.dumps({"dim": dim, "n_layers": 2, "n_heads": heads,
                                                        "n_kv_heads": kv, "vocab_size": 40, "norm_eps": 1e-5}))
    code, _, err = run("invert", "llama/meta-to-hf")
    assert code == 1 and "the spec reads n_heads, n_kv_heads from the model's config file" in err
    back, rev, _ = round_trip(tmp_path, "llama/meta-to-hf", src, ".safetensors", "--source", src)
    assert_identical(sd, tensors(back))
    text = rev.read_text()
    assert "rope_permute: {heads: '{n_heads}', to: meta}" in text and "n_heads: 4" in text


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


def _gpt2(prefix: str, lm_head: bool) -> dict:
    shapes = {f"{prefix}wte.weight": (10, 4), f"{prefix}wpe.weight": (6, 4), f"{prefix}ln_f.weight": (4,),
              f"{prefix}ln_f.bias": (4,), **({"lm_head.weight": (10, 4)} if lm_head else {})}
    for i in range(2):
        for m, s in (("attn.c_attn", (4, 12)), ("attn.c_proj", (4, 4)), ("mlp.c_fc", (4, 16)), ("mlp.c_proj", (16, 4))):
            shapes[f"{prefix}h.{i}.{m}.weight"], shapes[f"{prefix}h.{i}.{m}.bias"] = s, (s[1],)
        shapes.update({f"{prefix}h.{i}.{m}.{p}": (4,) for m in ("ln_1", "ln_2") for p in ("weight", "bias")})
    return {k: np.arange(np.prod(s), dtype=np.float32).reshape(s) + 1000 * n for n, (k, s) in enumerate(shapes.items())}


@pytest.mark.parametrize("prefix,lm_head", [("transformer.", False), ("", False), ("transformer.", True)])
def test_gpt2_round_trip_writes_the_layout_the_source_had(tmp_path, prefix, lm_head):
    """HF GPT-2 -> nanoGPT accepts two layouts (optional `transformer.` prefix) and a tied or untied lm_head: the
    reverse, planned on the source, writes the prefix the source had and only the rules that matched it."""
    sd = _gpt2(prefix, lm_head)
    src = tmp_path / "gpt2.safetensors"
    module("safetensors").save(str(src), sd)
    back, rev, notes = round_trip(tmp_path, "gpt2/hf-to-nanogpt", src, ".pth", "--source", src)
    assert_identical(sd, tensors(back))
    assert "nothing of the source matched it: left out" in notes
    assert "the reverse writes 'transformer.'" not in notes  # the prefix was read from the source, not guessed


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


def _neox(d, heads=2, hd=4, dim=8):
    import json

    shapes = {"gpt_neox.embed_in.weight": (10, dim), "gpt_neox.final_layer_norm.weight": (dim,),
              "gpt_neox.final_layer_norm.bias": (dim,), "embed_out.weight": (10, dim)}
    for i in range(2):
        shapes[f"gpt_neox.layers.{i}.attention.query_key_value.weight"] = (3 * heads * hd, dim)
        shapes[f"gpt_neox.layers.{i}.attention.query_key_value.bias"] = (3 * heads * hd,)
        shapes[f"gpt_neox.layers.{i}.attention.dense.weight"] = (dim, dim)
    d.mkdir()
    module("safetensors").save(str(d / "model.safetensors"), {
        k: np.arange(np.prod(s), dtype=np.float32).reshape(s) + 1000 * n for n, (k, s) in enumerate(shapes.items())})
    (d / "config.json").write_text(json.dumps({"num_attention_heads": heads, "num_key_value_heads": heads,
                                               "rms_norm_eps": 1e-5}))
    return d / "model.safetensors"


@pytest.mark.parametrize("spec,made_by,suffix,suffix_back", [
    ("gpt2/nanogpt-to-hf", ("gpt2/hf-to-nanogpt", "gpt2"), ".safetensors", ".pth"),
    ("gpt-neox/split-to-fused-qkv", ("gpt-neox/fused-qkv-to-split", "neox"), ".safetensors", ".safetensors"),
    ("llama/hf-to-meta", ("llama/meta-to-hf", "llama"), ".pth", ".safetensors")])
def test_counterpart_specs_round_trip(tmp_path, spec, made_by, suffix, suffix_back):
    """The shipped reverse directions (nanoGPT -> HF, split -> fused QKV, HF -> Meta) invert and round-trip bit for
    bit too; their sources are made from seeded files by the forward direction (a config file beside them)."""
    import json

    forward, kind = made_by
    first = tmp_path / "first"
    if kind == "gpt2":
        first.mkdir()
        seed = first / "hf.safetensors"
        module("safetensors").save(str(seed), _gpt2("transformer.", True))
    elif kind == "neox":
        seed = _neox(first)
    else:
        first.mkdir()
        dim, heads, kv, hidden = 16, 4, 2, 24
        shapes = {"tok_embeddings.weight": (40, dim), "norm.weight": (dim,), "output.weight": (40, dim)}
        for i in range(2):
            for k, s in (("attention.wq", (dim, dim)), ("attention.wk", (kv * 4, dim)), ("attention.wv", (kv * 4, dim)),
                         ("attention.wo", (dim, dim)), ("feed_forward.w1", (hidden, dim)),
                         ("feed_forward.w2", (dim, hidden)), ("feed_forward.w3", (hidden, dim)),
                         ("attention_norm", (dim,)), ("ffn_norm", (dim,))):
                shapes[f"layers.{i}.{k}.weight"] = s
        seed = first / "consolidated.00.pth"
        module("torch").save(str(seed), {k: np.arange(np.prod(s), dtype=np.float32).reshape(s) + 1000 * n
                                         for n, (k, s) in enumerate(shapes.items())})
        (first / "params.json").write_text(json.dumps({"dim": dim, "n_heads": heads, "n_kv_heads": kv}))
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    src = src_dir / f"model{suffix_back}"
    code, _, err = run("apply", forward, "-s", seed, "-o", src, "-q")
    assert code == 0, err
    (src_dir / "config.json").write_text(json.dumps({"num_attention_heads": 4 if kind == "llama" else 2,
                                                     "num_key_value_heads": 2, "rms_norm_eps": 1e-5}))
    back, _, _ = round_trip(tmp_path, spec, src, suffix, "--source", src)
    assert_identical(tensors(src), tensors(back))


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


# -- drops that matched; optional operands ---------------------------------------------------------

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


@settings(max_examples=12, deadline=None)
@given(st.data())
def test_random_quantized_renames_round_trip(tmp_path_factory, data):
    """Property: raw quantized GGUF blocks of any type renamed by a spec come back from the reverse bit for bit,
    under their own ggml type (read by gguf-py); a dequantize in the chain is refused by invert (no inverse)."""
    gguf = pytest.importorskip("gguf")
    from gguf_util import QUANTS, random_blocks

    d = tmp_path_factory.mktemp("quant")
    types = data.draw(st.lists(st.sampled_from(list(QUANTS)), min_size=1, max_size=3))
    raws = {f"blk.{i}.w": (q, random_blocks(q, data.draw(st.integers(1, 3)), 1, seed=i)) for i, q in enumerate(types)}
    src = d / "src.gguf"
    w = gguf.GGUFWriter(str(src), "llama")
    for name, (q, raw) in raws.items():
        w.add_tensor(name, raw, raw_dtype=gguf.GGMLQuantizationType[q])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    spec = d / "spec.yaml"
    spec.write_text(yaml.safe_dump({"mapspec": 1, "source": {"format": "gguf"}, "target": {"format": "gguf"},
                                    "rules": [{"from": "blk.<i>.w", "to": "layers.{i}.weight"}]}))
    back, _, _ = round_trip(d, spec, src, ".gguf", "--source", src)
    got = {t.name: t for t in gguf.GGUFReader(str(back)).tensors}
    assert sorted(got) == sorted(raws)
    for name, (q, raw) in raws.items():
        assert got[name].tensor_type == gguf.GGMLQuantizationType[q]
        assert np.array_equal(np.asarray(got[name].data), raw)
    deq = d / "deq.yaml"
    deq.write_text(yaml.safe_dump({"mapspec": 1, "source": {"format": "gguf"}, "target": {"format": "gguf"},
                                   "rules": [{"from": f"blk.{i}.w", "to": f"w{i}", "apply": [{"dequantize": q}]}
                                             for i, q in enumerate(types)]}))
    code, _, err = run("invert", deq, "-s", src)
    assert code == 1 and "dequantize" in err, err
