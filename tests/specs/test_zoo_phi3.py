"""phi3/hf-to-gguf and phi3/gguf-to-hf on tiny random Phi3ForCausalLM models (transformers' own classes, random
weights and norms, a SentencePiece tokenizer with added special and user tokens and padding to vocab_size, as
Phi-3's): real llama.cpp runs our GGUF (fused qkv and gate/up) with
transformers' logits, the GGUF equals llama.cpp's converter output (the tokenizer's added tokens as its Phi-3
converter re-reads them), and gguf-to-hf gives the checkpoint back bit for bit."""

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

CONFIG = dict(vocab_size=330, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, original_max_position_embeddings=128,
              rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, pad_token_id=None, sliding_window=None,
              rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 1.0})


def tokenizer(folder, vocab_size):
    """320 SentencePiece pieces, a special <pad> and a user <extra> added after them, the rest padding."""
    F.sentencepiece_tokenizer(folder, 320)
    F.add_tokens(folder)


@pytest.fixture(scope="module")
def f32(tmp_path_factory):
    d = tmp_path_factory.mktemp("phi3")
    model = Z.build(d / "hf", "Phi3ForCausalLM", CONFIG, norm_center=1.0, tokenizer=tokenizer)
    Z.apply("phi3/hf-to-gguf", d / "hf", d / "ours.gguf")
    return model, d


@pytest.mark.slow
def test_llama_cpp_gives_transformers_logits(f32):
    model, d = f32
    Z.check_logits(model, d / "hf", d / "ours.gguf", atol=1e-5)


@pytest.mark.slow
def test_equals_llama_cpp_converter(f32):
    _, d = f32
    L.convert(d / "hf", d / "theirs.gguf", "--outtype", "f32")
    Z.check_same_as_converter(d / "ours.gguf", d / "theirs.gguf")
    types = L.fields(d / "ours.gguf")["tokenizer.ggml.token_type"][1]
    assert types[:3] == [3, 3, 3] and types[320:323] == [3, 4, 5]  # re-read added tokens; padding unused


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_round_trip_bit_identical(tmp_path, dtype):
    Z.build(tmp_path / "hf", "Phi3ForCausalLM", CONFIG, norm_center=1.0, dtype=dtype, tokenizer=tokenizer)
    Z.apply("phi3/hf-to-gguf", tmp_path / "hf", tmp_path / "m.gguf")
    Z.apply("phi3/gguf-to-hf", tmp_path / "m.gguf", tmp_path / "back.safetensors")
    src, back = Z.state(tmp_path / "hf" / "model.safetensors"), Z.state(tmp_path / "back.safetensors")
    assert sorted(src) == sorted(back)
    for k, v in src.items():
        if "norm" in k:  # llama.cpp keeps norms in float32: the same values
            assert back[k].dtype == np.float32 and np.array_equal(back[k], v.astype(np.float32)), k
        else:
            assert back[k].dtype == v.dtype and np.array_equal(back[k].view(np.uint8), v.view(np.uint8)), k


LONGROPE = {"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 1.0,
            "long_factor": [1.5] * 8, "short_factor": [1.0] * 8, "original_max_position_embeddings": 128}



# Phi-3 128K's longrope, tiny: distinct factors per rotary pair (head_dim 16: 8 pairs)
LONG = [1.0 + 0.5 * i for i in range(8)]
SHORT = [1.0 + 0.1 * i for i in range(8)]


