"""Spec language around the rules (mapspec/language/sections.py): what include carries (config vars, target
metadata; the including spec wins key by key, null removes a key), metadata when:/generate:, a rule's
generate:, and their validation errors at file:line:col."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from mapspec import cli
from mapspec.engine import plan
from mapspec.invert import invert
from mapspec.language.load import check_spec, load_spec

BASE = """\
mapspec: 1.1
name: base
target:
  format: gguf
  metadata:
    general.architecture: base
    fam.layers: {type: uint32, value: "{n_layers}"}
    fam.width: {type: uint32, value: "{width}"}
    fam.scaling: {type: string, value: "{kind}", when: {var: kind, in: [linear, yarn]}}
    fam.gone: {type: uint32, value: 1}
config:
  file: [config.json]
  vars:
    n_layers: num_hidden_layers
    width: hidden_size
    kind: {one_of: [rope.kind], default: none}
rules:
  - from: w
    to: w
  - to: extra
    generate: {llama3_rope_factors: {base: "{theta}", dim: 8, factor: 8.0, low_freq_factor: 1.0,
                                     high_freq_factor: 4.0, original_context: 64}}
    when: [{var: kind, is: llama3}]
vars: {theta: 10000.0}
"""

FAMILY = """\
mapspec: 1.1
name: family
include: [base.yaml]
target:
  format: gguf
  metadata:
    general.architecture: fam2
    fam.width: {type: uint64, value: "{width}"}
    fam.gone: null
    fam.heads: {type: uint32, value: "{heads}"}
config:
  file: [config.json]
  vars:
    width: d_model
    heads: num_attention_heads
rules: []
"""


def folder(tmp_path, **config):
    from safetensors.numpy import save_file

    save_file({"w": np.arange(6, dtype=np.float32)}, str(tmp_path / "m.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "family.yaml").write_text(FAMILY)
    return tmp_path / "m.safetensors"


def test_include_carries_config_vars_and_metadata_ours_win_key_by_key(tmp_path):
    src = folder(tmp_path, num_hidden_layers=3, hidden_size=7, d_model=9, num_attention_heads=2)
    p = plan(str(tmp_path / "family.yaml"), str(src))
    p.check()
    assert p.metadata == {"general.architecture": "fam2",                   # ours replaces the base's
                          "fam.layers": {"type": "uint32", "value": 3},      # the base's key, its config var
                          "fam.width": {"type": "uint64", "value": 9},       # our key, our config var (d_model)
                          "fam.heads": {"type": "uint32", "value": 2}}       # ours only; fam.gone removed (null)
    base = plan(str(tmp_path / "base.yaml"), str(src))
    assert base.metadata["fam.width"] == {"type": "uint32", "value": 7} and "fam.gone" in base.metadata


def test_when_and_generate_follow_the_config(tmp_path):
    src = folder(tmp_path, num_hidden_layers=1, hidden_size=2, d_model=2, num_attention_heads=1,
                 rope={"kind": "llama3"})
    p = plan(str(tmp_path / "family.yaml"), str(src))
    p.check()
    assert "fam.scaling" not in p.metadata
    extra = {s.target: s for s in p.steps}["extra"]
    assert extra.out_meta.shape == (4,) and extra.out_meta.dtype == "float32"
    (tmp_path / "config.json").write_text(json.dumps({"num_hidden_layers": 1, "hidden_size": 2, "d_model": 2,
                                                      "num_attention_heads": 1, "rope": {"kind": "yarn"}}))
    p = plan(str(tmp_path / "family.yaml"), str(src))
    assert p.metadata["fam.scaling"] == {"type": "string", "value": "yarn"}
    assert "extra" not in {s.target for s in p.steps}


def test_plan_shows_the_generator_and_invert_drops_the_generated_tensor(tmp_path):
    src = folder(tmp_path, num_hidden_layers=1, hidden_size=2, d_model=2, num_attention_heads=1,
                 rope={"kind": "llama3"})
    out, err = io.StringIO(), io.StringIO()
    assert cli.run(["plan", str(tmp_path / "base.yaml"), "-s", str(src)], stdout=out, stderr=err) == 0, err.getvalue()
    assert "(generated: llama3_rope_factors)" in out.getvalue()
    rev = invert(str(tmp_path / "base.yaml"), source=str(src))
    assert "{from: extra, drop: true, optional: true}" in rev.text
    assert any("computes 'extra' (llama3_rope_factors, when its conditions hold)" in n for n in rev.notes)


BAD = """\
mapspec: 1.1
target:
  format: gguf
  metadata:
    a: {type: uint32, value: 1, when: {var: nosuch, is: 1}}
    b: {type: string, generate: {size_lable: {params: 1}}}
    c: {type: string, generate: {size_label: {parms: 1}}}
