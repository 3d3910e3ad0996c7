"""Shared steps of the per-family GGUF proofs (tests/specs/test_zoo_*.py): a tiny Hugging Face folder
(transformers' own config and model classes, random weights and norms; llm_fixtures' byte-level BPE
tokenizer), converted by mapspec and by llama.cpp's own converter, compared key for key and tensor for tensor;
real llama.cpp's logits against transformers'; and HF -> GGUF -> HF bit for bit."""

from __future__ import annotations

import hashlib
import io
import json
import os

import numpy as np
import pytest

import llamacpp_util as L
import llm_fixtures as F
from mapspec import cli

TEXT = "Hello world! The quick brown fox, 12345 llamas; I've been told."
VOCAB = 300                                     # llm_fixtures.bpe_tokenizer's: 298 learned + bos + eos
SPECIAL = dict(vocab_size=VOCAB, bos_token_id=VOCAB - 2, eos_token_id=VOCAB - 1)
# written by the output type, not the spec (--outtype): not compared
OTHERS = ("GGUF.", "general.file_type", "general.quantization_version")


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def folder(path, config, cls_name: str):
    """A tiny random model of ``config`` with llm_fixtures' BPE tokenizer, saved by transformers into ``path``."""
    F.save_model(path, config, cls_name)
    F.bpe_tokenizer(path, VOCAB)
    return path


def chkhsh(path) -> str:
    """The tokenizer's pre-tokenizer hash as llama.cpp's converter computes it (sha256 of the ids of the
    table's check text)."""
    from tokenizers import Tokenizer

    table = os.path.join(os.path.dirname(__file__), "..", "mapspec", "frameworks", "gguf", "pretokenizers.json")
    text = json.load(open(table, encoding="utf-8"))["check_text"]
    ids = Tokenizer.from_file(os.path.join(path, "tokenizer.json")).encode(text).ids
    return hashlib.sha256(str(ids).encode()).hexdigest()


def ours(path, spec: str, out):
    """mapspec's GGUF of ``path`` (the tiny BPE tokenizer is in no llama.cpp table: named llama-bpe, whose
    split pattern it uses)."""
    code, _, err = run("apply", spec, "-s", path, "-o", out, "-q", "--tokenizer-pre", "llama-bpe")
    assert code == 0, err
    return out


def theirs(path, out, hparams=None):
    """llama.cpp's converter's GGUF of ``path`` (F32), its pre-tokenizer table told this tokenizer's hash
    (``hparams``: see llamacpp_util.convert)."""
    L.convert(path, out, "--outtype", "f32", pre=(chkhsh(path), "llama-bpe"), hparams=hparams)
    return out


def _read(path):
    import gguf

    r = gguf.GGUFReader(str(path))
    fields = {k: ([t.name for t in f.types], f.contents()) for k, f in r.fields.items() if not k.startswith(OTHERS)}
    tensors = {t.name: (t.tensor_type.name, [int(n) for n in t.shape], np.asarray(t.data).tobytes())
               for t in r.tensors}
    return fields, tensors


def assert_same_gguf(a_path, b_path) -> dict:
    """Every metadata key (name, GGUF types, value; tokenizer included) and every tensor (name, type, shape,
    bytes) of the two files equal; returns the second's metadata."""
    a, ta = _read(a_path)
    b, tb = _read(b_path)
    assert sorted(a) == sorted(b)
    for k in b:
        assert a[k] == b[k], k
    assert sorted(ta) == sorted(tb)
    for name in tb:
        assert ta[name] == tb[name], name
    return b


def llama_cpp_logits(gguf_path, ids) -> np.ndarray:
    """Real llama.cpp's logits for ``ids`` (KV cache in F32), after checking it tokenizes TEXT to ``ids``."""
    llama_cpp = L.llama_cpp()
    llm = llama_cpp.Llama(model_path=str(gguf_path), logits_all=True, n_ctx=64, verbose=False, type_k=0, type_v=0)
    try:
        assert L.tokenize(llm, TEXT) == ids
        return L.logits(llm, ids)
    finally:
        llm.close()


def assert_llama_cpp_gives_transformers_logits(path, gguf_path, rtol: float = 1e-5, adjust=None):
    """``adjust(model)``: makes transformers' model compute as llama.cpp does where the two differ by design
    (each caller says why)."""
    import torch
    import transformers

    ids = transformers.AutoTokenizer.from_pretrained(path).encode(TEXT)
    got = llama_cpp_logits(gguf_path, ids)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    if adjust is not None:
        adjust(model)
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].numpy()
    assert got.shape == ref.shape
    err = np.abs(got - ref).max()
    assert err <= rtol * max(1.0, np.abs(ref).max()), err


def assert_round_trip(path, gguf_path, spec: str, out, *args):
    """``spec`` (GGUF -> HF) gives back the saved model.safetensors bit for bit, name for name."""
    from mapspec.formats import open_checkpoint

    code, _, err = run("apply", spec, "-s", gguf_path, "-o", out, "-q", *args)
    assert code == 0, err
    with open_checkpoint(os.path.join(path, "model.safetensors")) as a, open_checkpoint(out) as b:
        assert sorted(a.names()) == sorted(b.names())
        for k in a.names():
            x, y = a.read(k), b.read(k)
            assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), k


def _module():
    import torch

    return torch.nn.Module


class Fp16Gelu(_module()):
    """ggml's CPU GELU (tanh form) as llama.cpp computes it: the input rounded to float16 and looked up in a
    float16 table of GELU values (inputs beyond +-10 computed directly), ~1e-4 from float32's GELU."""

    def __init__(self, approximate: str = "tanh"):
        super().__init__()
        self.approximate = approximate

    def forward(self, x):
        import torch

        f = torch.nn.functional.gelu
        table = f(x.half().float(), approximate=self.approximate).half().float()
        return torch.where(x.abs() < 10, table, f(x, approximate=self.approximate))