@pytest.mark.slow
@pytest.mark.parametrize("original, context", [(512, 1024), (128, 256)])
def test_longrope(tmp_path, original, context):
    """longrope: rope_factors_long/short and attn_factor equal the converter's, and llama.cpp gives transformers'
    logits.  llama.cpp picks the long factors when its context (llama-cpp-python pads n_ctx=64 to 256) exceeds
    the original one, transformers when the sequence does: at original 512 both use the short factors; at 128
    llama.cpp uses the long ones, so transformers' reference runs with long factors in place of the short."""
    import torch
    import transformers

    rope = dict(LONGROPE, long_factor=LONG, short_factor=SHORT, original_max_position_embeddings=original)
    config = dict(CONFIG, rope_parameters=rope, original_max_position_embeddings=original,
                  max_position_embeddings=context)
    model = Z.build(tmp_path / "hf", "Phi3ForCausalLM", config, norm_center=1.0, tokenizer=tokenizer)
    Z.apply("phi3/hf-to-gguf", tmp_path / "hf", tmp_path / "ours.gguf")
    L.convert(tmp_path / "hf", tmp_path / "theirs.gguf", "--outtype", "f32")
    Z.check_same_as_converter(tmp_path / "ours.gguf", tmp_path / "theirs.gguf")
    out = Z.tensors(tmp_path / "ours.gguf")
    assert np.array_equal(out["rope_factors_long.weight"][2], np.float32(LONG))
    assert np.array_equal(out["rope_factors_short.weight"][2], np.float32(SHORT))
    if original < 256:
        reference = transformers.Phi3ForCausalLM(transformers.Phi3Config(
            **dict(config, rope_parameters=dict(rope, short_factor=LONG)))).eval()
        reference.load_state_dict(model.state_dict())
        model = reference
    Z.check_logits(model, tmp_path / "hf", tmp_path / "ours.gguf", atol=1e-5)
    # back to Hugging Face: Phi3ForCausalLM keeps the factors in config.json, which gguf-to-hf does not write
    err = io.StringIO()
    assert cli.run(["apply", "phi3/gguf-to-hf", "-s", str(tmp_path / "ours.gguf"), "-o", str(tmp_path / "b.safetensors")],
                   stdout=io.StringIO(), stderr=err) == 1
    assert "rope_factors_long.weight" in err.getvalue()


@pytest.mark.parametrize("change, named", [
    # transformers' Phi-3 takes no other rope type: written into config.json below
    (dict(rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}), "rope_type"),
    (dict(rope_parameters=dict(CONFIG["rope_parameters"], partial_rotary_factor=0.5)), "partial_rotary_factor"),
    # llama.cpp's phi3 ignores the window: its logits past 8 tokens would be transformers' without one
    (dict(sliding_window=8), "sliding_window"),
])
def test_refused(tmp_path, change, named):
    """What this spec does not implement stops the conversion, naming the config key."""
    import json

    change = dict(change)
    rope = change.pop("rope_parameters", None) if change.get("rope_parameters", {}).get("rope_type") == "dynamic" else None
    Z.build(tmp_path / "hf", "Phi3ForCausalLM", dict(CONFIG, num_hidden_layers=1, **change), tokenizer=tokenizer)
    if rope:
        cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
        (tmp_path / "hf" / "config.json").write_text(json.dumps(dict(cfg, rope_parameters=rope)))
    err = io.StringIO()
    assert cli.run(["apply", "phi3/hf-to-gguf", "-s", str(tmp_path / "hf"), "-o", str(tmp_path / "m.gguf")],
                   stdout=io.StringIO(), stderr=err) == 1
    assert named in err.getvalue() and "Traceback" not in err.getvalue(), err.getvalue()


@pytest.mark.slow
def test_llama_cpp_phi3_ignores_a_sliding_window(tmp_path):
    """The fact behind refusing a window: llama.cpp's own converter output of a Phi-3 with an 8-token window
    gives transformers' logits without the window (if llama.cpp learns the window, this fails: lift the refusal)."""
    import torch
    import transformers

    model = Z.build(tmp_path / "hf", "Phi3ForCausalLM", dict(CONFIG, sliding_window=8), norm_center=1.0,
                    tokenizer=tokenizer)
    L.convert(tmp_path / "hf", tmp_path / "theirs.gguf", "--outtype", "f32")
    ids = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf").encode(Z.TEXT)
    theirs = Z.llama_cpp_logits(tmp_path / "theirs.gguf", ids)
    with torch.no_grad():
        windowed = model(torch.tensor([ids])).logits[0].numpy()
        model.config.sliding_window = None
        full = model(torch.tensor([ids])).logits[0].numpy()
    assert len(ids) > 8 and np.abs(theirs - windowed).max() > 0.1
    assert np.abs(theirs - full).max() <= 1e-5 * max(1.0, np.abs(full).max())


@pytest.mark.slow
def test_gguf_to_hf_folder_loads_in_transformers(f32, tmp_path):
    """-o DIR/: config.json (no sliding window, as llama.cpp runs it), generation_config.json and the tokenizer
    files; from_pretrained loads them: the original's token ids and logits, exactly."""
    model, d = f32
    Z.check_folder(model, d / "hf", d / "ours.gguf", "phi3/gguf-to-hf", tmp_path / "back")
