"""Rotary layouts (mapspec/verify/rotary.py), against transformers' own attention code: every model type listed
as rotating halves does so (its rotate_half pairs feature i with i + head_dim/2), and only q/k projections count."""

from __future__ import annotations

import importlib

import pytest

from mapspec.verify.rotary import HALVES_MODEL_TYPES, expected, hf_layout

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("model_type", sorted(HALVES_MODEL_TYPES))
def test_listed_model_types_rotate_halves_in_transformers(model_type):
    mod = importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")
    x = torch.arange(8.0)
    assert mod.rotate_half(x).tolist() == [-4.0, -5.0, -6.0, -7.0, 0.0, 1.0, 2.0, 3.0]


def test_only_q_and_k_projections_of_a_real_model_have_a_layout():
    cfg = transformers.LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=8, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=1)
    names = [n for n, _ in transformers.LlamaForCausalLM(cfg).named_modules()]
    halves = sorted(n for n in names if hf_layout("llama", n) == "halves")
    assert halves == [f"model.layers.{i}.self_attn.{p}_proj" for i in range(2) for p in "kq"]
    assert hf_layout("gpt2", "model.layers.0.self_attn.q_proj") is None
    assert expected("halves", "halves") == "same" and expected("interleaved", "halves") == "permuted"
    assert expected(None, "halves") is None
