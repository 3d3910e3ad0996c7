"""gemma3/hf-to-gguf and gemma3/gguf-to-hf on tiny random Gemma3ForCausalLM models (transformers' own classes,
random weights and norms, query_pre_attn_scalar = head_dim as in released checkpoints, six layers so that the
sixth is full attention with its own rope base, a window shorter than the text): real llama.cpp runs our GGUF
with transformers' logits (q/k norms, 1 + w norms, final soft-capping, two rope bases, linear rope scaling as
Gemma 3 4B+ has), the GGUF equals llama.cpp's converter output, and gguf-to-hf gives the checkpoint back."""

from __future__ import annotations

import io

import numpy as np
import pytest

import llamacpp_util as L
import llm_fixtures as F
import zoo_checks as Z
from mapspec import cli

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")
pytest.importorskip("gguf")

ROPE = {"full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}
LINEAR = dict(ROPE, full_attention={"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0})
CONFIG = dict(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=6, num_attention_heads=4,
              num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16, sliding_window=8,
              max_position_embeddings=256, rms_norm_eps=1e-6, final_logit_softcapping=None, bos_token_id=1,
              eos_token_id=2, pad_token_id=None, rope_parameters=ROPE)
# Gemma3ForConditionalGeneration: the text model inside a multimodal checkpoint (a tiny SigLIP tower beside it)
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
              patch_size=8)
MULTIMODAL = dict(text_config=CONFIG, vision_config=VISION, mm_tokens_per_image=4, image_token_index=300,
                  boi_token_index=301, eoi_token_index=302)
CASES = {"plain": ("Gemma3ForCausalLM", CONFIG),
         "softcap-linear-rope": ("Gemma3ForCausalLM", dict(CONFIG, final_logit_softcapping=8.0, rope_parameters=LINEAR)),
         "multimodal": ("Gemma3ForConditionalGeneration", MULTIMODAL)}
NORMS = ("layernorm", "model.norm", "q_norm", "k_norm")


@pytest.fixture(scope="module", params=list(CASES))
def f32(request, tmp_path_factory):
    d = tmp_path_factory.mktemp("gemma3")
    cls, config = CASES[request.param]
    model = Z.build(d / "hf", cls, config, tokenizer=F.gemma_tokenizer)
    Z.apply("gemma3/hf-to-gguf", d / "hf", d / "ours.gguf")
    return model, d


@pytest.mark.slow
def test_llama_cpp_gives_transformers_logits(f32):
    model, d = f32
    # ggml's CPU GELU reads a float16 table: ~1e-3 from transformers' exact tanh GELU (see test_zoo_gemma2)
    Z.check_logits(model, d / "hf", d / "ours.gguf", atol=1e-3)


@pytest.mark.slow
def test_equals_llama_cpp_converter(f32):
    _, d = f32
    L.convert(d / "hf", d / "theirs.gguf", "--outtype", "f32")
    Z.check_same_as_converter(d / "ours.gguf", d / "theirs.gguf")


def test_round_trip_f32(f32, tmp_path):
    """float32: every tensor back bit for bit but the norms, whose 1 + w the GGUF holds rounded to float32 (a
    multimodal checkpoint: its text model's, as Gemma3ForCausalLM names them)."""
    _, d = f32
    Z.apply("gemma3/gguf-to-hf", d / "ours.gguf", tmp_path / "back.safetensors")
    src, back = Z.state(d / "hf" / "model.safetensors"), Z.state(tmp_path / "back.safetensors")
    if any(k.startswith("vision_tower.") for k in src):
        src = {k.replace("language_model.model.", "model."): v for k, v in src.items() if k.startswith("language_model.")}
    assert sorted(src) == sorted(back)
    for k, v in src.items():
        assert back[k].dtype == v.dtype, k
        if any(n in k for n in NORMS):
            assert np.abs(back[k] - v).max() <= 2.0 ** -23, k
        else:
            assert np.array_equal(back[k], v), k


def test_round_trip_bf16_bit_identical(tmp_path):
    """bfloat16 (as Gemma 3 ships): 1 + w is exact in float32, so the norms come back bit for bit (as float32)."""
    Z.build(tmp_path / "hf", "Gemma3ForCausalLM", dict(CONFIG, num_hidden_layers=2), dtype="bfloat16",
            tokenizer=F.gemma_tokenizer)
    Z.apply("gemma3/hf-to-gguf", tmp_path / "hf", tmp_path / "m.gguf")
    Z.apply("gemma3/gguf-to-hf", tmp_path / "m.gguf", tmp_path / "back.safetensors")
    src, back = Z.state(tmp_path / "hf" / "model.safetensors"), Z.state(tmp_path / "back.safetensors")
    assert sorted(src) == sorted(back) and any("q_norm" in k for k in src)
    for k, v in src.items():
        if any(n in k for n in NORMS):
            assert back[k].dtype == np.float32 and np.array_equal(back[k], v.astype(np.float32)), k
        else:
            assert back[k].dtype == v.dtype and np.array_equal(back[k].view(np.uint8), v.view(np.uint8)), k


@pytest.mark.parametrize("change, named", [
    (dict(attn_logit_softcapping=50.0), "attn_logit_softcapping"),
    (dict(rope_parameters=dict(ROPE, full_attention={"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e6,
                                                      "original_max_position_embeddings": 64})), "rope_type"),
    (dict(sliding_window_pattern=2), "sliding_window_pattern"),  # llama.cpp's gemma3: every sixth layer full
    (dict(query_pre_attn_scalar=24), "query_pre_attn_scalar is 24"),  # llama.cpp scales queries by head_dim
])
def test_refused(tmp_path, change, named):
    """What llama.cpp's gemma3 cannot express (or this spec does not implement) stops the conversion, naming it."""
    Z.build(tmp_path / "hf", "Gemma3ForCausalLM", dict(CONFIG, num_hidden_layers=1, **change),
            tokenizer=F.gemma_tokenizer)
    err = io.StringIO()
    assert cli.run(["apply", "gemma3/hf-to-gguf", "-s", str(tmp_path / "hf"), "-o", str(tmp_path / "m.gguf")],
                   stdout=io.StringIO(), stderr=err) == 1
    assert named in err.getvalue() and "Traceback" not in err.getvalue(), err.getvalue()
    assert not (tmp_path / "m.gguf").exists()


@pytest.mark.slow
def test_gguf_to_hf_folder_loads_in_transformers(f32, tmp_path):
    """-o DIR/: config.json (rope bases per layer type, soft-capping, sliding window), generation_config.json and
    the tokenizer files; from_pretrained loads them: the original's token ids, and its config's logits on the
    folder's weights (float32 norms come back within one step).  Linear rope scaling, which the folder's config
    does not carry, is refused; a multimodal checkpoint comes back as its text model."""
    model, d = f32
    if model.config.get_text_config().rope_parameters["full_attention"]["rope_type"] == "linear":
        err = io.StringIO()
        assert cli.run(["apply", "gemma3/gguf-to-hf", "-s", str(d / "ours.gguf"), "-o", f"{tmp_path / 'back'}/"],
                       stdout=io.StringIO(), stderr=err) == 1
        assert "rope scaling" in err.getvalue() and len(err.getvalue().strip().splitlines()) == 1, err.getvalue()
        return
    if type(model).__name__ != "Gemma3ForCausalLM":
        pytest.skip("the multimodal checkpoint's text model: not the class the folder loads as")
    Z.check_folder(model, d / "hf", d / "ours.gguf", "gemma3/gguf-to-hf", tmp_path / "back", exact=False)
