"""verify proves language-model conversions with no hand-written check: HF GPT-2 -> nanoGPT (a nanoGPT
factory given on the command line, token inputs) and Meta's Llama layout -> transformers'
LlamaForCausalLM (a small Meta-style reference model as the source).  The models are tiny, built
from configs with seeded random weights; transformers itself runs the HF side."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from mapspec import cli
from mapspec.resources import shipped_specs

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

HERE = Path(__file__).resolve().parent
GPT2_SPEC = "gpt2/hf-to-nanogpt"  # the shipped spec; its verify: section runs HF GPT-2 with transformers
LLAMA_SPEC = "llama/meta-to-hf"  # the shipped spec: head counts and eps from params.json beside the checkpoint
META = f"{HERE / 'meta_llama.py'}:llama_beside"
NANOGPT = f"{HERE / 'nanogpt_model.py'}:gpt_beside"


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    """A tiny HF GPT-2 saved as transformers saves it (config.json + model.safetensors), converted to nanoGPT."""
    d = tmp_path_factory.mktemp("gpt2")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=64, n_positions=32, bos_token_id=0,
                                  eos_token_id=0)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(d / "hf")
    (d / "config.json").write_text((d / "hf" / "config.json").read_text())  # nanoGPT's sizes, beside nanogpt.pt
    out = d / "nanogpt.pt"
    code, _, err = run("apply", GPT2_SPEC, "-s", d / "hf" / "model.safetensors", "-o", out, "-q")
    assert code == 0, err
    return d / "hf" / "model.safetensors", out


def test_gpt2_to_nanogpt_passes_with_token_inputs(gpt2):
    src, out = gpt2
    code, text, err = run("verify", GPT2_SPEC, "-s", src, "-c", out, "--target-model", NANOGPT,
                          "--input", "tokens:5,17,63,0,9,9,2")
    assert code == 0, text + err
    assert "input: token ids 5,17,63,0,9,9,2, shape 1x7" in text
    assert "output (last position) 1x1x64" in text and "PASS" in text


def test_gpt2_to_nanogpt_layers_and_json(gpt2):
    src, out = gpt2
    code, text, err = run("verify", GPT2_SPEC, "-s", src, "-c", out, "--target-model", NANOGPT,
                          "--input", "random-tokens:12", "--layers", "--json")
    assert code == 0, text + err
    doc = json.loads(text)
    assert doc["ok"] and doc["input_shape"] == [1, 12] and doc["first_divergence"] is None
    compared = {(l["source"], l["target"]) for l in doc["layers"]}
    # every module holding weights was compared, each with its metrics
    assert ("model.transformer.h.1.attn.c_attn", "transformer.h.1.attn.c_attn") in compared  # the spec's HF wrapper
    assert ("model.transformer.wte", "transformer.wte") in compared and len(compared) >= 2 * 6 + 3
    assert all(l["max_rel"] < 1e-5 and l["cosine"] > 0.99999 for l in doc["layers"])
    assert doc["outputs"][0]["name"] == "last position" and doc["outputs"][0]["shape"] == [1, 1, 64]


def test_gpt2_without_the_conv1d_transpose_fails_at_the_first_attention(gpt2, tmp_path):
    src, _ = gpt2
    text = shipped_specs()[GPT2_SPEC].read_text()
    broken = tmp_path / "broken.yaml"
    # the square attention output projection of block 0 copied without its Conv1D -> Linear transpose
    rule = '  - from: "<?transformer.>h.<i>.<m:attn.c_attn|attn.c_proj|mlp.c_fc|mlp.c_proj>.weight"'
    assert rule in text
    broken.write_text(text.replace(rule, '  - from: "transformer.h.0.attn.c_proj.weight"\n'
                                         '    to: "transformer.h.0.attn.c_proj.weight"\n' + rule))
    out = tmp_path / "b.pt"
    (tmp_path / "config.json").write_text((Path(str(src)).parent / "config.json").read_text())
    assert run("apply", broken, "-s", src, "-o", out, "-q")[0] == 0
    code, text, err = run("verify", broken, "-s", src, "-c", out, "--target-model", NANOGPT, "--layers",
                          "--input", "random-tokens:8")
    assert code == 1 and "FAIL" in text, text + err
    assert "first divergence: model.transformer.h.0.attn.c_proj -> transformer.h.0.attn.c_proj" in text


@pytest.fixture(scope="module")
def llama(tmp_path_factory, monkeypatch_module):
    """A Meta-layout checkpoint from the reference model, converted; the transformers config beside it."""
    monkeypatch_module.syspath_prepend(str(HERE))
    import meta_llama

    d = tmp_path_factory.mktemp("llama")
    torch.manual_seed(0)
    model = meta_llama.llama(vocab_size=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden=48,
                             norm_eps=1e-6, rope_theta=10000.0)
    torch.save(model.state_dict(), d / "consolidated.pth")
    (d / "params.json").write_text(json.dumps({"dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2,
                                               "vocab_size": 64, "norm_eps": 1e-6}))
    hf = d / "hf"
    hf.mkdir()
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
                                   rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=0, eos_token_id=0,
                                   architectures=["LlamaForCausalLM"])
    (hf / "config.json").write_text(cfg.to_json_string())
    out = hf / "model.safetensors"
    code, _, err = run("apply", LLAMA_SPEC, "-s", d / "consolidated.pth", "-o", out, "-q")
    assert code == 0, err
    return d / "consolidated.pth", out


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def hf_llama(converted):
    """The converted side as transformers' LlamaForCausalLM, whatever the spec's verify: section says."""
    return ["--target-config", Path(str(converted)).parent / "config.json"]


def test_meta_llama_to_hf_llama_passes(llama):
    src, out = llama
    code, text, err = run("verify", LLAMA_SPEC, "-s", src, "-c", out, "--source-model", META, *hf_llama(out),
                          "--input", "random-tokens:10", "--layers")
    assert code == 0, text + err
    assert "features permuted" in text  # q_proj's rows were permuted for rotary halves
    assert "output (logits) 1x10x64" in text and "PASS" in text and "first divergence" not in text


def test_meta_llama_without_the_rotary_permutation_is_caught(llama, tmp_path):
    src, _ = llama
    text = shipped_specs()[LLAMA_SPEC].read_text()
    broken = tmp_path / "broken.yaml"
    broken.write_text(text.replace('    apply: [{rope_permute: {heads: "{n_heads}", to: hf}}]\n', "", 1))
    assert broken.read_text() != text
    out = tmp_path / "hf" / "model.safetensors"
    out.parent.mkdir()
    (out.parent / "config.json").write_text((Path(str(llama[1])).parent / "config.json").read_text())
    assert run("apply", broken, "-s", src, "-o", out, "-q")[0] == 0
    code, text, err = run("verify", broken, "-s", src, "-c", out, "--source-model", META, *hf_llama(out),
                          "--input", "random-tokens:10", "--layers")
    assert code == 1 and "FAIL" in text, text + err
    assert "first divergence: layers.0.attention" in text


def test_token_input_outside_the_vocabulary_is_one_error(gpt2):
    src, out = gpt2
    code, _, err = run("verify", GPT2_SPEC, "-s", src, "-c", out, "--target-model", NANOGPT, "--input", "tokens:64")
    assert code == 1 and "token id 64 is outside the vocabulary (64 ids)" in err and "Traceback" not in err


HF_TO_HF = """mapspec: 1
name: gpt2-hf-to-hf
source: {format: safetensors}
target: {format: safetensors}
rules:
%s  - from: "<name:path>"
    to: "{name}"
