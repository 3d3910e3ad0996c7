"""llama/hf-to-gguf and llama/gguf-to-hf end to end on a tiny random Llama (transformers, no downloads).

Oracles: gguf-py reads our GGUF; gguf-py's own writer, fed llama.cpp's permute of the same tensors,
gives the same tensors; transformers' own GGUF loader (config from our metadata, its reverse permute)
gives back the original model's state dict; and llama/gguf-to-hf undoes the conversion bit for bit.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

from mapspec import cli
from mapspec.formats import open_checkpoint

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CONFIG = dict(vocab_size=96, hidden_size=64, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=10000.0,
              tie_word_embeddings=False)


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def llama_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py's LlamaModel.permute (n_head is n_head_kv for k)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


HF_TO_GGUF = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
              "lm_head.weight": "output.weight"}
LAYER = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
         "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
         "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**CONFIG)).eval()
    d = tmp_path_factory.mktemp("llama")
    model.save_pretrained(d, safe_serialization=True)
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    return d / "model.safetensors", state


HEADS = ["--var", "num_attention_heads=4", "--var", "num_key_value_heads=2"]


def test_hf_to_gguf_matches_gguf_py_and_transformers(hf_model, tmp_path):
    src, state = hf_model
    out = tmp_path / "ours.gguf"
    # the hyper-parameters come from the config.json that save_pretrained wrote beside the weights
    code, text, err = run("apply", "llama/hf-to-gguf", "--source", src, "-o", out, "--no-tokenizer")
    assert code == 0, err

    # gguf-py's writer, given the same tensors permuted by llama.cpp's own formula
    theirs = tmp_path / "theirs.gguf"
    w = gguf.GGUFWriter(str(theirs), "llama")
    for hf, a in state.items():
        if hf in HF_TO_GGUF:
            name = HF_TO_GGUF[hf]
        else:
            _, _, i, *rest = hf.split(".")
            name = f"blk.{i}.{LAYER['.'.join(rest[:-1])]}.weight"
        if name.endswith("attn_q.weight"):
            a = llama_permute(a, CONFIG["num_attention_heads"])
        elif name.endswith("attn_k.weight"):
            a = llama_permute(a, CONFIG["num_key_value_heads"])
        w.add_tensor(name, a)
    w.add_block_count(2)
    w.add_tokenizer_model("llama")
    w.add_token_list(["<unk>", "<s>", "</s>"] + [f"t{i}" for i in range(CONFIG["vocab_size"] - 3)])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    a, b = gguf.GGUFReader(str(out)), gguf.GGUFReader(str(theirs))
    ta, tb = {t.name: t for t in a.tensors}, {t.name: t for t in b.tensors}
    assert set(ta) == set(tb) and len(ta) == 3 + 9 * CONFIG["num_hidden_layers"]
    for name, t in tb.items():
        assert ta[name].tensor_type == t.tensor_type and list(ta[name].shape) == list(t.shape), name
        assert np.asarray(ta[name].data).tobytes() == np.asarray(t.data).tobytes(), name
    f = a.fields
    assert f["general.architecture"].contents() == "llama"
    assert f["llama.block_count"].contents() == 2 and f["llama.block_count"].types == [gguf.GGUFValueType.UINT32]
    assert f["llama.attention.head_count_kv"].contents() == 2
    assert f["llama.rope.dimension_count"].contents() == 16
    assert f["llama.attention.layer_norm_rms_epsilon"].types == [gguf.GGUFValueType.FLOAT32]
    assert f["llama.attention.layer_norm_rms_epsilon"].contents() == pytest.approx(1e-5)

    # with gguf-py's file as the template, its tokenizer metadata is kept and the tensors are still ours
    again = tmp_path / "again.gguf"
    assert run("apply", "llama/hf-to-gguf", "-s", src, "-o", again, "-t", theirs)[0] == 0
    c = gguf.GGUFReader(str(again))
    assert c.fields["tokenizer.ggml.model"].contents() == "llama"
    assert c.fields["tokenizer.ggml.tokens"].contents()[:3] == ["<unk>", "<s>", "</s>"]
    assert c.fields["llama.block_count"].contents() == 2
    tc = {t.name: t for t in c.tensors}
    assert all(np.asarray(tc[n].data).tobytes() == np.asarray(t.data).tobytes() for n, t in ta.items())

    # transformers' GGUF loader: config from our metadata, tensors un-permuted by its own code
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    cfg = load_gguf_checkpoint(str(out))["config"]
    for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "intermediate_size", "max_position_embeddings", "vocab_size"):
        assert cfg[k] == CONFIG[k], k
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**CONFIG))
    tensors = load_gguf_checkpoint(str(out), return_tensors=True, model_to_load=model)["tensors"]
    loaded = {k: np.asarray(v) for k, v in tensors.items()}
    assert set(loaded) == set(state)
    for k, v in state.items():
        assert np.array_equal(loaded[k], v), k


def test_gguf_to_hf_round_trip(hf_model, tmp_path):
    src, state = hf_model
    g = tmp_path / "m.gguf"
    assert run("apply", "llama/hf-to-gguf", "-s", src, "-o", g, "--no-tokenizer")[0] == 0
    back = tmp_path / "back.safetensors"
    code, _, err = run("apply", "llama/gguf-to-hf", "-s", g, "-o", back, *HEADS)
    assert code == 0, err
    with open_checkpoint(back) as r:
        assert set(r.names()) == set(state)
        for k, v in state.items():
            assert np.array_equal(r.read(k), v), k


def test_config_key_missing_stops_the_conversion(hf_model, tmp_path):
    import json
    import shutil

    src, _ = hf_model
    d = tmp_path / "model"
    d.mkdir()
    shutil.copy(src, d / "model.safetensors")
    config = json.loads((src.parent / "config.json").read_text())
    del config["vocab_size"]
    (d / "config.json").write_text(json.dumps(config))
    code, _, err = run("apply", "llama/hf-to-gguf", "-s", d / "model.safetensors", "-o", tmp_path / "x.gguf")
    assert code == 1 and "vocab_size" in err and "config.json" in err, err
    assert not (tmp_path / "x.gguf").exists()


def test_quantized_gguf_to_hf_equals_transformers_loader(hf_model, tmp_path):
    """A Q8_0 GGUF (quantized by gguf-py) read with --source-option dequantize=true: the same tensors as
    transformers' GGUF loader (gguf-py's dequantize, its own reverse permute)."""
    src, state = hf_model
    g = tmp_path / "f32.gguf"
    assert run("apply", "llama/hf-to-gguf", "-s", src, "-o", g, "--no-tokenizer")[0] == 0
    q = tmp_path / "q8.gguf"
    reader = gguf.GGUFReader(str(g))
    w = gguf.GGUFWriter(str(q), "llama")
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        w.add_key_value(key, field.contents(), field.types[0], field.types[-1] if len(field.types) > 1 else None)
    for t in reader.tensors:
        a = np.asarray(t.data)
        if a.ndim == 2 and a.shape[1] % 32 == 0:  # matrices in Q8_0 (whole blocks only, like llama-quantize)
            w.add_tensor(t.name, gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q8_0),
                         raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(t.name, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    back = tmp_path / "back.safetensors"
    # without the option the Q8_0 blocks would land as uint8 "weights" under Hugging Face names: refused
    code, _, err = run("apply", "llama/gguf-to-hf", "-s", q, "-o", back, *HEADS)
    assert code == 1 and "raw Q8_0 blocks" in err and "dequantize=true" in err and "Traceback" not in err, err
    assert not back.exists()
    code, _, err = run("apply", "llama/gguf-to-hf", "-s", q, "-o", back, "--source-option", "dequantize=true",
                       *HEADS)
    assert code == 0, err
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**CONFIG))
    theirs = load_gguf_checkpoint(str(q), return_tensors=True, model_to_load=model)["tensors"]
    with open_checkpoint(back) as r:
        assert set(r.names()) == set(theirs) == set(state)
        for k in state:
            assert np.array_equal(r.read(k), np.asarray(theirs[k])), k
        assert np.abs(r.read("model.layers.0.self_attn.q_proj.weight")
                      - state["model.layers.0.self_attn.q_proj.weight"]).max() < 1e-3  # Q8_0 is close


# -- mapspec verify: transformers runs the HF checkpoint and, with its own GGUF loader, the GGUF file ------

def _spec_without_rope_permute(tmp_path, name):
    from mapspec.resources import shipped_specs

    text = shipped_specs()[name].read_text()
    lines = [line for line in text.splitlines() if "rope_permute" not in line.split("#")[0]]
    assert len(lines) == len(text.splitlines()) - 2  # the q and k permutes, nothing else
    path = tmp_path / "broken.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("broken", [False, True])
def test_verify_hf_to_gguf(hf_model, tmp_path, broken):
    src, _ = hf_model
    spec = _spec_without_rope_permute(tmp_path, "llama/hf-to-gguf") if broken else "llama/hf-to-gguf"
    out = tmp_path / "m.gguf"
    code, _, err = run("apply", spec, "-s", src, "-o", out, "-q", "--no-tokenizer")
    assert code == 0, err
    code, text, err = run("verify", spec, "-s", src, "-c", out)
    if broken:  # q/k rows in Hugging Face's order where llama.cpp expects its own: other logits
        assert code == 1 and "FAIL" in text, text + err
    else:
        assert code == 0 and "PASS" in text and "logits" in text, text + err


@pytest.mark.parametrize("broken", [False, True])
def test_verify_gguf_to_hf(hf_model, tmp_path, broken):
    src, _ = hf_model
    g = tmp_path / "m.gguf"
    assert run("apply", "llama/hf-to-gguf", "-s", src, "-o", g, "-q", "--no-tokenizer")[0] == 0
    spec = _spec_without_rope_permute(tmp_path, "llama/gguf-to-hf") if broken else "llama/gguf-to-hf"
    back = tmp_path / "back.safetensors"
    code, _, err = run("apply", spec, "-s", g, "-o", back, "-q", *HEADS)
    assert code == 0, err
    code, text, err = run("verify", spec, "-s", g, "-c", back, "--target-config", src.parent / "config.json", *HEADS)
    if broken:
        assert code == 1 and "FAIL" in text, text + err
    else:
        assert code == 0 and "PASS" in text, text + err


def test_verify_names_a_gguf_transformers_cannot_load(hf_model, tmp_path):
    src, _ = hf_model
    g = tmp_path / "m.gguf"
    w = gguf.GGUFWriter(str(g), "nosucharch")  # an architecture transformers does not read from GGUF
    w.add_tensor("x", np.arange(4, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    code, _, err = run("verify", "llama/hf-to-gguf", "-s", src, "-c", g)
    assert code == 1 and "m.gguf" in err and "Traceback" not in err, err


def _spec_without_k_permute(tmp_path, name):
    from mapspec.resources import shipped_specs

    lines = shipped_specs()[name].read_text().splitlines(keepends=True)
    k = [i for i, line in enumerate(lines) if "rope_permute" in line and "num_key_value_heads" in line]
    assert len(k) == 1
    path = tmp_path / "no-k-permute.yaml"
    path.write_text("".join(lines[:k[0]] + lines[k[0] + 1:]))
    return path


@pytest.mark.parametrize("direction", ["hf-to-gguf", "gguf-to-hf"])
@pytest.mark.parametrize("broken", [False, True])
def test_verify_layers_pair_gguf_and_hf_names(hf_model, tmp_path, direction, broken):
    """transformers runs the GGUF side with its own GGUF loader, so its modules carry Hugging Face names; verify
    names them as the file does (blk.0.attn_k), the names the spec's rules pair.  A spec that lost the permute of
    k is caught at k (both sides lay rotary features out as halves once transformers has loaded them), with the
    cause, not at o_proj."""
    src, _ = hf_model
    g = tmp_path / "m.gguf"
    name = f"llama/{direction}"
    spec = _spec_without_k_permute(tmp_path, name) if broken else name
    if direction == "hf-to-gguf":
        assert run("apply", spec, "-s", src, "-o", g, "-q", "--no-tokenizer")[0] == 0
        argv = ["verify", spec, "-s", src.parent, "-c", g]  # the folder, as apply takes it: config.json inside
        k = ("model.layers.0.self_attn.k_proj", "blk.0.attn_k")
    else:
        assert run("apply", "llama/hf-to-gguf", "-s", src, "-o", g, "-q", "--no-tokenizer")[0] == 0
        back = tmp_path / "back.safetensors"
        assert run("apply", spec, "-s", g, "-o", back, "-q", *HEADS)[0] == 0
        argv = ["verify", spec, "-s", g, "-c", back, "--target-config", src.parent / "config.json", *HEADS]
        k = ("blk.0.attn_k", "model.layers.0.self_attn.k_proj")
    code, text, err = run(*argv, "--layers", "--json")
    assert text.startswith("{"), err
    doc = __import__("json").loads(text)
    rows = {(l["source"], l["target"]): l for l in doc["layers"]}
    assert k in rows and len(rows) >= 2 * 9 + 3, text
    if not broken:
        assert code == 0 and doc["ok"] and doc["first_divergence"] is None, text + err
        assert all(l["max_abs"] == 0 and l["note"] == "" for l in doc["layers"])
        return
    assert code == 1 and not doc["ok"]
    bad = doc["first_divergence"]
    assert (bad["source"], bad["target"]) == k, text
    assert bad["likely_causes"][0].startswith("rotary permute (rows interleaved vs halves)")
