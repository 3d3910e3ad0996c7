"""HF folder -> llama/hf-to-gguf -> llama/gguf-to-hf -o DIR/ (no --var): the folder loads with transformers'
AutoModelForCausalLM / AutoTokenizer.from_pretrained and gives the original's logits and tokens.

Tiny random Llamas from transformers' own classes and tokenizers trained here (tests/llm_fixtures.py).
Oracles: transformers loading the original folder (tensors, logits, token ids)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

import llm_fixtures as F
from mapspec import cli

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("gguf")
pytest.importorskip("tokenizers")
pytest.importorskip("sentencepiece")

TEXT = "Hello world! The quick brown fox, 12345 llamas; I've been told.  ünïcödé\n\n 3.14159 ??"

CASES = {
    "f32": (F.sentencepiece_tokenizer, dict(vocab_size=330)),
    "bf16": (F.sentencepiece_tokenizer, dict(vocab_size=320, dtype="bfloat16")),
    "f32-tied-bpe": (F.bpe_tokenizer, dict(vocab_size=304, tie_word_embeddings=True, bos_token_id=298,
                                           eos_token_id=299)),
}


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def _gguf(tmp_path, case):
    build, config = CASES[case]
    d = tmp_path / "hf"
    F.llama_model(d, **config)
    build(d)
    g = tmp_path / "m.gguf"
    pre = ["--tokenizer-pre", "llama-bpe"] if build is F.bpe_tokenizer else []
    code, _, err = run("apply", "llama/hf-to-gguf", "-s", d, "-o", g, "-q", *pre)
    assert code == 0, err
    return d, g


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_gguf_to_hf_folder_loads_in_transformers(case, tmp_path):
    d, g = _gguf(tmp_path, case)
    back = tmp_path / "back"
    code, out, err = run("apply", "llama/gguf-to-hf", "-s", g, "-o", f"{back}/")  # no --var
    assert code == 0, err
    assert "beside it: " in out and "config.json" in out and "tokenizer.json" in out

    theirs = transformers.AutoModelForCausalLM.from_pretrained(d).eval()
    ours = transformers.AutoModelForCausalLM.from_pretrained(back).eval()
    assert ours.dtype == theirs.dtype
    assert ours.config.tie_word_embeddings == theirs.config.tie_word_embeddings
    for k, v in theirs.config.to_dict().items():
        if k not in ("transformers_version", "_name_or_path", "architectures", "dtype", "torch_dtype"):
            assert ours.config.to_dict().get(k) == v, k
    sd_theirs, sd_ours = theirs.state_dict(), ours.state_dict()
    assert sorted(sd_theirs) == sorted(sd_ours)
    for k, v in sd_theirs.items():
        assert torch.equal(v, sd_ours[k]), k  # bit-identical (float types)

    tok_theirs = transformers.AutoTokenizer.from_pretrained(d)
    tok_ours = transformers.AutoTokenizer.from_pretrained(back)
    ids = tok_theirs.encode(TEXT)
    assert tok_ours.encode(TEXT) == ids
    assert tok_ours.decode(ids) == tok_theirs.decode(ids)
    x = torch.tensor([ids])
    with torch.no_grad():
        assert torch.equal(ours(x).logits, theirs(x).logits)
    gen = json.loads((back / "generation_config.json").read_text())
    assert (gen["bos_token_id"], gen["eos_token_id"]) == (theirs.config.bos_token_id, theirs.config.eos_token_id)


def test_companion_files_need_force(tmp_path):
    _, g = _gguf(tmp_path, "f32")
    back = tmp_path / "back"
    back.mkdir()
    (back / "config.json").write_text("{}")
    code, _, err = run("apply", "llama/gguf-to-hf", "-s", g, "-o", f"{back}/")
    assert code == 1 and "config.json" in err and "--force" in err and "Traceback" not in err
    assert sorted(p.name for p in back.iterdir()) == ["config.json"]  # nothing else written
    assert (back / "config.json").read_text() == "{}"
    code, _, err = run("apply", "llama/gguf-to-hf", "-s", g, "-o", f"{back}/", "--force", "--report",
                       tmp_path / "r.json")
    assert code == 0, err
    assert json.loads((back / "config.json").read_text())["model_type"] == "llama"
    written = json.loads((tmp_path / "r.json").read_text())["companions"]
    assert sorted(written) == sorted(str(p) for p in back.iterdir() if not p.name.startswith("model"))


def test_single_file_output_gets_no_companions(tmp_path):
    _, g = _gguf(tmp_path, "f32")
    (tmp_path / "out").mkdir()
    code, out, err = run("apply", "llama/gguf-to-hf", "-s", g, "-o", tmp_path / "out" / "model.safetensors")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.safetensors"]


def test_missing_metadata_key_is_named(tmp_path):
    """A GGUF without llama.attention.head_count: one error naming the key, no output."""
    import gguf

    _, g = _gguf(tmp_path, "f32")
    r = gguf.GGUFReader(str(g))
    bad = tmp_path / "bad.gguf"
    w = gguf.GGUFWriter(str(bad), "llama")
    for name in ("llama.block_count", "llama.embedding_length", "llama.feed_forward_length",
                 "llama.context_length", "llama.attention.head_count_kv", "llama.rope.dimension_count"):
        w.add_uint32(name, int(r.fields[name].parts[-1][0]))
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    for t in r.tensors:
        w.add_tensor(t.name, np.asarray(t.data).reshape(tuple(reversed([int(n) for n in t.shape]))))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    code, _, err = run("apply", "llama/gguf-to-hf", "-s", bad, "-o", tmp_path / "x" / "")
    assert code == 1 and "llama.attention.head_count" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("outtype", [None, "bf16", "auto"])
def test_gguf_to_hf_outtype_gives_the_models_dtype_back(tmp_path, outtype):
    """A bf16 model's GGUF holds F32 norms: --outtype bf16 (or auto, the matrices' dtype) gives back the very
    file transformers saved; without it the norms stay float32 (what the GGUF holds), the same values."""
    from safetensors import safe_open

    d, g = _gguf(tmp_path, "bf16")
    back = tmp_path / "back.safetensors"
    code, _, err = run("apply", "llama/gguf-to-hf", "-s", g, "-o", back, *(["--outtype", outtype] if outtype else []))
    assert code == 0, err
    with safe_open(d / "model.safetensors", "pt") as a, safe_open(back, "pt") as b:
        assert sorted(a.keys()) == sorted(b.keys())
        for k in a.keys():
            x, y = a.get_tensor(k), b.get_tensor(k)
            if outtype is None and k.endswith("norm.weight"):
                assert y.dtype == torch.float32 and torch.equal(y.to(torch.bfloat16), x), k
            else:
                assert y.dtype == torch.bfloat16 and torch.equal(x, y), k


def test_outtype_of_a_gguf_type_for_an_hf_output_is_refused(tmp_path):
    _, g = _gguf(tmp_path, "f32")
    code, _, err = run("apply", "llama/gguf-to-hf", "-s", g, "-o", tmp_path / "x.safetensors", "--outtype", "q8_0")
    assert code == 1 and "--outtype q8_0 is a GGUF type" in err and not (tmp_path / "x.safetensors").exists()


@pytest.mark.slow
@pytest.mark.parametrize("rope", [{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
                                  {"rope_type": "linear", "factor": 2.0}])
def test_rope_scaling_the_config_cannot_carry_is_refused_for_a_folder(tmp_path, rope):
    """llama.cpp's converter writes Llama 3 rope scaling as rope_freqs.weight and linear scaling as
    llama.rope.scaling.*; a folder whose config.json lacks them would compute another model."""
    import llamacpp_util as L

    d = tmp_path / "hf"
    F.llama_model(d, vocab_size=330, rope_parameters={"rope_theta": 10000.0, **rope})
    F.sentencepiece_tokenizer(d)
    g = tmp_path / "m.gguf"
    L.convert(d, g, "--outtype", "f32")
    code, _, err = run("apply", "llama/gguf-to-hf", "-s", g, "-o", f"{tmp_path / 'back'}/")
    assert code == 1 and "rope scaling" in err and "Traceback" not in err, err
    assert not (tmp_path / "back").exists()


def test_a_gguf_without_tokenizer_needs_no_tokenizer_for_a_folder(tmp_path):
    d = tmp_path / "hf"
    F.llama_model(d, vocab_size=330)
    g = tmp_path / "m.gguf"
    code, _, err = run("apply", "llama/hf-to-gguf", "-s", d, "-o", g, "-q", "--no-tokenizer")
    assert code == 0, err
    code, _, err = run("apply", "llama/gguf-to-hf", "-s", g, "-o", f"{tmp_path / 'back'}/")
    assert code == 1 and "holds no tokenizer" in err and "--no-tokenizer" in err
    assert not (tmp_path / "back").exists()
    code, _, err = run("apply", "llama/gguf-to-hf", "-s", g, "-o", f"{tmp_path / 'back'}/", "--no-tokenizer")
    assert code == 0 and "no tokenizer files written" in err, err
    assert sorted(p.name for p in (tmp_path / "back").iterdir()) == [
        "config.json", "generation_config.json", "model-00001-of-00001.safetensors", "model.safetensors.index.json"]
    cfg = json.loads((tmp_path / "back" / "config.json").read_text())
    assert cfg["bos_token_id"] is None and cfg["eos_token_id"] is None  # not in the file: null, never a default
    transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back")


def test_vars_file_is_refused_for_vars_from_the_gguf(tmp_path):
    d, g = _gguf(tmp_path, "f32")
    code, _, err = run("apply", "llama/gguf-to-hf", "-s", g, "-o", tmp_path / "x.safetensors", "--vars-file",
                       d / "config.json")
    assert code == 1 and "own metadata" in err and "--var" in err and "Traceback" not in err