rules:
  - to: t
    generate: {llama3_rope_factors: {base: 1.0}}
  - to: u
    generate: {size_label: {params: 1}}
  - to: v
    value: 1
    when: [{var: other, is: 2}]
  - to: w
    value: 1
    when: [{var: other}]
"""


def test_validate_names_each_mistake_at_its_line(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(BAD)
    _, errors = check_spec(str(spec))
    text = [str(e) for e in errors]
    expect = [(5, "'nosuch' is not a var of the spec"), (6, "unknown metadata value generator 'size_lable' (did you "
                                                            "mean 'size_label'?)"),
              (7, "size_label has no argument 'parms'"), (7, "size_label needs the argument 'params'"),
              (10, "llama3_rope_factors needs the argument 'dim'"), (12, "unknown tensor generator 'size_label'"),
              (15, "'other' is not a var of the spec"), (18, "when: give {var: NAME, is: VALUE}")]
    for line, msg in expect:
        assert any(f"bad.yaml:{line}:" in t and msg in t for t in text), (line, msg, text)


def test_schema_refuses_generate_with_from_or_value(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("mapspec: 1.1\nrules:\n  - {from: w, to: t, generate: {size_label: {params: 1}}}\n"
                    "  - {to: u, value: 1, generate: {size_label: {params: 1}}}\n")
    _, errors = check_spec(str(spec))
    assert {e.line for e in errors} >= {3, 4}


def test_generate_needs_spec_language_1_1(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(BAD.replace("mapspec: 1.1", "mapspec: 1"))
    assert any("'generate' is spec language 1.1" in str(e) for e in check_spec(str(spec))[1])


def test_shipped_llama_spec_validates():
    assert load_spec("llama/hf-to-gguf").config["inside"] == "text_config"


def test_a_family_spec_is_a_short_delta_over_the_shipped_llama_spec(tmp_path):
    """The arch prefix of every key is a var: a family spec sets its own and changes only what differs."""
    import os

    pytest.importorskip("transformers")
    import llm_fixtures as F
    from mapspec.resources import specs_dir

    base = os.path.relpath(os.path.join(specs_dir(), "llama", "hf-to-gguf.yaml"), tmp_path)
    (tmp_path / "family.yaml").write_text(
        f"mapspec: 1.1\ninclude: [{base}]\nvars: {{arch: fam}}\ntarget:\n  format: gguf\n  metadata:\n"
        f"    \"{{arch}}.rope.freq_base\": null\n    \"{{arch}}.extra\": {{type: uint32, value: 7}}\nrules: []\n")
    spec = load_spec(str(tmp_path / "family.yaml"), allow_paths=[specs_dir()])
    folder = F.save_model(tmp_path / "m", F.llama3_config())
    p = plan(spec, str(folder), no_tokenizer=True)
    p.check()
    assert p.metadata["general.architecture"] == "fam" and p.metadata["fam.extra"]["value"] == 7
    assert p.metadata["fam.block_count"]["value"] == 2 and "fam.rope.freq_base" not in p.metadata
    assert not any(k.startswith("llama.") for k in p.metadata)
    assert "rope_freqs.weight" in {s.target for s in p.steps}


def test_two_metadata_keys_that_render_alike_are_an_error(tmp_path):
    src = folder(tmp_path, num_hidden_layers=1, hidden_size=2, d_model=2, num_attention_heads=1)
    spec = tmp_path / "s.yaml"
    spec.write_text("mapspec: 1.1\ntarget:\n  format: gguf\n  metadata:\n    \"{a}.x\": 1\n    b.x: 2\n"
                    "vars: {a: b}\nrules: [{from: w, to: w}]\n")
    p = plan(str(spec), str(src))
    assert not p.ok and "'b.x' gives the key 'b.x' a second time" in str(p.errors[0])


def test_config_entries_are_checked_when_validating(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("mapspec: 1.1\nconfig:\n  file: [config.json]\n  vars:\n"
                    "    a: {one_of: [x], default: \"{b +}\"}\n    output_params: {one_of: [y]}\nrules: []\n")
    text = [str(e) for e in check_spec(str(spec))[1]]
    assert any("s.yaml:5:" in t and "config var 'a'" in t for t in text), text
    assert any("s.yaml:6:" in t and "taken by a fact of the conversion" in t for t in text), text


def test_a_named_rule_replaces_the_included_rule_of_that_name(tmp_path):
    """Ours win by rule name too: a family's attn_q without llama's permute; unnamed, llama's attn_q would be left
    matching nothing (the first rule whose from matches takes each tensor)."""
    import os

    pytest.importorskip("transformers")
    import llm_fixtures as F
    from mapspec.resources import specs_dir

    base = os.path.relpath(os.path.join(specs_dir(), "llama", "hf-to-gguf.yaml"), tmp_path)
    rule = '  - {%sfrom: "model.layers.<i>.self_attn.q_proj.weight", to: "blk.{i}.attn_q.weight"}\n'
    folder = F.save_model(tmp_path / "m", F.llama3_config())
    for name, ok in (("name: attn_q, ", True), ("", False)):
        (tmp_path / "family.yaml").write_text(f"mapspec: 1.1\ninclude: [{base}]\nvars: {{arch: fam}}\nrules:\n"
                                              + rule % name)
        p = plan(load_spec(str(tmp_path / "family.yaml"), allow_paths=[specs_dir()]), str(folder), no_tokenizer=True)
        assert p.ok == ok, p.errors
        if ok:
            q = [s for s in p.steps if s.target == "blk.0.attn_q.weight"]
            assert len(q) == 1 and q[0].transforms_text == "-"                  # ours: no rope_permute
            assert {s.target for s in p.steps} >= {"blk.0.attn_k.weight", "blk.0.ffn_gate.weight"}  # the rest stays
        else:
            assert "(attn_q): matches no source tensor" in str(p.errors)          # llama's attn_q, shadowed


def test_include_carries_companions_the_including_spec_wins(tmp_path):
    """An included spec's companions: json files merged key by key (ours win, null removes a key), refuse
    entries of both, tokenizer kept unless we give one."""
    (tmp_path / "base.yaml").write_text("""\
mapspec: 1.1
name: base
source: {format: gguf}
target:
  companions:
    tokenizer: gguf
    refuse: [{source_metadata: a.b, why: "base's"}]
    json:
      config.json: {model_type: base, vocab_size: 7, dropped: 1}
      generation_config.json: {bos_token_id: 1}
rules: []
""")
    (tmp_path / "fam.yaml").write_text("""\
mapspec: 1.1
name: fam
include: [base.yaml]
source: {format: gguf}
target:
  companions:
    refuse: [{source_metadata: c.d, why: "ours"}]
    json:
      config.json: {model_type: fam, dropped: null, hidden_size: 3}
rules: []
""")
    got = load_spec(str(tmp_path / "fam.yaml")).target.companions
    assert got["tokenizer"] == "gguf"
    assert [r["why"] for r in got["refuse"]] == ["base's", "ours"]
    assert dict(got["json"]["config.json"]) == {"model_type": "fam", "vocab_size": 7, "hidden_size": 3}
    assert dict(got["json"]["generation_config.json"]) == {"bos_token_id": 1}
