"""``target.metadata`` (mapspec/metadata.py) through plan and apply, read back by gguf-py: keys and values with
``{expr}`` holes over vars and the plan's facts, typed entries, ``when`` conditions, refusals with the location."""

from __future__ import annotations

import numpy as np
import pytest

import mapspec
from mapspec.errors import MapspecError
from mapspec.formats import module

gguf = pytest.importorskip("gguf")

SPEC = """\
mapspec: 1.1
source: {format: npz}
target:
  format: gguf
  metadata:
    general.architecture: "{arch}"
    "{arch}.block_count": "{layers}"
    "{arch}.params": "{output_params}"
    general.name: "model from {source_folder}"
    "{arch}.rope.scale": {type: float32, value: 0.5, when: {var: scaled, is: true}}
    "{arch}.skipped": {type: uint32, value: 1, when: {var: scaled, is: false}}
vars: {arch: llama, layers: 2, scaled: true}
rules:
  - from: "<n:path>"
    to: "{n}"
"""


def test_metadata_written_as_the_spec_says(tmp_path):
    (tmp_path / "src").mkdir()
    src = tmp_path / "src" / "w.npz"
    module("npz").save(src, {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4, np.float32)})
    (tmp_path / "spec.yaml").write_text(SPEC)
    mapspec.apply(str(tmp_path / "spec.yaml"), str(src), str(tmp_path / "o.gguf"))
    r = gguf.GGUFReader(str(tmp_path / "o.gguf"))
    fields = {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}
    assert fields["general.architecture"] == "llama" and fields["llama.block_count"] == 2
    assert fields["llama.params"] == 10 and fields["general.name"] == "model from src"
    assert fields["llama.rope.scale"] == 0.5
    assert r.fields["llama.rope.scale"].types == [gguf.GGUFValueType.FLOAT32]
    assert "llama.skipped" not in fields


def test_an_expression_over_an_unknown_var_is_an_error_at_its_line(tmp_path):
    src = tmp_path / "w.npz"
    module("npz").save(src, {"a": np.ones(2, np.float32)})
    (tmp_path / "spec.yaml").write_text(SPEC.replace('"{layers}"', '"{layer_count}"'))
    with pytest.raises(MapspecError, match=r"spec.yaml:7:29: target metadata: undefined name 'layer_count'"):
        mapspec.plan(str(tmp_path / "spec.yaml"), str(src)).check()
