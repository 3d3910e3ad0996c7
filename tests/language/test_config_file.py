"""A spec's config: section through the engine (mapspec/language/config.py): vars from the file beside the
checkpoint, a vars file, files that are missing or not regular."""

from __future__ import annotations

import json

import numpy as np
import pytest

import mapspec
from mapspec import cli
from mapspec.errors import MapspecError

from language_util import load, save, write


CONFIG_SPEC = """
mapspec: 1.1
config:
  file: [params.json, config.json]
  vars: {heads: [n_heads, num_attention_heads], vocab: model.vocab}
vars: {vocab: 7}
rules:
  - from: "wq"
    to: "q"
    apply: [{reshape: ["{heads}", -1]}]
"""


def test_config_vars_come_from_the_file_beside_the_checkpoint(tmp_path):
    src = save(tmp_path, {"wq": np.arange(12, dtype=np.float32)})
    spec = write(tmp_path, CONFIG_SPEC)
    with pytest.raises(MapspecError, match=r"no config file \(params.json, config.json\) beside the source, so no "
                                           r"value for heads \(from n_heads or num_attention_heads\)"):
        mapspec.plan(spec, src)
    assert mapspec.plan(spec, src, vars={"heads": 3}).check().steps[0].out_meta.shape == (3, 4)  # --var suffices
    (tmp_path / "config.json").write_text(json.dumps({"num_attention_heads": 4}))
    p = mapspec.plan(spec, src).check()
    assert p.steps[0].out_meta.shape == (4, 3) and p.spec.vars["vocab"] == 7
    (tmp_path / "params.json").write_text(json.dumps({"n_heads": 6, "model": {"vocab": 9}}))
    p = mapspec.plan(spec, src).check()
    assert p.steps[0].out_meta.shape == (6, 2) and p.spec.vars["vocab"] == 9
    other = tmp_path / "other.yaml"
    other.write_text("n_heads: 3\n")
    assert mapspec.plan(spec, src, vars_file=str(other)).check().steps[0].out_meta.shape == (3, 4)
    assert mapspec.plan(spec, src, vars={"heads": 2}).check().steps[0].out_meta.shape == (2, 6)
    out = tmp_path / "o.npz"
    assert cli.run(["apply", spec, "-s", src, "-o", str(out), "--vars-file", str(other)]) == 0
    assert load(out)["q"].shape == (3, 4)


def test_vars_file_without_config_section_sets_vars(tmp_path):
    spec = write(tmp_path, CONFIG_SPEC.replace("config:\n  file: [params.json, config.json]\n  vars: {heads: [n_heads, "
                                               "num_attention_heads], vocab: model.vocab}\n", "").replace(
        "vars: {vocab: 7}", "vars: {vocab: 7, heads: 1}"))
    src = save(tmp_path, {"wq": np.arange(12, dtype=np.float32)})
    f = tmp_path / "v.json"
    f.write_text(json.dumps({"heads": 3}))
    assert mapspec.plan(spec, src, vars_file=str(f)).check().steps[0].out_meta.shape == (3, 4)
    f.write_text(json.dumps({"hedas": 3}))
    with pytest.raises(MapspecError, match="'hedas' is not a var of"):
        mapspec.plan(spec, src, vars_file=str(f))


def test_config_file_that_is_not_a_regular_file_or_missing(tmp_path):
    import os

    src = save(tmp_path, {"wq": np.arange(12, dtype=np.float32)})
    spec = write(tmp_path, CONFIG_SPEC)
    with pytest.raises(MapspecError, match="nope.json: no such config file"):
        mapspec.plan(spec, src, vars_file=str(tmp_path / "nope.json"))
    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)
    with pytest.raises(MapspecError, match="config.json: the config file is not a regular file"):
        mapspec.plan(spec, src, vars_file=str(fifo))
    big = tmp_path / "big.json"
    big.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(MapspecError, match="not a JSON/YAML config"):
        mapspec.plan(spec, src, vars_file=str(big))
