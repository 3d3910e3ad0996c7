"""mapspec/frameworks/gguf/outtype.py: the per-tensor type table, auto, and --outtype's refusals."""

from __future__ import annotations

import io

import numpy as np
import pytest

from mapspec import cli
from mapspec.errors import MapspecError
from mapspec.formats import TensorInfo
from mapspec.frameworks.gguf import outtype as go
from mapspec.formats.safetensors import save as save_safetensors

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_f32_names_are_gguf_py_tensor_names():
    known = {n.replace("{bid}", "N") for n in gguf.TENSOR_NAMES.values()}
    assert set(go.F32_NAMES) <= known


@pytest.mark.parametrize("name,shape,want", [
    ("blk.0.attn_q.weight", (64, 64), "Q8_0"),
    ("token_embd.weight", (96, 64), "Q8_0"),
    ("output.weight", (96, 64), "Q8_0"),
    ("blk.0.ffn_down.weight", (64, 80), "F16"),        # rows of 80: not whole blocks of 32
    ("blk.0.attn_norm.weight", (64,), "F32"),
    ("blk.0.attn_q_norm.weight", (4, 16), "F32"),      # a norm, even 2-D
    ("blk.0.attn_q.bias", (64, 64), "F32"),            # not a .weight
    ("blk.3.ffn_gate_inp.weight", (8, 64), "F32"),     # the MoE router
    ("position_embd.weight", (128, 64), "F32"),
    ("rope_freqs.weight", (32,), "F32"),
])
def test_choice_table(name, shape, want):
    assert go.choose(name, shape, "q8_0") == want
    assert go.choose(name, shape, "f16") == ("F32" if want == "F32" else "F16")


def test_auto():
    f = lambda dt, shape=(4, 4), n="w": TensorInfo(n, shape, dt)  # noqa: E731
    assert go.auto([f("float32"), f("bfloat16", (4,)), f("bfloat16", (4, 4), "x")]) == "bf16"
    assert go.auto([f("float16")]) == "f16"
    assert go.auto([f("float32")]) == "f16"  # the converter's default
    with pytest.raises(MapspecError, match="both bfloat16 .*float16"):
        go.auto([f("bfloat16"), f("float16", n="y")])


def _spec(tmp_path, target: str):
    p = tmp_path / "s.yaml"
    p.write_text(f"mapspec: 1\ntarget: {{format: {target}}}\nrules:\n  - {{from: <n:word>, to: '{{n}}.weight'}}\n")
    return p


def test_outtype_needs_a_gguf_output(tmp_path):
    save_safetensors(str(tmp_path / "a.safetensors"), {"w": np.ones((2, 32), np.float32)})
    code, _, err = run("apply", _spec(tmp_path, "safetensors"), "--source", tmp_path / "a.safetensors",
                       "-o", tmp_path / "o.safetensors", "--outtype", "q8_0")
    # (f32/f16/bf16/auto cast a float output instead: tests/test_outtype.py)
    assert code == 1 and "--outtype q8_0 is a GGUF type" in err and "Traceback" not in err
    assert not (tmp_path / "o.safetensors").exists()


def test_a_value_that_cannot_be_encoded_names_the_tensor_and_leaves_no_file(tmp_path):
    save_safetensors(str(tmp_path / "a.safetensors"), {"w": np.full((2, 32), 1e8, np.float32)})
    for outtype, why in (("f16", "overflows f16"), ("q8_0", "block scale")):
        code, _, err = run("apply", _spec(tmp_path, "gguf"), "--source", tmp_path / "a.safetensors",
                           "-o", tmp_path / "o.gguf", "--outtype", outtype)
        assert code == 1 and "'w.weight'" in err and why in err and "Traceback" not in err, err
        assert not (tmp_path / "o.gguf").exists()


def test_f16_underflow_is_refused_unless_allowed(tmp_path):
    """A nonzero float32 value below f16's smallest subnormal would be stored as 0 (llama.cpp's converter
    does so silently): refused, naming the tensor and the way out; ``allow=underflow`` gives gguf-py's bytes."""
    x = np.random.default_rng(1).standard_normal((2, 32)).astype(np.float32)
    x[1, 3] = 1e-9
    save_safetensors(str(tmp_path / "a.safetensors"), {"w": x})
    argv = ("apply", _spec(tmp_path, "gguf"), "--source", tmp_path / "a.safetensors", "-o", tmp_path / "o.gguf",
            "--outtype", "f16")
    code, _, err = run(*argv)
    assert code == 1 and "tensor 'w.weight': 1 nonzero value (up to 1e-09) would underflow to 0 in f16" in err
    assert "--target-option allow=underflow" in err and "Traceback" not in err
    assert not (tmp_path / "o.gguf").exists()
    assert run(*argv, "--target-option", "allow=underflow")[0] == 0
    t = {x.name: x for x in gguf.GGUFReader(str(tmp_path / "o.gguf")).tensors}
    assert t["w.weight"].data.tobytes() == x.astype(np.float16).tobytes()
    code, _, err = run(*argv, "--target-option", "allow=underflw", "-f")
    assert code == 1 and "'underflw' is not one of" in err


def test_python_api_takes_outtype(tmp_path):
    import mapspec

    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    save_safetensors(str(tmp_path / "a.safetensors"), {"w": x, "b": x[0]})
    mapspec.apply(str(_spec(tmp_path, "gguf")), str(tmp_path / "a.safetensors"), str(tmp_path / "o.gguf"),
                  outtype="q4_1")
    r = gguf.GGUFReader(str(tmp_path / "o.gguf"))
    t = {x.name: x for x in r.tensors}
    assert t["w.weight"].tensor_type == Q.Q4_1 and t["b.weight"].tensor_type == Q.F32
    assert t["w.weight"].data.tobytes() == gguf.quants.quantize(x, Q.Q4_1).tobytes()
    assert r.fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_Q4_1
    assert r.fields["general.quantization_version"].contents() == gguf.GGML_QUANT_VERSION


def test_quantized_blocks_from_a_gguf_source_are_not_reencoded(tmp_path):
    w = gguf.GGUFWriter(str(tmp_path / "q.gguf"), "llama")
    w.add_tensor("w", gguf.quants.quantize(np.ones((2, 32), np.float32), Q.Q8_0), raw_dtype=Q.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    spec = tmp_path / "s.yaml"
    spec.write_text("mapspec: 1\nsource: {format: gguf}\ntarget: {format: gguf}\nrules:\n  - {from: w, to: w.weight}\n")
    code, _, err = run("apply", spec, "--source", tmp_path / "q.gguf", "-o", tmp_path / "o.gguf", "--outtype", "f16")
    assert code == 1 and "holds Q8_0 blocks" in err and "Traceback" not in err


def test_apply_reports_the_bytes_and_types_written(tmp_path):
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    save_safetensors(str(tmp_path / "a.safetensors"), {"w": x, "b": x[0]})
    report = tmp_path / "r.json"
    code, out, err = run("apply", _spec(tmp_path, "gguf"), "--source", tmp_path / "a.safetensors", "-o",
                         tmp_path / "o.gguf", "--outtype", "q8_0", "--report", report)
    assert code == 0, err
    import json

    r = json.loads(report.read_text())
    stored = {t["target"]: t.get("stored_as") for t in r["tensors"]}
    assert stored == {"w.weight": "Q8_0", "b.weight": "F32"}
    # 4 rows of 2 Q8_0 blocks (34 bytes) + 64 float32 values: what the file holds, not the float32 input
    assert r["summary"]["bytes_written"] == 4 * 2 * 34 + 64 * 4
    assert "528 B" in out
