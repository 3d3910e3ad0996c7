"""invert() end to end (mapspec/invert/build.py): reverse specs that round-trip bit for bit.

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


@pytest.mark.parametrize("spec", ["caffenet/caffe-to-keras", "caffenet/caffe-to-keras-grouped"])
def test_caffenet_round_trip_is_bit_identical(caffenet, tmp_path, spec):
    src = caffenet / "tiny.caffemodel"
    back, rev, _ = round_trip(tmp_path, spec, src, ".h5", "--source", src, template=caffenet / "tiny.prototxt")
    assert_identical(tensors(src), tensors(back))
    if spec.endswith("keras"):  # the two Conv2D halves are joined again, each once
        doc = yaml.safe_load(rev.read_text())
        assert {"concat": {"axis": 3, "after": ["{l}_2/kernel"]}} in doc["rules"][0]["apply"]


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


@pytest.mark.slow  # property test; the transform contract checks each inverse fast
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
