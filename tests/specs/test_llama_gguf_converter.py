"""llama/hf-to-gguf against llama.cpp's own converter (convert_hf_to_gguf.py, run in a subprocess) on tiny
Hugging Face folders written by transformers: every metadata key the converter writes (names, GGUF types,
values) but the tokenizer's (tokenizer.*) and the output type's (general.file_type,
general.quantization_version), and every tensor's bytes (rope_freqs.weight of Llama 3 rope scaling
included).  transformers' GGUF loader reads the new keys back where it reads them.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

import llamacpp_util as L
import llm_fixtures as F
from mapspec import cli

gguf = pytest.importorskip("gguf")
pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")

OTHERS = ("tokenizer.", "general.file_type", "general.quantization_version", "GGUF.")


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def fields(path: Path) -> dict:
    r = gguf.GGUFReader(str(path))
    return {k: ([t.name for t in f.types], f.contents()) for k, f in r.fields.items() if not k.startswith(OTHERS)}


def tensors(path: Path) -> dict:
    r = gguf.GGUFReader(str(path))
    return {t.name: (t.tensor_type.name, list(t.shape), np.asarray(t.data).tobytes()) for t in r.tensors}


VOCAB = 320  # llm_fixtures.sentencepiece_tokenizer's
CASES = {
    "plain": lambda: F.llama_config(vocab_size=VOCAB),
    "llama3": lambda: F.llama3_config(vocab_size=VOCAB),
    "nemo": lambda: F.mistral_nemo_config(vocab_size=VOCAB),
    "tied": lambda: F.llama_config(vocab_size=VOCAB, tie_word_embeddings=True),
}
CLASSES = {"nemo": "MistralForCausalLM"}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """{case: (folder, llama.cpp's GGUF, ours)}, built on first use."""
    done = {}

    def get(case):
        if case not in done:
            root = tmp_path_factory.mktemp(case)
            folder = F.save_model(root / f"tiny-{case}", CASES[case](), CLASSES.get(case, "LlamaForCausalLM"))
            F.sentencepiece_tokenizer(folder, VOCAB)
            theirs = root / "theirs.gguf"
            L.convert(folder, theirs, "--outtype", "f32")
            ours = root / "ours.gguf"
            code, _, err = run("apply", "llama/hf-to-gguf", "-s", folder, "-o", ours, "-q")
            assert code == 0, err
            done[case] = (folder, theirs, ours)
        return done[case]
    return get


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_metadata_and_tensors_equal_llama_cpp_converter(converted, case):
    folder, theirs, ours = converted(case)
    a, b = fields(ours), fields(theirs)
    assert sorted(a) == sorted(b)
    for k in b:
        assert a[k] == b[k], k
    ta, tb = tensors(ours), tensors(theirs)
    assert sorted(ta) == sorted(tb)
    for name in tb:
        assert ta[name] == tb[name], name
    if case == "llama3":
        assert "rope_freqs.weight" in tb
        assert b["llama.rope.freq_base"][1] == 500000.0
    if case == "nemo":
        assert b["llama.attention.key_length"][1] == 64 and b["llama.rope.dimension_count"][1] == 64
    if case == "tied":
        assert "output.weight" not in tb


@pytest.mark.slow
def test_transformers_reads_the_new_keys_back(converted):
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    for case, want in (("llama3", {"rope_theta": 500000.0, "head_dim": 16}), ("nemo", {"head_dim": 64})):
        _, _, ours = converted(case)
        cfg = load_gguf_checkpoint(str(ours))["config"]
        for k, v in want.items():
            got = cfg.get(k, (cfg.get("rope_parameters") or {}).get(k))
            assert got == v, (case, k, cfg)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["llama3", "nemo"])
def test_llama_cpp_gives_transformers_logits(converted, case):
    """Real llama.cpp on our file: Llama 3.1's rope scaling (freq_base 500000, rope_freqs.weight) and
    Mistral-Nemo's head_dim give transformers' logits (the file of a 10000 freq_base or a head_dim of
    hidden / heads would not)."""
    torch = pytest.importorskip("torch")
    import transformers

    llama_cpp = L.llama_cpp()
    folder, _, ours = converted(case)
    ids = transformers.AutoTokenizer.from_pretrained(folder).encode("the quick brown fox jumps over the lazy dog")
    llm = llama_cpp.Llama(model_path=str(ours), logits_all=True, n_ctx=64, verbose=False, type_k=0, type_v=0)
    try:
        got = L.logits(llm, ids)
    finally:
        llm.close()
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(got - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max()), np.abs(got - ref).max()
