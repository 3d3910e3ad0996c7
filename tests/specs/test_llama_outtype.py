"""llama/hf-to-gguf --outtype X against llama.cpp's own convert_hf_to_gguf.py --outtype X on a tiny random
Llama (transformers' classes, random weights and norms, a SentencePiece tokenizer): every tensor's ggml type
and bytes, and general.file_type, equal.  q4_0/q4_1/q5_0/q5_1 (which the converter does not offer): the
converter's q8_0 choice of types with the type swapped, data = gguf-py's quantize of the converter's f32
tensors."""

from __future__ import annotations

import io

import numpy as np
import pytest

from mapspec import cli

import llamacpp_util
import llm_fixtures

gguf = pytest.importorskip("gguf")
pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")

pytestmark = pytest.mark.slow
Q = gguf.GGMLQuantizationType
VOCAB = 320
FFN = 80  # rows of 80 values: not whole blocks of 32, so ffn_down falls back to F16 (the converter's rule)


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def tensors(path) -> dict:
    """name -> (ggml type name, logical shape, bytes), read by gguf-py."""
    r = gguf.GGUFReader(str(path))
    return {t.name: (t.tensor_type.name, tuple(int(n) for n in t.shape), t.data.tobytes()) for t in r.tensors}


def file_type(path) -> int:
    return int(gguf.GGUFReader(str(path)).fields["general.file_type"].contents())


def _model(tmp_path_factory, dtype: str):
    d = tmp_path_factory.mktemp(f"llama-{dtype}")
    llm_fixtures.sentencepiece_tokenizer(d, vocab_size=VOCAB)
    llm_fixtures.llama_model(d, VOCAB, dtype=dtype, intermediate_size=FFN)
    return d


@pytest.fixture(scope="module")
def f32_model(tmp_path_factory):
    llamacpp_util.converter_src()  # skips without llama.cpp's converter
    return _model(tmp_path_factory, "float32")


@pytest.fixture(scope="module")
def converted(f32_model, tmp_path_factory):
    """outtype -> llama.cpp's converter output for the float32 model (run once per outtype)."""
    cache: dict = {}

    def get(outtype: str):
        if outtype not in cache:
            out = tmp_path_factory.mktemp("ref") / f"ref-{outtype}.gguf"
            llamacpp_util.convert(f32_model, out, "--outtype", outtype)
            cache[outtype] = out
        return cache[outtype]
    return get


def ours(model, tmp_path, outtype: str, *extra):
    out = tmp_path / f"ours-{outtype}.gguf"
    code, _, err = run("apply", "llama/hf-to-gguf", "--source", model / "model.safetensors", "-o", out,
                       "--outtype", outtype, "-q", *extra)
    assert code == 0, err
    return out


@pytest.mark.parametrize("outtype", ["f32", "f16", "bf16", "q8_0", "auto"])
def test_tensors_and_file_type_equal_the_converters(outtype, f32_model, converted, tmp_path):
    ref = converted(outtype)
    mine = ours(f32_model, tmp_path, outtype)
    want, got = tensors(ref), tensors(mine)
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name][:2] == want[name][:2], name
        assert got[name][2] == want[name][2], name
    assert file_type(mine) == file_type(ref)


def test_q8_0_falls_back_to_f16_where_rows_are_not_whole_blocks(converted):
    types = {n: t for n, (t, _, _) in tensors(converted("q8_0")).items()}
    assert types["blk.0.ffn_down.weight"] == "F16" and types["blk.0.ffn_up.weight"] == "Q8_0"


def test_parallel_and_serial_writes_are_identical(f32_model, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = ours(f32_model, tmp_path / "a", "q8_0", "--jobs", "1")
    b = ours(f32_model, tmp_path / "b", "q8_0", "--jobs", "4")
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("outtype", ["q4_0", "q4_1", "q5_0", "q5_1"])
def test_legacy_quants_follow_the_converters_q8_0_choice(outtype, f32_model, converted, tmp_path):
    qtype = outtype.upper()
    f32 = gguf.GGUFReader(str(converted("f32")))
    q8 = tensors(converted("q8_0"))
    got = tensors(ours(f32_model, tmp_path, outtype))
    assert sorted(got) == sorted(q8)
    for t in f32.tensors:
        want_type = {"Q8_0": qtype}.get(q8[t.name][0], q8[t.name][0])
        data = gguf.quants.quantize(np.asarray(t.data), getattr(Q, want_type))
        assert got[t.name][0] == want_type, t.name
        assert got[t.name][2] == np.ascontiguousarray(data).tobytes(), t.name
    assert file_type(tmp_path / f"ours-{outtype}.gguf") == int(getattr(gguf.LlamaFileType, f"MOSTLY_{qtype}"))


def test_auto_on_a_bfloat16_model_is_bf16_like_the_converter(tmp_path_factory, tmp_path):
    llamacpp_util.converter_src()
    model = _model(tmp_path_factory, "bfloat16")
    ref = tmp_path / "ref.gguf"
    llamacpp_util.convert(model, ref, "--outtype", "auto")
    mine = ours(model, tmp_path, "auto")
    assert tensors(mine) == tensors(ref)
    assert file_type(mine) == file_type(ref) == int(gguf.LlamaFileType.MOSTLY_BF16)
