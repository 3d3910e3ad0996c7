"""The family picker (mapspec/family.py): `mapspec apply hf-to-gguf` / `gguf-to-hf` apply the shipped spec that
declares the source's architecture; anything else is refused with the supported list, never a near match.
Configs are written by transformers' own config classes (save_pretrained)."""

from __future__ import annotations

import io
import json
import re

import pytest

import llm_fixtures as F
import mapspec
from mapspec import cli
from mapspec.language import family
from mapspec.resources import specs_dir

transformers = pytest.importorskip("transformers")


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("llama")
    F.llama_model(d, vocab_size=64, hidden_size=32, intermediate_size=48, num_attention_heads=4,
                  num_key_value_heads=2)
    return d


def config_dir(tmp_path, cls: str, **kw):
    """A folder holding only the config.json transformers writes for ``cls`` (a config class name)."""
    getattr(transformers, cls)(**kw).save_pretrained(tmp_path)
    return tmp_path


def test_hf_to_gguf_picks_llama_and_writes_what_the_named_spec_writes(llama_dir, tmp_path):
    picked, named = tmp_path / "picked.gguf", tmp_path / "named.gguf"
    code, out, err = run("apply", "hf-to-gguf", "-s", llama_dir, "-o", picked, "--no-tokenizer")
    assert code == 0, err
    assert "llama/hf-to-gguf" in out                      # says which spec it applied
    assert run("apply", "llama/hf-to-gguf", "-s", llama_dir, "-o", named, "--no-tokenizer")[0] == 0
    assert picked.read_bytes() == named.read_bytes()

    back_picked, back_named = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    code, out, err = run("apply", "gguf-to-hf", "-s", picked, "-o", back_picked)
    assert code == 0, err
    assert "llama/gguf-to-hf" in out
    assert run("apply", "llama/gguf-to-hf", "-s", picked, "-o", back_named)[0] == 0
    assert back_picked.read_bytes() == back_named.read_bytes()


def test_python_api_picks_too(llama_dir, tmp_path):
    r = mapspec.apply("hf-to-gguf", str(llama_dir / "model.safetensors"), str(tmp_path / "m.gguf"), no_tokenizer=True)
    assert r.plan.spec.name == "llama-hf-to-gguf"


@pytest.mark.parametrize("cls, arch", [
    ("Qwen2MoeConfig", "Qwen2MoeForCausalLM"),          # a family without a spec
    ("LlamaConfig", "LlamaForSequenceClassification"),   # a near match of a supported name: not used
])
def test_architecture_without_spec_is_refused_with_the_supported_list(tmp_path, cls, arch):
    d = config_dir(tmp_path, cls, architectures=[arch])
    code, out, err = run("apply", "hf-to-gguf", "-s", d, "-o", tmp_path / "x.gguf", "--no-tokenizer")
    assert code == 1 and "Traceback" not in err
    assert f"{d / 'config.json'}: architecture {arch!r} has no shipped hf-to-gguf spec" in err
    assert "LlamaForCausalLM" in err and "(llama/hf-to-gguf)" in err       # the supported ones
    assert f"declare architectures: [{arch}]" in err and "copy the nearest family" in err   # how to add it
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.gguf").exists()


def test_model_type_picks_when_the_config_has_no_architectures(llama_dir, tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "model.safetensors").write_bytes((llama_dir / "model.safetensors").read_bytes())
    cfg = json.loads((llama_dir / "config.json").read_text())
    del cfg["architectures"]
    (d / "config.json").write_text(json.dumps(cfg))
    code, out, err = run("plan", "hf-to-gguf", "-s", d, "--no-tokenizer")
    assert code == 0, err and "llama/hf-to-gguf" in out


def test_model_type_without_spec_and_no_config_are_refused(tmp_path):
    d = config_dir(tmp_path / "a", "Qwen2MoeConfig")
    assert "architectures" not in json.loads((d / "config.json").read_text())
    code, _, err = run("plan", "hf-to-gguf", "-s", d)
    assert code == 1 and "no 'architectures', and model_type 'qwen2_moe' has no shipped hf-to-gguf spec" in err
    (tmp_path / "b").mkdir()
    code, _, err = run("plan", "hf-to-gguf", "-s", tmp_path / "b")
    assert code == 1 and "no config.json beside the checkpoint" in err and "name the spec" in err


