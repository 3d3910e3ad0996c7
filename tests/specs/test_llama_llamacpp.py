"""llama/hf-to-gguf's output run by real llama.cpp (llama-cpp-python): it loads, tokenizes a text as the
Hugging Face tokenizer does, and its logits equal transformers' on the same tokens (float tolerance).
Tiny random Llama models from transformers' own classes; tokenizers trained here (tests/llm_fixtures.py)."""

from __future__ import annotations

import io

import numpy as np
import pytest

import llamacpp_util as L
import llm_fixtures as F
from mapspec import cli

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
pytest.importorskip("sentencepiece")

TEXT = "Hello world! The quick brown fox, 12345 llamas; I've been told."

# name -> (tokenizer builder, model settings, save settings, logits tolerance)
CASES = {
    "f32-sentencepiece": (F.sentencepiece_tokenizer, dict(vocab_size=330), {}, 1e-5),
    "bf16-sharded-sentencepiece": (F.sentencepiece_tokenizer, dict(vocab_size=320),
                                   dict(dtype="bfloat16", max_shard_size="100KB"), 5e-2),  # see below
    "f32-tied-bpe": (F.bpe_tokenizer, dict(vocab_size=304, tie_word_embeddings=True, bos_token_id=298,
                                           eos_token_id=299), {}, 1e-5),
}


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_llama_cpp_runs_our_gguf(case, tmp_path):
    llama_cpp = L.llama_cpp()
    build, config, save, atol = CASES[case]
    d = tmp_path / "model"
    model = F.llama_model(d, **config, **save)
    build(d)
    if save.get("max_shard_size"):
        assert (d / "model.safetensors.index.json").exists()
    out = tmp_path / "m.gguf"
    pre = ["--tokenizer-pre", "llama-bpe"] if build is F.bpe_tokenizer else []
    code, _, err = run("apply", "llama/hf-to-gguf", "-s", d, "-o", out, "-q", *pre)
    assert code == 0, err

    ids = transformers.AutoTokenizer.from_pretrained(d).encode(TEXT)
    theirs = _run(llama_cpp, out, ids)
    if save.get("dtype") == "bfloat16":
        # llama.cpp multiplies BF16 weights with BF16-rounded activations (~2% from transformers' float32 here):
        # the file llama.cpp's own converter writes from the same folder must give the very same logits
        conv = tmp_path / "converter.gguf"
        L.convert(d, conv, "--outtype", "bf16")
        assert np.array_equal(_run(llama_cpp, conv, ids), theirs)
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].numpy()
    assert theirs.shape == ref.shape
    err = np.abs(theirs - ref).max()
    assert err <= atol * max(1.0, np.abs(ref).max()), (case, err)


def _run(llama_cpp, path, ids) -> np.ndarray:
    """llama.cpp's logits for ``ids`` from the GGUF at ``path``, after checking it tokenizes TEXT to ``ids``."""
    # the KV cache in F32 (its default is F16, which alone moves logits by ~1e-3)
    llm = llama_cpp.Llama(model_path=str(path), logits_all=True, n_ctx=64, verbose=False, type_k=0, type_v=0)
    try:
        assert L.tokenize(llm, TEXT) == ids
        return L.logits(llm, ids)
    finally:
        llm.close()