"""


@pytest.mark.parametrize("broken", [False, True])
def test_hidden_states_of_two_transformers_models(gpt2, tmp_path, broken):
    """Both sides transformers (config.json beside each file): --hidden-states compares every hidden state,
    so a weight changed in block 1 shows in hidden state 2 and after, not before."""
    src, _ = gpt2
    rule = ('  - from: transformer.h.1.mlp.c_proj.weight\n    to: transformer.h.1.mlp.c_proj.weight\n'
            '    apply: [{mul: -1.0}]\n') if broken else ""
    spec = tmp_path / "hf.yaml"
    spec.write_text(HF_TO_HF % rule)
    out = tmp_path / "hf" / "model.safetensors"
    out.parent.mkdir()
    (out.parent / "config.json").write_text((Path(str(src)).parent / "config.json").read_text())
    assert run("apply", spec, "-s", src, "-o", out, "-q")[0] == 0
    code, text, err = run("verify", spec, "-s", src, "-c", out, "--input", "random-tokens:6", "--hidden-states",
                          "--json")
    assert text.startswith("{"), err
    doc = json.loads(text)
    cos = {o["name"]: o["cosine"] for o in doc["outputs"]}
    assert list(cos) == ["logits", "hidden_states[0]", "hidden_states[1]", "hidden_states[2]"], text + err
    if not broken:
        assert code == 0 and doc["ok"] and all(o["max_abs"] == 0 for o in doc["outputs"])
    else:
        assert code == 1 and not doc["ok"]
        assert [o["max_abs"] == 0 for o in doc["outputs"][1:]] == [True, True, False]


def test_hidden_states_need_transformers_on_both_sides(gpt2):
    src, out = gpt2
    code, _, err = run("verify", GPT2_SPEC, "-s", src, "-c", out, "--target-model", NANOGPT, "--hidden-states")
    assert code == 1 and "--hidden-states compares transformers models; the source runs as torch" in err


# -- the shipped reference models have layers, and --layers names a lost rotary permute ------------------

@pytest.fixture(scope="module")
def meta(tmp_path_factory, monkeypatch_module):
    """A Meta-layout checkpoint (every parameter random, the norms too) with its params.json; the transformers
    config of the converted model in hf/ (as transformers 5 saves it)."""
    monkeypatch_module.syspath_prepend(str(HERE))
    import meta_llama

    d = tmp_path_factory.mktemp("meta")
    torch.manual_seed(1)
    model = meta_llama.llama(vocab_size=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden=48,
                             norm_eps=1e-6, rope_theta=10000.0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape) * 0.3)
    torch.save(model.state_dict(), d / "consolidated.pth")
    (d / "params.json").write_text(json.dumps({"dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2,
                                               "vocab_size": 64, "norm_eps": 1e-6}))
    transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
                             tie_word_embeddings=False, architectures=["LlamaForCausalLM"]).save_pretrained(d / "hf")
    return d


def _without_k_permute(spec: str, tmp_path):
    """The shipped spec less the rope_permute of k (q keeps its own)."""
    text = shipped_specs()[spec].read_text()
    lines = text.splitlines(keepends=True)
    k = [i for i, line in enumerate(lines) if "rope_permute" in line and "kv_heads" in line]
    assert len(k) == 1
    path = tmp_path / "no-k-permute.yaml"
    path.write_text("".join(lines[:k[0]] + lines[k[0] + 1:]))
    return path


@pytest.mark.parametrize("broken", [False, True])
def test_meta_to_hf_layers_with_the_shipped_reference_model(meta, tmp_path, broken):
    """The spec's own verify: section (mapspec.models.llm's Meta model, transformers' Llama): every layer is
    compared; q/k match only permuted (Meta rotates adjacent pairs, transformers the halves), and a spec that
    lost the permute of k is caught at k, with the cause, not at o_proj."""
    spec = _without_k_permute(LLAMA_SPEC, tmp_path) if broken else LLAMA_SPEC
    out = tmp_path / "hf" / "model.safetensors"
    out.parent.mkdir()
    (out.parent / "config.json").write_text((meta / "hf" / "config.json").read_text())
    assert run("apply", spec, "-s", meta / "consolidated.pth", "-o", out, "-q")[0] == 0
    code, text, err = run("verify", spec, "-s", meta / "consolidated.pth", "-c", out, "--layers", "--json")
    doc = json.loads(text)
    rows = {(l["source"], l["target"]): l for l in doc["layers"]}
    wk = rows[("layers.0.attention.wk", "model.model.layers.0.self_attn.k_proj")]
    assert ("layers.1.feed_forward.w2", "model.model.layers.1.mlp.down_proj") in rows and len(rows) >= 2 * 9 + 3
    assert "vocabulary 0..63" in doc["input"]
    if not broken:
        assert code == 0 and doc["ok"] and doc["first_divergence"] is None, text + err
        assert wk["note"] == "features permuted"
        return
    assert code == 1 and not doc["ok"]
    bad = doc["first_divergence"]
    assert (bad["source"], bad["target"]) == ("layers.0.attention.wk", "model.model.layers.0.self_attn.k_proj")
    assert bad["likely_causes"][0].startswith("rotary permute (rows interleaved vs halves)")


def test_hf_to_nanogpt_layers_with_the_shipped_reference_model_and_a_folder(gpt2):
    """The spec's own nanoGPT (mapspec.models.llm) has its layers; -s names the transformers folder (its
    config.json inside, not beside it); token ids are drawn from the whole vocabulary."""
    src, out = gpt2
    code, text, err = run("verify", GPT2_SPEC, "-s", src.parent, "-c", out, "--layers", "--json")
    assert code == 0, text + err
    doc = json.loads(text)
    compared = {(l["source"], l["target"]) for l in doc["layers"]}
    assert ("model.transformer.h.1.attn.c_attn", "transformer.h.1.attn.c_attn") in compared
    assert ("model.lm_head", "lm_head") in compared or ("model.transformer.wte", "transformer.wte") in compared
    assert doc["input"] == "8 seeded random token ids, uniform over the whole vocabulary 0..63 (64 ids, seed 0)"
    assert doc["first_divergence"] is None and all(l["max_rel"] < 1e-5 for l in doc["layers"])


def test_a_config_that_does_not_describe_the_weights_is_one_error(tmp_path):
    """A head_dim model (Mistral-Nemo style: head_dim 64 where hidden / heads is 40) verified with a config
    that lacks head_dim: one line naming the file and the tensor, no traceback."""
    cfg = transformers.MistralConfig(vocab_size=48, hidden_size=80, intermediate_size=64, num_hidden_layers=1,
                                     num_attention_heads=2, num_key_value_heads=1, head_dim=64,
                                     tie_word_embeddings=False)
    torch.manual_seed(0)
    transformers.MistralForCausalLM(cfg).save_pretrained(tmp_path / "src")
    spec = tmp_path / "hf.yaml"
    spec.write_text(HF_TO_HF % "")
    out = tmp_path / "out" / "model.safetensors"
    out.parent.mkdir()
    assert run("apply", spec, "-s", tmp_path / "src" / "model.safetensors", "-o", out, "-q")[0] == 0
    doc = json.loads((tmp_path / "src" / "config.json").read_text())
    del doc["head_dim"]
    (out.parent / "config.json").write_text(json.dumps(doc))
    code, text, err = run("verify", spec, "-s", tmp_path / "src" / "model.safetensors", "-c", out)
    assert code == 1 and err.startswith("mapspec: error: ") and err.count("\n") == 1, err
    assert str(out) in err and "size mismatch for model.layers.0.self_attn.q_proj.weight" in err


def test_an_npy_of_token_ids_is_the_input_not_random_ids(gpt2, tmp_path):
    """A spec that draws token ids (verify.input: {tokens: 8}) still runs the .npy given with -i, at its shape."""
    src, out = gpt2
    np.save(tmp_path / "ids.npy", np.array([[5, 17, 63, 0, 9]], dtype=np.int64))
    code, text, err = run("verify", GPT2_SPEC, "-s", src, "-c", out, "-i", tmp_path / "ids.npy")
    assert code == 0, text + err
    assert f"input: {tmp_path / 'ids.npy'}, shape 1x5" in text
