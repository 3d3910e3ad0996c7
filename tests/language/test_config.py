"""Config vars read from where transformers keeps them (mapspec/language/config.py), on configs transformers
writes itself (save_pretrained): rope_parameters (transformers 5), head_dim, text_config, tied embeddings."""

from __future__ import annotations

import json

import numpy as np
import pytest

import llm_fixtures as F
from mapspec.engine import plan
from mapspec.errors import MapspecError
from mapspec.language.config import with_config
from mapspec.language.load import load_spec

transformers = pytest.importorskip("transformers")
pytest.importorskip("torch")


def planned(folder):
    p = plan("llama/hf-to-gguf", str(folder), no_tokenizer=True)  # the tokenizer: tests/formats/test_gguf_vocab.py
    p.check()
    return p, {k: (v["value"] if isinstance(v, dict) else v) for k, v in p.metadata.items()}


def test_llama3_rope_theta_and_scaling_come_from_rope_parameters(tmp_path):
    p, meta = planned(F.save_model(tmp_path / "l3", F.llama3_config()))
    assert meta["llama.rope.freq_base"] == 500000.0  # not transformers 4's default 10000
    step = {s.target: s for s in p.steps}["rope_freqs.weight"]
    assert step.out_meta.shape == (8,) and step.rule.generate
    assert not any(k.startswith("llama.rope.scaling") for k in meta)  # llama3: the tensor, no scaling keys


@pytest.mark.parametrize("rope,keys", [
    (dict(rope_type="linear", rope_theta=1e6, factor=4.0), {"llama.rope.scaling.type": "linear",
                                                            "llama.rope.scaling.factor": 4.0}),
    (dict(rope_type="yarn", rope_theta=1e6, factor=4.0, original_max_position_embeddings=32, beta_fast=16.0),
     {"llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 4.0,
      "llama.rope.scaling.original_context_length": 32, "llama.rope.scaling.yarn_beta_fast": 16.0}),
])
def test_linear_and_yarn_rope_scaling_keys(tmp_path, rope, keys):
    p, meta = planned(F.save_model(tmp_path / "m", F.llama_config(rope_parameters=rope)))
    got = {k: v for k, v in meta.items() if k.startswith("llama.rope.scaling")}
    assert got == keys and meta["llama.rope.freq_base"] == 1e6
    assert "rope_freqs.weight" not in {s.target for s in p.steps}


def test_mistral_nemo_head_dim(tmp_path):
    p, meta = planned(F.save_model(tmp_path / "nemo", F.mistral_nemo_config(), "MistralForCausalLM"))
    assert meta["llama.attention.key_length"] == meta["llama.attention.value_length"] == 64
    assert meta["llama.rope.dimension_count"] == 64  # not hidden_size / heads = 40
    assert meta["llama.rope.freq_base"] == 1e6


@pytest.mark.parametrize("tied", [True, False])
def test_tied_and_untied_embeddings(tmp_path, tied):
    p, meta = planned(F.save_model(tmp_path / "m", F.llama_config(tie_word_embeddings=tied)))
    assert ("output.weight" in {s.target for s in p.steps}) is not tied
    assert meta["llama.attention.key_length"] == 16 and meta["general.type"] == "model"


def test_a_config_without_head_dim_takes_hidden_size_over_heads(tmp_path):
    folder = F.save_model(tmp_path / "old", F.llama_config())
    config = json.loads((folder / "config.json").read_text())
    del config["head_dim"]  # configs written before transformers had head_dim
    (folder / "config.json").write_text(json.dumps(config))
    assert planned(folder)[1]["llama.attention.key_length"] == 16


def test_a_rope_type_the_spec_does_not_implement_is_an_error(tmp_path):
    rope = dict(rope_type="dynamic", rope_theta=1e4, factor=2.0)
    folder = F.save_model(tmp_path / "dyn", F.llama_config(rope_parameters=rope))
    with pytest.raises(MapspecError, match=r"rope_parameters\.rope_type is 'dynamic', which this spec cannot "
                                           r"represent \(it takes 'default', 'linear', 'yarn', 'llama3'\)"):
        plan("llama/hf-to-gguf", str(folder), no_tokenizer=True)


def test_two_places_holding_one_key_must_agree(tmp_path):
    folder = F.save_model(tmp_path / "two", F.llama3_config())
    config = json.loads((folder / "config.json").read_text())
    config["rope_theta"] = 10000.0  # a stale top-level copy beside rope_parameters
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(MapspecError, match=r"rope_parameters\.rope_theta is 500000\.0 but rope_theta is 10000\.0"):
        plan("llama/hf-to-gguf", str(folder), no_tokenizer=True)


def test_text_config_of_a_multimodal_config(tmp_path):
    cfg = transformers.LlavaConfig(text_config=F.llama3_config(hidden_size=96, num_attention_heads=3).to_dict())
    cfg.save_pretrained(tmp_path)
    assert "text_config" in json.loads((tmp_path / "config.json").read_text())
    spec = with_config(load_spec("llama/hf-to-gguf"), str(tmp_path))
    assert spec.vars["hidden_size"] == 96 and spec.vars["rope_theta"] == 500000.0
    assert spec.vars["head_dim"] == 32 and spec.vars["rope_type"] == "llama3"


def test_an_optional_var_used_without_when_names_the_missing_key(tmp_path):
    from safetensors.numpy import save_file

    save_file({"w": np.arange(4, dtype=np.float32)}, str(tmp_path / "m.safetensors"))
    F.llama_config().save_pretrained(tmp_path)
    spec = tmp_path / "s.yaml"
    spec.write_text("mapspec: 1.1\ntarget:\n  format: gguf\n  metadata:\n"
                    "    x.factor: {type: float32, value: \"{factor}\"}\n"
                    "config:\n  file: [config.json]\n  vars:\n"
                    "    factor: {one_of: [rope_parameters.factor], optional: true}\n"
                    "rules:\n  - {from: w, to: w}\n")
    p = plan(str(spec), str(tmp_path / "m.safetensors"))
    assert not p.ok and "needs factor, but" in str(p.errors[0]) and "rope_parameters.factor" in str(p.errors[0])
    assert "s.yaml:5" in str(p.errors[0])


def test_a_head_dim_meta_layout_cannot_express_is_an_error(tmp_path):
    folder = F.save_model(tmp_path / "nemo", F.mistral_nemo_config(), "MistralForCausalLM")
    with pytest.raises(MapspecError, match=r"config\.json: head_dim is 64, which this spec cannot represent \(it "
                                           r"takes \{dim // n_heads\} = 40\)"):
        plan("llama/hf-to-meta", str(folder / "model.safetensors"))
    plan("llama/hf-to-meta", str(F.save_model(tmp_path / "plain", F.llama_config()) / "model.safetensors")).check()


def test_general_name_and_size_label_as_gguf_py_derives_them(tmp_path):
    gguf = pytest.importorskip("gguf")
    from gguf.metadata import Metadata
    from gguf.utility import size_label

    folder = F.save_model(tmp_path / "tiny-llama", F.llama_config())
    p, meta = planned(folder)
    params = sum(int(np.prod(s.out_meta.shape)) for s in p.steps)
    assert meta["general.name"] == Metadata.load(None, folder, None, params).name == "Tiny Llama"
    assert meta["general.size_label"] == size_label(params, params, 0, 0)
