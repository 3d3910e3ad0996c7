"""inspect FILE.gguf: the metadata key/values (table and --json), long arrays summarised."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from mapspec import cli
from mapspec.formats import gguf_view

gguf = pytest.importorskip("gguf")


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


TOKENS = [f"tok{i}" for i in range(100)]


@pytest.fixture
def gguf_file(tmp_path):
    path = tmp_path / "m.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint32("llama.block_count", 7)
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_float32("odd.nan", float("nan"))
    w.add_string("general.name", "x" * 100)
    w.add_token_list(TOKENS)
    w.add_array("small", [3, 1, 2])
    w.add_tensor("w", np.arange(6, dtype=np.float32).reshape(2, 3))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_table_shows_every_key_type_and_value(gguf_file):
    code, out, err = run("inspect", gguf_file)
    assert code == 0, err
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.strip()}
    assert "uint32" in lines["llama.block_count"] and lines["llama.block_count"].rstrip().endswith(" 7")
    assert lines["llama.attention.layer_norm_rms_epsilon"].rstrip().endswith("1e-05")
    tokens = lines["tokenizer.ggml.tokens"]
    assert "array[string]" in tokens and " 100 " in tokens
    assert "['tok0', 'tok1', 'tok2', 'tok3', 'tok4', 'tok5', 'tok6', 'tok7', ...]" in tokens
    assert "'" + "x" * 60 in lines["general.name"] and "x" * 100 not in out and "..." in lines["general.name"]
    assert "general.architecture" in lines and "w " in out  # the tensor table follows


def test_json_gives_values_and_summarises_long_arrays(gguf_file):
    code, out, err = run("inspect", gguf_file, "--json")
    assert code == 0, err
    meta = json.loads(out)["metadata"]
    assert meta["llama.block_count"] == {"type": "uint32", "value": 7}
    assert meta["general.name"]["value"] == "x" * 100
    assert meta["small"] == {"type": "array[int32]", "count": 3, "value": [3, 1, 2]}
    tokens = meta["tokenizer.ggml.tokens"]
    assert tokens == {"type": "array[string]", "count": 100, "head": TOKENS[:gguf_view.JSON_ITEMS]}
    assert meta["odd.nan"] == {"type": "float32", "value": "nan"}


def test_other_formats_have_no_metadata_section(tmp_path):
    from mapspec.formats.safetensors import save

    save(str(tmp_path / "a.safetensors"), {"w": np.zeros(2, np.float32)})
    code, out, _ = run("inspect", tmp_path / "a.safetensors", "--json")
    assert code == 0 and "metadata" not in json.loads(out)
