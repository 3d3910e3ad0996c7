"""GGUF tokenizer metadata (mapspec/formats/gguf_vocab.py) through llama/hf-to-gguf, against llama.cpp's own
converter on the same folder: every tokenizer.* key equal, value and GGUF type."""

from __future__ import annotations

import io
import re
import shutil

import pytest

import llamacpp_util as L
import llm_fixtures as F
from mapspec import cli

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
pytest.importorskip("sentencepiece")
gguf = pytest.importorskip("gguf")


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def spm_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("spm")
    F.llama_model(d, vocab_size=330)  # 10 more rows than pieces: [PADi] tokens
    F.sentencepiece_tokenizer(d)
    return d


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bpe")
    F.llama_model(d, vocab_size=304, tie_word_embeddings=True, bos_token_id=298, eos_token_id=299)
    F.bpe_tokenizer(d)
    F.add_tokens(d)  # <pad> (special, 300) and <extra> (user-defined, 301)
    return d


def _chkhsh(err: str) -> str:
    m = re.search(r"chkhsh ([0-9a-f]{64})", err)
    assert m, err
    return m.group(1)


@pytest.mark.slow
def test_sentencepiece_tokenizer_equals_llama_cpp_converter(spm_dir, tmp_path):
    ours, theirs = tmp_path / "ours.gguf", tmp_path / "theirs.gguf"
    code, _, err = run("apply", "llama/hf-to-gguf", "-s", spm_dir, "-o", ours, "-q")
    assert code == 0, err
    L.convert(spm_dir, theirs, "--vocab-only")
    a, b = L.fields(ours, "tokenizer."), L.fields(theirs, "tokenizer.")
    assert a == b
    assert b["tokenizer.ggml.model"][1] == "llama" and len(b["tokenizer.ggml.tokens"][1]) == 330
    assert b["tokenizer.ggml.tokens"][1][-1] == "[PAD329]" and "tokenizer.chat_template" in b


@pytest.mark.slow
def test_bpe_tokenizer_equals_llama_cpp_converter(bpe_dir, tmp_path):
    ours, theirs = tmp_path / "ours.gguf", tmp_path / "theirs.gguf"
    # a tiny trained BPE is in no table: refused, naming the file and its hash, until the user names it
    code, _, err = run("apply", "llama/hf-to-gguf", "-s", bpe_dir, "-o", ours, "-q")
    assert code == 1 and "tokenizer.json" in err and "--tokenizer-pre" in err and "Traceback" not in err
    assert not ours.exists()
    chkhsh = _chkhsh(err)
    code, _, err = run("apply", "llama/hf-to-gguf", "-s", bpe_dir, "-o", ours, "-q", "--tokenizer-pre", "llama-bpe")
    assert code == 0, err
    # llama.cpp's converter, its table told the same (it computes the hash itself: a wrong hash would fail here)
    L.convert(bpe_dir, theirs, "--vocab-only", pre=(chkhsh, "llama-bpe"))
    a, b = L.fields(ours, "tokenizer."), L.fields(theirs, "tokenizer.")
    assert a == b
    assert b["tokenizer.ggml.model"][1] == "gpt2" and b["tokenizer.ggml.pre"][1] == "llama-bpe"
    assert len(b["tokenizer.ggml.tokens"][1]) == 304 and b["tokenizer.ggml.merges"][1]
    assert b["tokenizer.ggml.tokens"][1][300:302] == ["<pad>", "<extra>"]
    assert b["tokenizer.ggml.token_type"][1][300:303] == [3, 4, 5] and b["tokenizer.ggml.padding_token_id"][1] == 300


def test_known_pre_tokenizer_hash_is_found(bpe_dir, tmp_path, monkeypatch):
    """The table is looked up by the hash of the check text's ids (a table listing this tokenizer finds it)."""
    from mapspec.formats import gguf_vocab

    code, _, err = run("plan", "llama/hf-to-gguf", "-s", bpe_dir)
    chkhsh = _chkhsh(err)
    table = gguf_vocab._json(gguf_vocab.TABLE_FILE)
    table["chkhsh"][chkhsh] = "smollm"
    monkeypatch.setattr(gguf_vocab, "_json", lambda p, real=gguf_vocab._json: table if p == gguf_vocab.TABLE_FILE
                        else real(p))
    meta = gguf_vocab.tokenizer_metadata(str(bpe_dir), 304)
    assert meta["tokenizer.ggml.pre"] == ("string", "smollm")