def test_architecture_and_model_type_that_disagree_are_refused(tmp_path):
    fams = [f for f in family.families() if f.generic == "hf-to-gguf" and f.model_types]
    other = next(f for f in fams if "LlamaForCausalLM" not in f.architectures)
    d = config_dir(tmp_path, "LlamaConfig", architectures=["LlamaForCausalLM"])
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = other.model_types[0]
    (d / "config.json").write_text(json.dumps(cfg))
    code, _, err = run("plan", "hf-to-gguf", "-s", d)
    assert code == 1 and "disagree" in err and other.spec in err


def test_gguf_to_hf_refuses_an_architecture_without_spec_and_a_non_gguf_source(llama_dir, tmp_path):
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "x.gguf"
    w = gguf.GGUFWriter(str(path), "mamba")
    w.add_tensor("token_embd.weight", __import__("numpy").zeros((4, 4), "float32"))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    code, _, err = run("apply", "gguf-to-hf", "-s", path, "-o", tmp_path / "o.safetensors")
    assert code == 1 and "general.architecture 'mamba' has no shipped gguf-to-hf spec" in err
    assert "general.architecture llama without llama.expert_count (llama/gguf-to-hf)" in err
    assert "general.architecture qwen2 (qwen2/gguf-to-hf)" in err and "gguf_architecture: mamba" in err
    code, _, err = run("apply", "gguf-to-hf", "-s", llama_dir / "model.safetensors", "-o", tmp_path / "o2.safetensors")
    assert code == 1 and "is not one" in err


def test_specs_lists_the_families_and_their_architectures():
    code, out, _ = run("specs")
    assert code == 0
    families = out.split("families:", 1)[1]
    assert re.search(r"hf-to-gguf\s+llama/hf-to-gguf\s+LlamaForCausalLM, MistralForCausalLM, model_type llama", families)
    assert re.search(r"gguf-to-hf\s+llama/gguf-to-hf\s+general.architecture llama", families)


def test_shipped_declarations_are_unique_and_real_names():
    """Each architecture picks one spec per generic name; each name is a transformers class (and a model type it
    knows) and each GGUF architecture one gguf-py knows."""
    gguf = pytest.importorskip("gguf")
    seen = {}
    for f in family.families():
        for key in f.architectures + tuple(f"model_type {m}" for m in f.model_types) + (
                (f"gguf {f.gguf_architecture} {f.gguf_has} {f.gguf_lacks}",) if f.gguf_architecture else ()):
            assert (f.generic, key) not in seen, (f.spec, seen[(f.generic, key)], key)
            seen[(f.generic, key)] = f.spec
        for a in f.architectures:
            assert hasattr(transformers, a), (f.spec, a)
        for m in f.model_types:
            assert m in transformers.CONFIG_MAPPING, (f.spec, m)
        if f.gguf_architecture:
            assert f.gguf_architecture in gguf.MODEL_ARCH_NAMES.values(), f.spec
    assert {"hf-to-gguf", "gguf-to-hf"} <= {f.generic for f in family.families()}


def test_picker_fields_are_checked(tmp_path):
    base = (specs_dir() / "llama" / "gguf-to-hf.yaml").read_text()
    cases = {
        "hf.yaml": (base.replace("source: {format: gguf}", "source: {}"), "gguf_architecture: only a spec whose "
                                                                         "source is GGUF"),
        "v10.yaml": (base.replace("mapspec: 1.1", "mapspec: 1").replace("rope_permute", "rope_permute"),
                     "'gguf_architecture' is spec language 1.1"),
        "arch.yaml": (base.replace("gguf_architecture: llama", "architectures: [LlamaForCausalLM]")
                      .replace("gguf_lacks: [llama.expert_count]", ""),
                      "architectures: a spec reading GGUF is picked by general.architecture"),
        "lacks.yaml": (base.replace("gguf_architecture: llama", ""),
                       "gguf_lacks: declare gguf_architecture: NAME too"),
    }
    for name, (text, message) in cases.items():
        p = tmp_path / name
        p.write_text(text)
        line = next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith(("gguf_architecture",
                                                                                    "architectures", "gguf_lacks")))
        code, out, err = run("validate", p)
        assert code == 1 and message in out + err, (name, out, err)
        assert f"{p}:{line}:" in out + err, (name, out, err)
