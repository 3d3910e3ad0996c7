"""The family specs HF <-> GGUF, one tiny random model per family (tests/zoo_models.py), each picked by
`mapspec apply hf-to-gguf` / `gguf-to-hf` and proved against other people's code:

- llama.cpp's own converter (convert_hf_to_gguf.py) on the same folder writes the same tensors (names, types,
  values) and the same metadata, key for key (but the output type's general.file_type and
  quantization_version);
- real llama.cpp (llama-cpp-python) loads our GGUF, tokenizes as the Hugging Face tokenizer and gives
  transformers' logits within float tolerance;
- GGUF -> HF gives back the checkpoint's tensors bit for bit (float32 models).
"""

from __future__ import annotations

import io

import numpy as np
import pytest

import llamacpp_util as L
import zoo_models as Z
from mapspec import cli
from mapspec.formats import open_checkpoint

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")
pytest.importorskip("tokenizers")
pytest.importorskip("sentencepiece")

# what the output type decides (the converter's default outtype writes them; mapspec only with --outtype)
OTHERS = ("general.file_type", "general.quantization_version", "GGUF.")
TEXT = "Hello world! The quick brown fox, 12345 llamas; I've been told."


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def tensors(path) -> dict:
    """{name: (ggml type name, array)} of a GGUF file, read by gguf-py."""
    return {t.name: (t.tensor_type.name, np.array(t.data)) for t in gguf.GGUFReader(str(path)).tensors}


@pytest.fixture(scope="module", params=list(Z.FAMILIES))
def converted(request, tmp_path_factory):
    family = request.param
    d = tmp_path_factory.mktemp(family)
    model = Z.build(family, d / "hf")
    f = Z.FAMILIES[family]
    pre = ["--tokenizer-pre", f["pre"]] if f.get("pre") else []
    ours = d / "ours.gguf"
    code, out, err = run("apply", "hf-to-gguf", "-s", d / "hf", "-o", ours, *pre)
    assert code == 0, err
    assert f"the source's architecture picks {f['spec']}/hf-to-gguf" in out
    return family, f, d, model, ours


@pytest.mark.slow
def test_picked_spec_writes_what_llama_cpp_converter_writes(converted):
    family, f, d, model, ours = converted
    if f.get("no_converter"):
        pytest.skip(f["no_converter"])
    theirs = d / "theirs.gguf"
    L.convert(d / "hf", theirs, "--outtype", "f32", pre=(Z.chkhsh(d / "hf"), f["pre"]) if f.get("pre") else ())
    a, b = tensors(ours), tensors(theirs)
    assert sorted(a) == sorted(b)
    for name in b:
        assert a[name][0] == b[name][0], name
        assert a[name][1].shape == b[name][1].shape and np.array_equal(a[name][1], b[name][1]), name
    ma, mb = L.fields(ours), L.fields(theirs)
    assert {k: v for k, v in ma.items() if not k.startswith(OTHERS)} == \
        {k: v for k, v in mb.items() if not k.startswith(OTHERS)}
    assert mb["general.architecture"][1] == f["arch"]


@pytest.mark.slow
def test_llama_cpp_runs_it_with_transformers_logits(converted):
    llama_cpp = L.llama_cpp()
    family, f, d, model, ours = converted
    ids = transformers.AutoTokenizer.from_pretrained(d / "hf").encode(TEXT)
    # the KV cache in F32 (its default F16 alone moves logits by ~1e-3)
    llm = llama_cpp.Llama(model_path=str(ours), logits_all=True, n_ctx=64, verbose=False, type_k=0, type_v=0)
    try:
        assert L.tokenize(llm, TEXT) == ids
        theirs = L.logits(llm, ids)
    finally:
        llm.close()
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].numpy()
    assert theirs.shape == ref.shape
    # rtol: 1e-5, or the family's own where llama.cpp computes differently: its GELU is not transformers'
    # gelu_new to the last bit (~4e-4 relative here; the converter's file, whose tensors are ours, runs the same)
    assert np.abs(theirs - ref).max() <= f.get("rtol", 1e-5) * max(1.0, np.abs(ref).max()), family


@pytest.mark.slow
def test_gguf_to_hf_gives_the_checkpoint_back_bit_for_bit(converted):
    family, f, d, model, ours = converted
    back = d / "back.safetensors"
    code, out, err = run("apply", "gguf-to-hf", "-s", ours, "-o", back)
    assert code == 0, err
    assert f"{f.get('back', f['spec'])}/gguf-to-hf" in out
    src, got = open_checkpoint(str(d / "hf" / "model.safetensors")), open_checkpoint(str(back))
    try:
        assert sorted(got.names()) == sorted(src.names())
        for name in src.names():
            x, y = src.read(name), got.read(name)
            assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), name
    finally:
        src.close(), got.close()


@pytest.mark.parametrize("family", [k for k, f in Z.FAMILIES.items() if "refuse" in f])
def test_what_llama_cpp_cannot_run_is_refused(family, tmp_path):
    """A config llama.cpp cannot run as transformers does (each family's "refuse" entry) stops the conversion in one
    line naming the key, and writes nothing."""
    import json

    f = Z.FAMILIES[family]
    change, var = f["refuse"]
    Z.build(family, tmp_path / "hf")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**cfg, **change}))
    pre = ["--tokenizer-pre", f["pre"]] if f.get("pre") else []
    code, out, err = run("apply", "hf-to-gguf", "-s", tmp_path / "hf", "-o", tmp_path / "x.gguf", *pre)
    assert code == 1 and var in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x.gguf").exists()


@pytest.mark.slow
def test_gguf_to_hf_folder_loads_in_transformers(converted, tmp_path):
    """-o DIR/: config.json, generation_config.json and the tokenizer files beside the weights; transformers'
    from_pretrained loads the model (the original's logits, exactly) and the tokenizer (the original's ids)."""
    family, f, d, model, ours = converted
    if f.get("folder_refused"):
        key = f["folder_refused"]
        code, out, err = run("apply", "gguf-to-hf", "-s", ours, "-o", f"{tmp_path / 'back'}/", "-q")
        assert code == 1 and key in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "back").exists()
        return
    back = tmp_path / "back"
    ids = transformers.AutoTokenizer.from_pretrained(d / "hf").encode(TEXT)
    if f.get("no_gguf_tokenizer"):  # transformers' GGUF tokenizer converter lacks the architecture: refused
        code, out, err = run("apply", "gguf-to-hf", "-s", ours, "-o", f"{back}/", "-q")
        assert code == 1 and "--no-tokenizer" in err and len(err.strip().splitlines()) == 1, err
        assert not back.exists()
        code, out, err = run("apply", "gguf-to-hf", "-s", ours, "-o", f"{back}/", "-q", "--no-tokenizer")
        assert code == 0, err
    else:
        code, out, err = run("apply", "gguf-to-hf", "-s", ours, "-o", f"{back}/", "-q")
        assert code == 0, err
        assert transformers.AutoTokenizer.from_pretrained(back).encode(TEXT) == ids
    got = transformers.AutoModelForCausalLM.from_pretrained(back).eval()
    assert type(got).__name__ == f.get("back_cls", f["cls"]) and got.dtype == torch.float32
    with torch.no_grad():
        assert torch.equal(got(torch.tensor([ids])).logits, model(torch.tensor([ids])).logits), family
