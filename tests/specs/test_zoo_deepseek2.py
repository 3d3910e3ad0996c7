"""deepseek2/hf-to-gguf and deepseek2/gguf-to-hf on a tiny random DeepseekV3ForCausalLM (transformers' own classes,
random weights, norms and routing bias; low-rank q and kv, one dense layer then mixture-of-experts layers with a
shared expert, grouped sigmoid routing, routed scaling; with and without yarn rope scaling; a byte-level BPE
tokenizer): real llama.cpp runs our GGUF
with transformers' logits, the GGUF equals llama.cpp's converter output (kv_b split into k_b/v_b, experts
stacked), and gguf-to-hf gives the checkpoint back bit for bit."""

from __future__ import annotations

import hashlib
import io
import json
import os

import numpy as np
import pytest

import llamacpp_util as L
import llm_fixtures as F
import zoo_checks as Z
from mapspec import cli

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
pytest.importorskip("gguf")

CONFIG = dict(vocab_size=304, hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=3,
              num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1, n_routed_experts=4,
              routed_scaling_factor=2.5, kv_lora_rank=32, q_lora_rank=24, qk_rope_head_dim=8, v_head_dim=16,
              qk_nope_head_dim=16, n_group=2, topk_group=1, num_experts_per_tok=2, first_k_dense_replace=1,
              norm_topk_prob=True, max_position_embeddings=256, rms_norm_eps=1e-6, bos_token_id=298,
              eos_token_id=299, pad_token_id=None, tie_word_embeddings=False,
              rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
# DeepSeek-V3's rope scaling, at a tiny original context (the text is longer)
YARN = {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0, "original_max_position_embeddings": 16,
        "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0}
CASES = {"plain": {}, "yarn": dict(rope_parameters=YARN)}
PRE = ("--tokenizer-pre", "llama-bpe")  # the test tokenizer's split is Llama 3's; its hash is no released model's


def build(folder, **change):
    model = Z.build(folder, "DeepseekV3ForCausalLM", dict(CONFIG, **change), norm_center=1.0,
                    tokenizer=F.bpe_tokenizer)
    import torch

    with torch.no_grad():  # the routing bias too: random, so that it changes which experts are picked
        for layer in model.model.layers[CONFIG["first_k_dense_replace"]:]:
            layer.mlp.gate.e_score_correction_bias.normal_(0.0, 0.5)
    model.save_pretrained(folder)
    return model


@pytest.fixture(scope="module", params=list(CASES))
def f32(request, tmp_path_factory):
    d = tmp_path_factory.mktemp("deepseek2")
    model = build(d / "hf", **CASES[request.param])
    Z.apply("deepseek2/hf-to-gguf", d / "hf", d / "ours.gguf", *PRE)
    return model, d


@pytest.mark.slow
def test_llama_cpp_gives_transformers_logits(f32):
    model, d = f32
    Z.check_logits(model, d / "hf", d / "ours.gguf", atol=1e-4)


def chkhsh(folder) -> str:
    """llama.cpp's hash of the folder's tokenizer (its token ids for the check text), as its converter computes it."""
    from transformers import AutoTokenizer

    text = json.load(open(os.path.join(os.path.dirname(L.__file__), "..", "mapspec", "frameworks",
                                       "gguf", "pretokenizers.json"), encoding="utf-8"))["check_text"]
    return hashlib.sha256(str(AutoTokenizer.from_pretrained(folder).encode(text)).encode()).hexdigest()


@pytest.fixture(scope="module")
def theirs(f32):
    _, d = f32
    L.convert(d / "hf", d / "theirs.gguf", "--outtype", "f32", pre=(chkhsh(d / "hf"), "llama-bpe"))
    return d / "theirs.gguf"


@pytest.mark.slow
def test_equals_llama_cpp_converter(f32, theirs):
    _, d = f32
    # transformers' DeepSeek-V3 routes with a sigmoid whatever its config says; the converter writes the gating
    # function only from a config's scoring_func (transformers 5 writes none), and llama.cpp's default is softmax
    Z.check_same_as_converter(d / "ours.gguf", theirs, extra={"deepseek2.expert_gating_func": "sigmoid"})


@pytest.mark.slow
def test_the_gating_key_matters(f32, theirs):
    """Without expert_gating_func (the converter's file) llama.cpp routes with a softmax: far from transformers."""
    import torch
    import transformers

    model, d = f32
    ids = transformers.AutoTokenizer.from_pretrained(d / "hf").encode(Z.TEXT)
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(Z.llama_cpp_logits(theirs, ids) - ref).max() > 0.1


def test_kv_b_split_per_head(f32):
    """attn_k_b / attn_v_b against numpy: head h's first qk_nope_head_dim rows of kv_b (transposed), then the rest."""
    _, d = f32
    kv_b = Z.state(d / "hf" / "model.safetensors")["model.layers.2.self_attn.kv_b_proj.weight"]
    out = Z.tensors(d / "ours.gguf")
    heads, nope, v = CONFIG["num_attention_heads"], CONFIG["qk_nope_head_dim"], CONFIG["v_head_dim"]
    for h in range(heads):
        rows = kv_b[h * (nope + v):(h + 1) * (nope + v)]
        assert np.array_equal(out["blk.2.attn_k_b.weight"][2][h], rows[:nope].T)
        assert np.array_equal(out["blk.2.attn_v_b.weight"][2][h], rows[nope:])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_round_trip_bit_identical(tmp_path, dtype):
    Z.build(tmp_path / "hf", "DeepseekV3ForCausalLM", CONFIG, norm_center=1.0, dtype=dtype, tokenizer=F.bpe_tokenizer)
    Z.apply("deepseek2/hf-to-gguf", tmp_path / "hf", tmp_path / "m.gguf", *PRE)
    Z.apply("deepseek2/gguf-to-hf", tmp_path / "m.gguf", tmp_path / "back.safetensors")
    src, back = Z.state(tmp_path / "hf" / "model.safetensors"), Z.state(tmp_path / "back.safetensors")
    assert sorted(src) == sorted(back)
    for k, v in src.items():
        if "norm" in k or "e_score_correction_bias" in k:  # llama.cpp keeps 1-D tensors in float32: the same values
            assert back[k].dtype == np.float32 and np.array_equal(back[k], v.astype(np.float32)), k
        else:
            assert back[k].dtype == v.dtype and np.array_equal(back[k].view(np.uint8), v.view(np.uint8)), k


@pytest.mark.parametrize("change, named", [
    (dict(rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0}), "rope_type"),
    (dict(rope_parameters=dict(YARN, mscale=0.707)), "mscale"),  # llama.cpp takes mscale_all_dim only
    (dict(rope_interleave=False), "rope_interleave"),
])
def test_refused(tmp_path, change, named):
    """What this spec does not implement (or llama.cpp's deepseek2 cannot run) stops the conversion, naming it."""
    Z.build(tmp_path / "hf", "DeepseekV3ForCausalLM", dict(CONFIG, num_hidden_layers=2, **change), norm_center=1.0,
            tokenizer=F.bpe_tokenizer)
    err = io.StringIO()
    assert cli.run(["apply", "deepseek2/hf-to-gguf", "-s", str(tmp_path / "hf"), "-o", str(tmp_path / "m.gguf"),
                    *PRE], stdout=io.StringIO(), stderr=err) == 1
    assert named in err.getvalue() and "Traceback" not in err.getvalue(), err.getvalue()


@pytest.mark.slow
def test_gguf_to_hf_folder_loads_in_transformers(f32, tmp_path):
    """-o DIR/: a DeepseekV3ForCausalLM config.json (MLA ranks and head sizes, grouped sigmoid routing, shared
    experts) and generation_config.json; from_pretrained loads them: the original's logits, exactly.  transformers
    cannot build a deepseek2 tokenizer from a GGUF: the folder is refused without --no-tokenizer.  Yarn rope scaling, which the folder's config does not carry, is refused."""
    model, d = f32
    if model.config.rope_parameters["rope_type"] == "yarn":
        err = io.StringIO()
        assert cli.run(["apply", "deepseek2/gguf-to-hf", "-s", str(d / "ours.gguf"), "-o", f"{tmp_path / 'back'}/"],
                       stdout=io.StringIO(), stderr=err) == 1
        assert "rope scaling" in err.getvalue() and len(err.getvalue().strip().splitlines()) == 1, err.getvalue()
        assert not (tmp_path / "back").exists()
        return
    # transformers' GGUF tokenizer converter: "GGUF model with architecture deepseek2 is not supported yet"
    Z.check_folder(model, d / "hf", d / "ours.gguf", "deepseek2/gguf-to-hf", tmp_path / "back", tokenizer=False)
