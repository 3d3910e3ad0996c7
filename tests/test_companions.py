"""Spec validation of target.companions and config: {from: source_metadata} (mapspec/companions.py,
mapspec/language/config.py); the end-to-end proofs are in tests/specs/test_llama_gguf_folder.py and
tests/specs/test_hf_companions.py."""

from __future__ import annotations

import pytest

from mapspec.errors import MapspecError
from mapspec.language.load import load_spec

HEAD = "mapspec: 1.1\nname: t\nrules:\n  - {from: a, to: b}\n"


def spec(tmp_path, text):
    p = tmp_path / "s.yaml"
    p.write_text(HEAD + text)
    return load_spec(str(p))


def test_companions_validate(tmp_path):
    s = spec(tmp_path, "target:\n  companions:\n    copy: [config.json]\n    json: {params.json: {dim: '{d}'}}\n"
                       "    tokenizer: gguf\nvars: {d: 4}\n")
    assert s.target.companions["copy"] == ["config.json"]


@pytest.mark.parametrize("text, word", [
    ("source:\n  companions: {copy: [config.json]}\n", "only a target"),
    ("target:\n  companions: {tokenizer: sentencepiece}\n", "'sentencepiece' is not one of gguf"),
    ("target:\n  companions: {copy: [../config.json]}\n", "../config.json"),
    ("target:\n  companions: {pick: [x]}\n", "unknown key 'pick'"),
    ("config: {from: config_json, vars: {a: b}}\n", "not one of source_metadata"),
    ("config: {vars: {a: b}}\n", "needs the key 'file'"),
])
def test_bad_companions_and_config_sources_are_refused(tmp_path, text, word):
    with pytest.raises(MapspecError) as e:
        spec(tmp_path, text)
    assert word in str(e.value)


def test_config_from_source_metadata_validates(tmp_path):
    s = spec(tmp_path, "config: {from: source_metadata, vars: {heads: llama.attention.head_count}}\n")
    assert s.config["from"] == "source_metadata"


def test_refuse_entries_validate(tmp_path):
    s = spec(tmp_path, "target:\n  companions:\n    refuse: [{source_tensor: rope_freqs.weight, why: scaling}]\n")
    assert s.target.companions["refuse"][0]["why"] == "scaling"
    with pytest.raises(MapspecError):
        spec(tmp_path, "target:\n  companions:\n    refuse: [{source_tensor: x}]\n")  # no why


def test_meta_ffn_gives_the_width_by_metas_formula():
    from mapspec.companions import meta_ffn, meta_ffn_size

    assert meta_ffn(4096, 11008) == {"multiple_of": 256, "ffn_dim_multiplier": None}  # Llama 2 7B's params.json
    for dim, hidden in [(4096, 14336), (64, 96), (8192, 28672), (48, 24)]:
        p = meta_ffn(dim, hidden)
        assert meta_ffn_size(dim, p["multiple_of"], p["ffn_dim_multiplier"]) == hidden


@pytest.mark.parametrize("part,whole", [(8, 32), (16, 64), (20, 80), (24, 80), (32, 128), (3, 10), (7, 96)])
def test_ratio_gives_the_part_back_as_transformers_reads_it(part, whole):
    """{$ratio: [part, whole]} (GPT-NeoX's partial_rotary_factor): transformers' int(head_dim * factor) gives the
    rotary dims back."""
    from types import SimpleNamespace

    from mapspec.companions import _ratio

    plan = SimpleNamespace(spec=SimpleNamespace(path="s.yaml", vars={"r": part, "h": whole}))
    got = _ratio(plan, {}, ["{r}", "{h}"], "config.json.x")
    assert isinstance(got, float) and int(whole * got) == part


def test_ratio_of_non_integers_is_refused():
    from types import SimpleNamespace

    from mapspec.companions import _ratio
    from mapspec.errors import MapspecError

    plan = SimpleNamespace(spec=SimpleNamespace(path="s.yaml", vars={}))
    with pytest.raises(MapspecError, match=r"s.yaml: config.json.x: \$ratio takes \[part, whole\]"):
        _ratio(plan, {}, [1, 0], "config.json.x")