def test_no_tokenizer_is_refused_unless_asked(spm_dir, tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(spm_dir / f, d / f)
    out = tmp_path / "m.gguf"
    code, _, err = run("apply", "llama/hf-to-gguf", "-s", d / "model.safetensors", "-o", out)
    assert code == 1 and "no tokenizer" in err and "--no-tokenizer" in err and "Traceback" not in err
    assert not out.exists()
    code, text, err = run("apply", "llama/hf-to-gguf", "-s", d / "model.safetensors", "-o", out, "--no-tokenizer")
    assert code == 0, err
    assert not L.fields(out, "tokenizer.")
    # the Python API takes the same switch
    import mapspec

    mapspec.apply("llama/hf-to-gguf", str(d / "model.safetensors"), str(tmp_path / "api.gguf"), no_tokenizer=True)
    with pytest.raises(mapspec.MapspecError, match="no tokenizer"):
        mapspec.apply("llama/hf-to-gguf", str(d / "model.safetensors"), str(tmp_path / "api2.gguf"))


@pytest.mark.parametrize("name, content", [("tokenizer.model", b"not a sentencepiece model"),
                                           ("tokenizer.json", b"{not json"),
                                           ("tokenizer_config.json", b"[1, 2]")])
def test_unreadable_tokenizer_file_is_named(spm_dir, tmp_path, name, content):
    d = tmp_path / "model"
    shutil.copytree(spm_dir, d)
    if name == "tokenizer.json":
        (d / "tokenizer.model").unlink()
    (d / name).write_bytes(content)
    code, _, err = run("apply", "llama/hf-to-gguf", "-s", d, "-o", tmp_path / "m.gguf")
    assert code == 1 and name in err and "Traceback" not in err, err


def test_sentencepiece_style_tokenizer_json_without_model_is_refused(spm_dir, tmp_path):
    """transformers 5 writes a byte-fallback BPE tokenizer.json and no tokenizer.model: llama.cpp's converter
    would give every piece the same score; refused, saying which file to add."""
    d = tmp_path / "model"
    shutil.copytree(spm_dir, d)
    (d / "tokenizer.model").unlink()
    code, _, err = run("apply", "llama/hf-to-gguf", "-s", d, "-o", tmp_path / "m.gguf")
    assert code == 1 and "tokenizer.model" in err and "byte_fallback" in err, err


def test_tokenizer_larger_than_the_model_is_refused(spm_dir, tmp_path):
    code, _, err = run("apply", "llama/hf-to-gguf", "-s", spm_dir, "-o", tmp_path / "m.gguf",
                       "--var", "vocab_size=300")
    assert code == 1 and "tokenizer.model" in err and "300" in err, err


def test_tokenizer_only_for_a_gguf_target(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("mapspec: 1.1\nsource: {tokenizer: {from: source, vocab_size: 3}}\ntarget: {format: gguf}\n"
                    "rules: []\n")
    code, _, err = run("validate", spec)
    assert code == 1 and "source.tokenizer" in err, err
    spec.write_text("mapspec: 1.1\ntarget: {format: gguf, tokenizer: {from: elsewhere, vocab_size: 3}}\nrules: []\n")
    code, _, err = run("validate", spec)
    assert code == 1 and "tokenizer" in err, err


def test_tokenizer_pre_is_checked(spm_dir, bpe_dir, tmp_path):
    code, _, err = run("plan", "llama/hf-to-gguf", "-s", spm_dir, "--tokenizer-pre", "llama-bpe")
    assert code == 1 and "SentencePiece" in err, err
    code, _, err = run("plan", "llama/hf-to-gguf", "-s", bpe_dir, "--tokenizer-pre", "no-such-pre")
    assert code == 1 and "'no-such-pre'" in err and "llama-bpe" in err, err


@pytest.mark.slow
def test_sentencepiece_added_tokens_only_in_tokenizer_json_are_kept(spm_dir, tmp_path):
    """transformers 5 keeps added tokens only in tokenizer.json: llama.cpp's converter reads them from
    tokenizer_config.json and so writes [PAD320]/[PAD321] there; mapspec keeps them (the rest is equal), and
    llama.cpp then finds it in a text as the Hugging Face tokenizer does."""
    d = tmp_path / "model"
    shutil.copytree(spm_dir, d)
    F.add_tokens(d)
    ours, theirs = tmp_path / "ours.gguf", tmp_path / "theirs.gguf"
    code, _, err = run("apply", "llama/hf-to-gguf", "-s", d, "-o", ours, "-q")
    assert code == 0, err
    L.convert(d, theirs, "--vocab-only")
    a, b = L.fields(ours, "tokenizer."), L.fields(theirs, "tokenizer.")
    lists = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type")
    assert {k: v for k, v in a.items() if k not in lists} == {k: v for k, v in b.items() if k not in lists}
    assert b["tokenizer.ggml.tokens"][1][320:322] == ["[PAD320]", "[PAD321]"]  # the converter loses them
    assert a["tokenizer.ggml.tokens"][1][320:322] == ["<pad>", "<extra>"]
    assert a["tokenizer.ggml.token_type"][1][320:322] == [3, 4]
    assert a["tokenizer.ggml.scores"][1][320:322] == [-1000.0] * 2
    for k in lists:
        assert a[k][1][:320] == b[k][1][:320] and a[k][1][322:] == b[k][1][322:], k
    llama_cpp = L.llama_cpp()
    import transformers

    # (a text ending on the token: after one, llama.cpp's SentencePiece adds a space prefix, as transformers'
    # legacy Llama tokenizer did and transformers 5's does not)
    text = "Hello <extra>"
    want = transformers.AutoTokenizer.from_pretrained(d).encode(text)
    assert want[-1] == 321
    for path, same in ((ours, True), (theirs, False)):
        llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        try:
            assert (L.tokenize(llm, text) == want) == same, path
        finally:
            llm.close()


@pytest.mark.slow
@pytest.mark.parametrize("vocab_size, build, key, value", [
    (32016, F.sentencepiece_tokenizer, "tokenizer.ggml.eot_token_id", 32010),  # CodeLlama's vocabulary size
    (49152, F.bpe_tokenizer, "tokenizer.ggml.add_bos_token", False)])  # granite-code's
def test_llama_vocabulary_size_quirks_equal_the_converter(tmp_path, vocab_size, build, key, value):
    d = tmp_path / "model"
    F.llama_model(d, vocab_size=vocab_size, hidden_size=16, intermediate_size=16, num_hidden_layers=1,
                  num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
    build(d)
    ours, theirs = tmp_path / "ours.gguf", tmp_path / "theirs.gguf"
    pre = ["--tokenizer-pre", "llama-bpe"] if build is F.bpe_tokenizer else []
    code, _, err = run("apply", "llama/hf-to-gguf", "-s", d, "-o", ours, "-q", *pre)
    assert code == 0, err
    chkhsh = ()
    if pre:
        code, _, err = run("plan", "llama/hf-to-gguf", "-s", d)
        chkhsh = (_chkhsh(err), "llama-bpe")
    L.convert(d, theirs, "--vocab-only", pre=chkhsh)
    a, b = L.fields(ours, "tokenizer."), L.fields(theirs, "tokenizer.")
    assert a == b and b[key][1] == value


def test_a_gguf_template_keeps_its_own_tokenizer(spm_dir, bpe_dir, tmp_path):
    """--template GGUF with a tokenizer: the template's is kept whole (never mixed with the source folder's)."""
    tmpl, out = tmp_path / "t.gguf", tmp_path / "m.gguf"
    assert run("apply", "llama/hf-to-gguf", "-s", spm_dir, "-o", tmpl, "-q")[0] == 0
    d = tmp_path / "model"
    shutil.copytree(spm_dir, d)
    for f in ("tokenizer.model", "tokenizer.json"):
        (d / f).unlink()
    shutil.copy(bpe_dir / "tokenizer.json", d / "tokenizer.json")  # another tokenizer beside the weights
    code, text, err = run("apply", "llama/hf-to-gguf", "-s", d, "-o", out, "-t", tmpl)
    assert code == 0, err
    assert "the tokenizer is the template's" in err
    assert L.fields(out, "tokenizer.") == L.fields(tmpl, "tokenizer.")
