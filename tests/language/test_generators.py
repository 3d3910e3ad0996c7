"""Generators against other people's code: transformers' Llama 3 rope scaling, gguf-py's size label and
model-name heuristics.  (The bytes of rope_freqs.weight against llama.cpp's converter itself:
tests/specs/test_llama_gguf_converter.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from mapspec.language import generators
from mapspec.errors import MapspecError

gguf = pytest.importorskip("gguf")


@pytest.mark.parametrize("base,dim,factor,low,high,ctx", [(500000.0, 128, 8.0, 1.0, 4.0, 8192),
                                                          (500000.0, 64, 32.0, 1.0, 4.0, 8192),
                                                          (10000.0, 16, 8.0, 1.0, 4.0, 64)])
def test_llama3_rope_factors_are_transformers_scaling(base, dim, factor, low, high, ctx):
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import _compute_llama3_parameters

    cfg = transformers.LlamaConfig(hidden_size=dim * 2, num_attention_heads=2,
                                   max_position_embeddings=int(ctx * factor),
                                   rope_parameters=dict(rope_type="llama3", rope_theta=base, factor=factor,
                                                        low_freq_factor=low, high_freq_factor=high,
                                                        original_max_position_embeddings=ctx))
    scaled, _ = _compute_llama3_parameters(cfg, "cpu")
    plain = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    ours = generators.run("llama3_rope_factors", dict(base=base, dim=dim, factor=factor, low_freq_factor=low,
                                                      high_freq_factor=high, original_context=ctx), "test")
    assert ours.dtype == np.float32 and ours.shape == (dim // 2,)
    np.testing.assert_allclose(ours, plain / scaled.double().numpy(), rtol=1e-5)  # factor = inv_freq / scaled
    assert len(set(ours.tolist())) > 2  # all three regimes: 1, factor and smoothed


def test_generator_arguments_are_checked():
    with pytest.raises(MapspecError, match="'dim' must be an integer"):
        generators.run("llama3_rope_factors", dict(base=1e4, dim="16", factor=8.0, low_freq_factor=1.0,
                                                   high_freq_factor=4.0, original_context=64), "here")
    for bad, why in ((dict(base=0.0), "must be positive"), (dict(factor=0.0), "must be positive"),
                     (dict(dim=1 << 40), "not one of a model"), (dict(low_freq_factor=5.0), "must be larger")):
        args = dict(base=1e4, dim=16, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_context=64)
        with pytest.raises(MapspecError, match=why):
            generators.run("llama3_rope_factors", {**args, **bad}, "here")
    with pytest.raises(MapspecError, match="must be even"):
        generators.run("llama3_rope_factors", dict(base=1e4, dim=15, factor=8.0, low_freq_factor=1.0,
                                                   high_freq_factor=4.0, original_context=64), "here")


@pytest.mark.parametrize("n", [0, 999, 67904, 1_000_001, 8_030_261_248, 999_999_999_999, 2 * 10 ** 12 + 5])
def test_size_label_is_gguf_py(n):
    from gguf.utility import size_label

    assert generators.run("size_label", {"params": n}, "t") == size_label(n, 0, 0, 0)



@pytest.mark.parametrize("shared, per_expert, experts", [(0, 0, 0), (123_456, 0, 0), (1_000, 250, 4),
                                                          (1_300_000_000, 5_600_000_000, 8), (99_999, 1, 256)])
def test_moe_size_label_is_gguf_py(shared, per_expert, experts):
    """gguf-py's size_label from its parameter counts (shared, one expert's, expert count) of the same tensors."""
    from gguf.utility import size_label

    total = shared + per_expert * experts
    ours = generators.run("moe_size_label", {"params": total, "expert_params": per_expert, "experts": experts}, "t")
    assert ours == size_label(total, shared, per_expert, experts)

@pytest.mark.parametrize("name_or_path,folder", [("", "tiny-llama"), ("", "plain"), ("meta-llama/Llama-3.1-8B", "x"),
                                                 ("/home/me/models/llama", "tiny-llama-v2"), ("", "my model")])
def test_hf_model_name_is_gguf_py_heuristic(tmp_path, name_or_path, folder):
    import json

    from gguf.metadata import Metadata

    d = tmp_path / folder
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"_name_or_path": name_or_path} if name_or_path else {}))
    want = Metadata.load(None, d, None, 1000).name
    assert generators.run("hf_model_name", {"name_or_path": name_or_path, "folder": folder}, "t") == want


def test_deepseek2_yarn_log_multiplier_is_the_converters():
    """llama.cpp's converter writes 0.1 x mscale_all_dim for deepseek2 (its float32 in the file)."""
    for m in (1.0, 0.707, 0.0):
        assert np.float32(generators.run("deepseek2_yarn_log_multiplier", {"mscale_all_dim": m}, "t")) == \
            np.float32(0.1 * m)


def test_rope_factors_and_longrope_attn_factor():
    """rope_factors: the config's list as float32, one per rotary pair (else refused); the attention factor is
    sqrt(1 + ln(s) / ln(original)) for a context s times the original (numpy's), 1 without extension."""
    out = generators.run("rope_factors", {"values": [1, 1.5, 2.25, 3.0], "dim": 8}, "t")
    assert out.dtype == np.float32 and out.tolist() == [1.0, 1.5, 2.25, 3.0]
    with pytest.raises(MapspecError, match="4 pairs"):
        generators.run("rope_factors", {"values": [1.0, 2.0], "dim": 8}, "t")
    with pytest.raises(MapspecError, match="list of numbers"):
        generators.run("rope_factors", {"values": [1.0, "x"], "dim": 4}, "t")
    for context, original in ((131072, 4096), (256, 128), (4096, 4096), (100, 4096)):
        expect = np.sqrt(1 + np.log(context / original) / np.log(original)) if context > original else 1.0
        got = generators.run("longrope_attn_factor", {"context": context, "original_context": original}, "t")
        assert np.isclose(got, expect, rtol=1e-15, atol=0)
def test_rotary_dims_is_the_whole_part_and_refuses_a_fraction_out_of_range():
    # convert_hf_to_gguf.py's GPTNeoXModel: int(rotary_pct * (hidden_size // num_attention_heads))
    assert generators.run("rotary_dims", {"head_dim": 80, "fraction": 0.25}, "t") == 20
    assert generators.run("rotary_dims", {"head_dim": 96, "fraction": 0.33}, "t") == 31
    for bad in (0.0, 1.5):
        with pytest.raises(MapspecError, match="must be in"):
            generators.run("rotary_dims", {"head_dim": 64, "fraction": bad}, "t")
