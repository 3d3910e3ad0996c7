"""Shared proof for the shipped HF <-> GGUF family specs (tests/specs/test_zoo_<family>.py): a tiny random
model from transformers' own classes (random weights and random norms) with a tokenizer from llm_fixtures,
and the three checks each family passes: real llama.cpp runs our GGUF with transformers' logits, our GGUF
equals llama.cpp's own converter output key for key and tensor for tensor, and HF -> GGUF -> HF gives the
checkpoint back."""

from __future__ import annotations

import io

import numpy as np

import llamacpp_util as L
import llm_fixtures as F
from mapspec import cli
from mapspec.formats import open_checkpoint

TEXT = "Hello world! The quick brown fox, 12345 llamas; I've been told."
# what the converter writes for its --outtype (f32 here), not from the model
RUN_KEYS = ("GGUF.", "general.file_type", "general.quantization_version")


def build(folder, cls: str, config: dict, norm_center: float = 0.0, dtype: str = "float32", seed: int = 0,
          tokenizer=F.sentencepiece_tokenizer):
    """``transformers.<cls>`` from its own config class with ``config``, every weight random (norms
    ``norm_center`` + noise: 0 for Gemma-style 1 + w norms), saved in ``dtype`` with a tokenizer of
    config["vocab_size"] tokens; returns the model in float32 (the weights as saved)."""
    import torch
    import transformers

    model_cls = getattr(transformers, cls)
    torch.manual_seed(seed)
    model = model_cls(model_cls.config_class(**config)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(norm_center + 0.2 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.2)
    model = model.to(getattr(torch, dtype))
    model.save_pretrained(folder)
    tokenizer(folder, vocab_size=config["vocab_size"] if "vocab_size" in config else config["text_config"]["vocab_size"])
    return model.float()


def apply(spec: str, src, out, *args) -> str:
    """mapspec apply; asserts success, returns stderr."""
    err = io.StringIO()
    code = cli.run(["apply", spec, "-s", str(src), "-o", str(out), "-q", *map(str, args)], stdout=io.StringIO(),
                   stderr=err)
    assert code == 0, err.getvalue()
    return err.getvalue()


def llama_cpp_logits(path, ids, text: bool = True) -> np.ndarray:
    """llama.cpp's logits for ``ids`` from the GGUF at ``path`` (F32 KV cache), after checking that it tokenizes
    TEXT to ``ids`` (``text``; skips without llama-cpp-python)."""
    llama_cpp = L.llama_cpp()
    llm = llama_cpp.Llama(model_path=str(path), logits_all=True, n_ctx=64, verbose=False, type_k=0, type_v=0)
    try:
        assert not text or L.tokenize(llm, TEXT) == ids
        return L.logits(llm, ids)
    finally:
        llm.close()


def check_logits(model, folder, gguf_path, atol: float = 1e-4) -> None:
    """llama.cpp's logits on our GGUF equal transformers' on the same tokens."""
    import torch
    import transformers

    ids = transformers.AutoTokenizer.from_pretrained(folder).encode(TEXT)
    theirs = llama_cpp_logits(gguf_path, ids)
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].numpy()
    assert theirs.shape == ref.shape
    err = np.abs(theirs - ref).max()
    assert err <= atol * max(1.0, np.abs(ref).max()), err


def tensors(path) -> dict:
    """{name: (ggml type name, shape, values)} of a GGUF, read by gguf-py."""
    import gguf

    return {t.name: (t.tensor_type.name, tuple(int(s) for s in t.shape), np.array(t.data))
            for t in gguf.GGUFReader(str(path)).tensors}


def check_same_as_converter(ours, theirs, extra: dict = {}) -> None:
    """Our GGUF equals the converter's: every metadata key (but RUN_KEYS) with its type and value, and every
    tensor's type, shape and bytes.  ``extra``: keys only ours holds, with the reason (checked present)."""
    a = {k: v for k, v in L.fields(ours).items() if not k.startswith(RUN_KEYS)}
    b = {k: v for k, v in L.fields(theirs).items() if not k.startswith(RUN_KEYS)}
    for k in extra:
        assert k in a and k not in b, k
        del a[k]
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k] == b[k], (k, a[k], b[k])
    ta, tb = tensors(ours), tensors(theirs)
    assert sorted(ta) == sorted(tb)
    for k in ta:
        assert ta[k][:2] == tb[k][:2], (k, ta[k][:2], tb[k][:2])
        assert np.array_equal(ta[k][2].view(np.uint8), tb[k][2].view(np.uint8)), k


def state(path) -> dict:
    with open_checkpoint(str(path)) as r:
        return {k: r.read(k) for k in r.names()}


def check_folder(model, folder, gguf_path, spec: str, out, exact: bool = True, tokenizer: bool = True) -> None:
    """``spec`` with ``-o out/``: transformers' from_pretrained loads the folder as the original's class, its
    tokenizer gives the original's ids (``tokenizer``; else the folder must be refused without --no-tokenizer),
    and the model gives the original's logits exactly (``exact``), or else (a family whose GGUF rounds some
    weights) the logits of the original's config with the folder's weights exactly: config.json is right."""
    import torch
    import transformers

    ids = transformers.AutoTokenizer.from_pretrained(folder).encode(TEXT)
    if tokenizer:
        apply(spec, gguf_path, f"{out}/")
        assert transformers.AutoTokenizer.from_pretrained(out).encode(TEXT) == ids
    else:
        err = io.StringIO()
        code = cli.run(["apply", spec, "-s", str(gguf_path), "-o", f"{out}/", "-q"], stdout=io.StringIO(), stderr=err)
        assert code == 1 and "--no-tokenizer" in err.getvalue() and len(err.getvalue().strip().splitlines()) == 1
        apply(spec, gguf_path, f"{out}/", "--no-tokenizer")
    got = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(got) is type(model) and got.dtype == torch.float32
    ref = model
    if not exact:
        ref = type(model)(model.config).eval()
        ref.load_state_dict(got.state_dict())
    with torch.no_grad():
        assert torch.equal(got(torch.tensor([ids])).logits, ref(torch.tensor([ids])).logits)
