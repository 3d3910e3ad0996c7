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
