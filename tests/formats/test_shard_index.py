"""The index of a sharded checkpoint (mapspec/formats/shard_index.py), on an index transformers writes itself."""

from __future__ import annotations

import json

import pytest

from mapspec.errors import FormatError
from mapspec.formats.shard_index import read_index, split_name, stale_shards

transformers = pytest.importorskip("transformers")
pytest.importorskip("torch")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    from llm_fixtures import llama_config

    folder = tmp_path_factory.mktemp("sharded")
    model = transformers.LlamaForCausalLM(llama_config(num_hidden_layers=1))
    model.save_pretrained(folder, max_shard_size="40KB")
    return folder


def test_read_index_gives_transformers_weight_map(saved):
    index = saved / transformers.utils.SAFE_WEIGHTS_INDEX_NAME
    doc = json.loads(index.read_text())
    weight_map, metadata = read_index(str(index))
    assert weight_map == doc["weight_map"] and len(set(weight_map.values())) > 1
    assert metadata == doc.get("metadata", {})
    stem, ext = split_name(str(index), "safetensors")
    assert all(s.startswith(stem + "-") and s.endswith(ext) for s in weight_map.values())
    # every shard transformers wrote has the name pattern mapspec writes: stale unless kept
    assert stale_shards(str(index), stem, ext, keep=[]) == sorted(set(weight_map.values()))
    assert stale_shards(str(index), stem, ext, keep=set(weight_map.values())) == []


def test_split_name_of_transformers_index_names():
    assert split_name(transformers.utils.SAFE_WEIGHTS_INDEX_NAME, "safetensors") == ("model", ".safetensors")
    assert split_name(transformers.utils.WEIGHTS_INDEX_NAME, "torch") == ("pytorch_model", ".bin")


@pytest.mark.parametrize("text,match", [
    ('{"weight_map": {"a": "s1", "a": "s2"}}', "names 'a' twice"),
    ('{"weight_map": {}}', "weight_map is empty"),
    ('{"weight_map": {"a": 3}}', "a file name is a string"),
    ('{"weight_map": {"a": "s"}, "metadata": {"total_size": 1' + "0" * 30 + "}}", "digits"),
    ('[1, 2]', "a JSON object"),
    ('{"weight_map": {"a": "s"', "not valid JSON"),
])
def test_bad_indexes_are_format_errors(tmp_path, text, match):
    p = tmp_path / "model.safetensors.index.json"
    p.write_text(text)
    with pytest.raises(FormatError, match=match):
        read_index(str(p))
