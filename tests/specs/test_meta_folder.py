"""llama/hf-to-meta -o DIR/ writes Meta's folder: consolidated.00.pth, params.json and the tokenizer.model.
params.json is read back by llama/meta-to-hf (bit-identical round trip) and by the Meta reference model
(mapspec.models.llm.meta_llama: same logits as transformers'), and its multiple_of / ffn_dim_multiplier give
the checkpoint's feed-forward width by Meta's own formula (llama/model.py FeedForward, restated here)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

import llm_fixtures as F
from mapspec import cli

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def meta_width(dim, multiple_of, ffn_dim_multiplier):
    """Meta's llama/model.py FeedForward."""
    hidden_dim = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier is not None:
        hidden_dim = int(ffn_dim_multiplier * hidden_dim)
    return multiple_of * ((hidden_dim + multiple_of - 1) // multiple_of)


@pytest.mark.parametrize("hidden, intermediate", [(64, 96), (64, 176), (96, 256)])
def test_hf_to_meta_folder(tmp_path, hidden, intermediate):
    from mapspec.models.llm import meta_llama

    d = tmp_path / "hf"
    model = F.llama_model(d, vocab_size=330, hidden_size=hidden, intermediate_size=intermediate,
                          rope_theta=500000.0, rms_norm_eps=1e-6)
    F.sentencepiece_tokenizer(d)
    out = tmp_path / "meta"
    code, text, err = run("apply", "llama/hf-to-meta", "-s", d, "-o", f"{out}/")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["consolidated.00.pth", "params.json", "tokenizer.model"]
    assert "params.json" in text
    p = json.loads((out / "params.json").read_text())
    cfg = model.config
    assert (p["dim"], p["n_layers"], p["n_heads"], p["n_kv_heads"], p["vocab_size"]) == (
        cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.vocab_size)
    assert (p["norm_eps"], p["rope_theta"]) == (1e-6, 500000.0)
    assert meta_width(p["dim"], p["multiple_of"], p["ffn_dim_multiplier"]) == intermediate
    assert (out / "tokenizer.model").read_bytes() == (d / "tokenizer.model").read_bytes()

    ref = meta_llama(str(out / "consolidated.00.pth"))  # reads params.json beside the weights
    state = torch.load(out / "consolidated.00.pth", weights_only=True)
    assert not ref.load_state_dict(state).missing_keys
    tokens = torch.tensor([[1, 39, 7, 7, 20, 0, 301]])
    with torch.no_grad():
        np.testing.assert_allclose(ref.eval()(tokens).numpy(), model(tokens).logits.numpy(), rtol=1e-4, atol=1e-4)

    back = tmp_path / "back.safetensors"
    code, _, err = run("apply", "llama/meta-to-hf", "-s", out / "consolidated.00.pth", "-o", back)
    assert code == 0, err
    from safetensors.numpy import load_file

    a, b = load_file(d / "model.safetensors"), load_file(back)
    assert sorted(a) == sorted(b) and all(a[k].tobytes() == b[k].tobytes() for k in a)


def test_rope_scaling_is_refused_for_a_meta_folder(tmp_path):
    """params.json here has no use_scaled_rope: a Llama 3.1 rope-scaled model's folder would compute another
    model; the tensors alone (-o FILE) still convert."""
    d = tmp_path / "hf"
    F.llama_model(d, vocab_size=330, rope_parameters={"rope_theta": 500000.0, "rope_type": "llama3", "factor": 8.0,
                                                      "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                      "original_max_position_embeddings": 64})
    code, _, err = run("apply", "llama/hf-to-meta", "-s", d, "-o", f"{tmp_path / 'meta'}/")
    assert code == 1 and "rope_type = 'llama3'" in err and "Traceback" not in err, err
    assert not (tmp_path / "meta").exists()
    code, _, err = run("apply", "llama/hf-to-meta", "-s", d, "-o", tmp_path / "consolidated.00.pth")
    assert code == 0, err
