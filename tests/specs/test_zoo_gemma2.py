"""gemma2/hf-to-gguf and gemma2/gguf-to-hf on a tiny random Gemma2ForCausalLM (transformers' own classes, random
weights and norms, query_pre_attn_scalar = head_dim as in released checkpoints, a sliding window shorter than the
text): real llama.cpp runs our GGUF with transformers' logits (soft-capping, sliding window, 1 + w norms, tied
embeddings), the GGUF equals llama.cpp's converter output, and gguf-to-hf gives the checkpoint back."""

from __future__ import annotations

import numpy as np
import pytest

import llamacpp_util as L
import llm_fixtures as F
import zoo_checks as Z

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")
gguf = pytest.importorskip("gguf")

CONFIG = dict(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16, sliding_window=8,
              max_position_embeddings=256, rms_norm_eps=1e-6, attn_logit_softcapping=50.0,
              final_logit_softcapping=5.0, bos_token_id=1, eos_token_id=2, pad_token_id=None,
              rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
NORMS = ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm",
         "model.norm")


@pytest.fixture(scope="module")
def f32(tmp_path_factory):
    d = tmp_path_factory.mktemp("gemma2")
    model = Z.build(d / "hf", "Gemma2ForCausalLM", CONFIG, tokenizer=F.gemma_tokenizer)
    Z.apply("gemma2/hf-to-gguf", d / "hf", d / "ours.gguf")
    return model, d


@pytest.mark.slow
def test_llama_cpp_gives_transformers_logits(f32):
    model, d = f32
    # ggml's CPU GELU reads a float16 table: ~1e-3 from transformers' exact tanh GELU here (emulating the table
    # in transformers brings the gap from 2.4e-3 to 4e-4); the converter's own file gives the same logits as ours
    Z.check_logits(model, d / "hf", d / "ours.gguf", atol=1e-3)


@pytest.mark.slow
def test_equals_llama_cpp_converter(f32):
    _, d = f32
    L.convert(d / "hf", d / "theirs.gguf", "--outtype", "f32")
    # the converter writes no rope base for gemma2 (llama.cpp then assumes 10000); ours is the config's
    Z.check_same_as_converter(d / "ours.gguf", d / "theirs.gguf", extra={"gemma2.rope.freq_base": "config"})
    ids = list(range(1, 40))
    assert np.array_equal(Z.llama_cpp_logits(d / "ours.gguf", ids, text=False),
                          Z.llama_cpp_logits(d / "theirs.gguf", ids, text=False))


def test_norms_are_one_plus_w(f32):
    _, d = f32
    src, out = Z.state(d / "hf" / "model.safetensors"), Z.tensors(d / "ours.gguf")
    w = src["model.layers.1.post_feedforward_layernorm.weight"]
    assert out["blk.1.post_ffw_norm.weight"][0] == "F32"
    assert np.array_equal(out["blk.1.post_ffw_norm.weight"][2], w + np.float32(1))
    assert "output.weight" not in out  # tied: llama.cpp projects with token_embd


def test_round_trip_f32(f32, tmp_path):
    """float32: every tensor back bit for bit but the norms, whose 1 + w the GGUF holds rounded to float32."""
    _, d = f32
    Z.apply("gemma2/gguf-to-hf", d / "ours.gguf", tmp_path / "back.safetensors")
    src, back = Z.state(d / "hf" / "model.safetensors"), Z.state(tmp_path / "back.safetensors")
    assert sorted(src) == sorted(back)
    for k, v in src.items():
        assert back[k].dtype == v.dtype, k
        if any(n in k for n in NORMS):
            assert np.abs(back[k] - v).max() <= 2.0 ** -23, k
        else:
            assert np.array_equal(back[k], v), k


def test_round_trip_bf16_bit_identical(tmp_path):
    """bfloat16 (as Gemma 2 ships): 1 + w is exact in float32, so the norms come back bit for bit (as float32)."""
    Z.build(tmp_path / "hf", "Gemma2ForCausalLM", CONFIG, dtype="bfloat16", tokenizer=F.gemma_tokenizer)
    Z.apply("gemma2/hf-to-gguf", tmp_path / "hf", tmp_path / "m.gguf")
    Z.apply("gemma2/gguf-to-hf", tmp_path / "m.gguf", tmp_path / "back.safetensors")
    src, back = Z.state(tmp_path / "hf" / "model.safetensors"), Z.state(tmp_path / "back.safetensors")
    assert sorted(src) == sorted(back)
    for k, v in src.items():
        if any(n in k for n in NORMS):
            assert back[k].dtype == np.float32 and np.array_equal(back[k], v.astype(np.float32)), k
        else:
            assert back[k].dtype == v.dtype and np.array_equal(back[k].view(np.uint8), v.view(np.uint8)), k


@pytest.mark.parametrize("change, named", [
    (dict(tie_word_embeddings=False), "lm_head.weight"),  # llama.cpp's gemma2 has no output tensor
    (dict(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}), "rope_type"),
    # llama.cpp scales queries by 1/sqrt(head_dim) here (not a 46-layer model): another scalar would compute
    # something else in llama.cpp, and the file has no key to say so
    (dict(query_pre_attn_scalar=24), "query_pre_attn_scalar is 24"),
    (dict(num_hidden_layers=46, head_dim=32, query_pre_attn_scalar=32), "query_pre_attn_scalar is 32"),
])
def test_refused(tmp_path, change, named):
    """What llama.cpp's gemma2 cannot express stops the conversion, naming it."""
    import io

    from mapspec import cli

    Z.build(tmp_path / "hf", "Gemma2ForCausalLM", dict(CONFIG, **{"num_hidden_layers": 1, **change}),
            tokenizer=F.gemma_tokenizer)
    err = io.StringIO()
    assert cli.run(["apply", "gemma2/hf-to-gguf", "-s", str(tmp_path / "hf"), "-o", str(tmp_path / "m.gguf")],
                   stdout=io.StringIO(), stderr=err) == 1
    assert named in err.getvalue() and "Traceback" not in err.getvalue(), err.getvalue()


@pytest.mark.slow
def test_gguf_to_hf_folder_loads_in_transformers(f32, tmp_path):
    """-o DIR/: config.json (soft-capping, sliding window, query scale), generation_config.json and the tokenizer
    files; from_pretrained loads them: the original's token ids, and its config's logits on the folder's weights
    (the float32 norms come back within one step, so not the original's logits to the bit)."""
    model, d = f32
    Z.check_folder(model, d / "hf", d / "ours.gguf", "gemma2/gguf-to-hf", tmp_path / "back", exact=False)


@pytest.mark.parametrize("layers, scalar", [(2, 32), (46, 16)])
def test_folder_query_scale_is_llama_cpps(tmp_path, layers, scalar):
    """llama.cpp scales queries by 1/sqrt(key_length), but by 1/sqrt(hidden / heads) for a 46-layer gemma2 (its
    27B; src/llama-model.cpp): config.json's query_pre_attn_scalar says the same (head_dim 32, hidden / heads 16)."""
    import json

    Z.build(tmp_path / "hf", "Gemma2ForCausalLM", dict(CONFIG, num_hidden_layers=layers, head_dim=32,
                                                       query_pre_attn_scalar=scalar), tokenizer=F.gemma_tokenizer)
    Z.apply("gemma2/hf-to-gguf", tmp_path / "hf", tmp_path / "m.gguf")
    Z.apply("gemma2/gguf-to-hf", tmp_path / "m.gguf", f"{tmp_path / 'back'}/")
    assert json.loads((tmp_path / "back" / "config.json").read_text())["query_pre_attn_scalar"] == scalar
