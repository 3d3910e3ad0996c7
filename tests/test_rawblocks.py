"""Raw quantized blocks (mapspec/rawblocks.py): never exported, transformed or decoded as if they were values.

Files are written by gguf-py (the oracle) and the expected values come from gguf-py's quantize/dequantize.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import mapspec
from mapspec.errors import MapspecError
from mapspec.formats import TensorInfo, open_checkpoint
from mapspec.formats import safetensors as st_format

from gguf_util import random_blocks

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType


def _values() -> np.ndarray:
    return ((np.arange(4 * 64, dtype=np.float32).reshape(4, 64) - 100) / 128).astype(np.float32)


def gguf_file(path, quantized: dict, floats: dict = ()):
    w = gguf.GGUFWriter(str(path), "llama")
    for name, (qtype, raw) in dict(quantized).items():
        w.add_tensor(name, raw, raw_dtype=Q[qtype])
    for name, a in dict(floats).items():
        w.add_tensor(name, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


@pytest.fixture
def q8(tmp_path):
    x = _values()
    return gguf_file(tmp_path / "q.gguf", {"blk.0.w": ("Q8_0", gguf.quants.quantize(x, Q.Q8_0)),
                                           "blk.0.v": ("Q4_0", gguf.quants.quantize(x, Q.Q4_0))},
                     {"f": np.arange(64, dtype=np.float32) / 7})


def _spec(tmp_path, rules: str, target: str = "safetensors") -> str:
    p = tmp_path / "s.yaml"
    p.write_text(f"mapspec: 1\nsource: {{format: gguf}}\ntarget: {{format: {target}}}\nrules:\n{rules}"
                 f"  - {{from: '<rest:path>', drop: true, optional: true}}\n")  # the tensors a test leaves alone
    return str(p)


def test_raw_blocks_are_not_exported_as_weights(tmp_path, q8):
    spec = _spec(tmp_path, '  - {from: "blk.0.<w:word>", to: "model.{w}.weight"}\n  - {from: f, to: f}\n')
    out = tmp_path / "o.safetensors"
    with pytest.raises(MapspecError) as e:
        mapspec.apply(spec, q8, str(out))
    text = str(e.value)
    for want in ("'blk.0.w'", "Q8_0", "'blk.0.v'", "Q4_0", "{dequantize: Q8_0}", "dequantize=true", "s.yaml:5"):
        assert want in text, want
    assert not out.exists()
    # the command line: exit 1, one message, no traceback
    r = subprocess.run([sys.executable, "-m", "mapspec", "apply", spec, "-s", q8, "-o", str(out)],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert r.returncode == 1 and "Traceback" not in r.stderr and "raw Q8_0 blocks" in r.stderr
    assert not out.exists()


@pytest.mark.parametrize("target", ["npz", "torch", "gguf"])
def test_raw_blocks_go_only_to_gguf(tmp_path, q8, target):
    spec = _spec(tmp_path, '  - {from: "blk.0.w", to: w}\n', target)
    p = mapspec.plan(spec, q8, target_format=target)
    if target == "gguf":
        assert p.ok, p.errors
        (step,) = [s for s in p.to_json()["steps"] if s["target"] == "w"]  # the type travels with the plan
        assert step["dtype"] == "uint8" and step["ggml_type"] == "Q8_0" and step["ggml_shape"] == [4, 64]
    else:
        assert not p.ok and "raw Q8_0 blocks" in str(p.errors[0]) and f"format {target}" in str(p.errors[0])


def test_the_writer_refuses_raw_blocks_it_cannot_mark(tmp_path):
    info = TensorInfo("w", (2, 34), "uint8", {"ggml_type": "Q8_0", "shape": (2, 32)})
    with pytest.raises(MapspecError, match="'w' holds raw Q8_0 blocks"):
        st_format.create(str(tmp_path / "o.safetensors"), [info])
    plain = TensorInfo("w", (2, 34), "uint8")  # uint8 values, not blocks: fine
    st_format.create(str(tmp_path / "o.safetensors"), [plain]).abort()


def test_dequantize_of_another_type_is_refused_in_plan(tmp_path, q8):
    spec = _spec(tmp_path, '  - {from: "blk.0.v", to: v, apply: [{dequantize: Q8_0}]}\n')
    p = mapspec.plan(spec, q8)
    assert not p.ok
    text = str(p.errors[0])
    assert "rule 1" in text and "'blk.0.v'" in text and "Q4_0" in text and "{dequantize: Q4_0}" in text


def test_dequantize_of_its_own_type_matches_gguf_py(tmp_path, q8):
    spec = _spec(tmp_path, '  - {from: "blk.0.v", to: v, apply: [{dequantize: Q4_0}]}\n'
                           '  - {from: "blk.0.w", to: w, apply: [{dequantize: Q8_0}, {mul: 2}]}\n')
    mapspec.apply(spec, q8, str(tmp_path / "o.safetensors"))
    x = _values()
    with open_checkpoint(tmp_path / "o.safetensors") as o:
        assert np.array_equal(o.read("v"), gguf.quants.dequantize(gguf.quants.quantize(x, Q.Q4_0), Q.Q4_0))
        assert np.array_equal(o.read("w"), 2 * gguf.quants.dequantize(gguf.quants.quantize(x, Q.Q8_0), Q.Q8_0))


TRANSFORMS = ["{cast: float32}", "{cast: float16}", "{mul: 2}", "{add: 1}", "{reshape: [8, 34]}",
              "{transpose: [1, 0]}", "{take: {indices: [0], axis: 0}}", "{slice: {axis: 1, start: 0, stop: 34}}",
              "{reverse: 0}", "{concat: {after: [blk.0.w]}}"]


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_transforms_on_raw_blocks_are_refused(tmp_path, q8, transform):
    spec = _spec(tmp_path, f'  - {{from: "blk.0.w", to: w, apply: [{transform}]}}\n')
    p = mapspec.plan(spec, q8)
    assert not p.ok
    text = str(p.errors[0])
    assert "raw Q8_0 blocks" in text and "'blk.0.w'" in text and "{dequantize: Q8_0}" in text, text


def test_raw_blocks_as_an_operand_are_refused(tmp_path, q8):
    spec = _spec(tmp_path, '  - {from: f, to: f, apply: [{add: {by: "blk.0.w"}}]}\n')
    p = mapspec.plan(spec, q8)
    assert not p.ok and "'blk.0.w' holds raw Q8_0 blocks" in str(p.errors[0])


def test_gguf_copy_keeps_the_blocks_and_a_template_of_another_type_is_refused(tmp_path):
    q4 = random_blocks("Q4_0", 2, 2, seed=1)
    src = gguf_file(tmp_path / "q.gguf", {"w": ("Q4_0", q4)})
    spec = _spec(tmp_path, "  - {from: w, to: w}\n", "gguf")
    mapspec.apply(spec, src, str(tmp_path / "same.gguf"), template=src)
    (t,) = gguf.GGUFReader(str(tmp_path / "same.gguf")).tensors
    assert t.tensor_type == Q.Q4_0 and np.array_equal(np.asarray(t.data), q4)
    # IQ4_NL has Q4_0's block size (18 bytes of 32 values): same raw shape, other meaning
    other = gguf_file(tmp_path / "t.gguf", {"w": ("IQ4_NL", random_blocks("Q4_0", 2, 2, seed=2))})
    with pytest.raises(MapspecError, match="raw Q4_0 blocks but the template stores IQ4_NL blocks"):
        mapspec.apply(spec, src, str(tmp_path / "o.gguf"), template=other)
    assert not (tmp_path / "o.gguf").exists()


def test_stack_of_raw_blocks_is_refused(tmp_path):
    src = gguf_file(tmp_path / "q.gguf", {f"e.{i}": ("Q8_0", random_blocks("Q8_0", 2, 1, seed=i)) for i in range(2)})
    p = tmp_path / "s.yaml"
    p.write_text("mapspec: 1.1\nsource: {format: gguf}\ntarget: {format: gguf}\nrules:\n"
                 "  - {from: 'e.<i>', to: e, stack: {over: i}}\n")
    plan = mapspec.plan(str(p), src)
    assert not plan.ok and "stack of raw Q8_0 blocks" in str(plan.errors[0])


def test_reader_dequantized_tensors_are_values(tmp_path, q8):
    spec = _spec(tmp_path, '  - {from: "blk.0.w", to: w, apply: [{mul: 2}]}\n')
    p = tmp_path / "opt.yaml"
    p.write_text(open(spec).read().replace("source: {format: gguf}",
                                           "source: {format: gguf, options: {dequantize: true}}"))
    mapspec.apply(str(p), q8, str(tmp_path / "o.safetensors"))
    with open_checkpoint(tmp_path / "o.safetensors") as o:
        want = 2 * gguf.quants.dequantize(gguf.quants.quantize(_values(), Q.Q8_0), Q.Q8_0)
        assert np.array_equal(o.read("w"), want)
