"""verify's inputs and model factories are bounded and checked: each mistake or hostile input is one
error (exit 1, no traceback): an .npy claiming 1e12 values, a 1.6 Gpx PNG, huge or negative shapes, token
ids, factories that cannot be imported, are not callables or do not return a model."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from mapspec import cli
from mapspec.errors import MapspecError
from mapspec.verify import compare, load_input

torch = pytest.importorskip("torch")

HERE = Path(__file__).resolve().parent
TINY = f"{HERE / 'bad_models.py'}:tiny_linear"

SPEC = """mapspec: 1
name: identity
source: {format: torch}
target: {format: torch}
rules:
  - from: "<n:path>"
    to: "{n}"
"""


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture()
def tiny(tmp_path):
    spec = tmp_path / "identity.yaml"
    spec.write_text(SPEC)
    state = {"weight": torch.arange(8, dtype=torch.float32).reshape(2, 4) / 8, "bias": torch.tensor([0.5, -1.0])}
    torch.save(state, tmp_path / "a.pt")
    torch.save(state, tmp_path / "b.pt")
    return spec, tmp_path / "a.pt", tmp_path / "b.pt"


def verify(tiny, *extra):
    spec, a, b = tiny
    return run("verify", spec, "-s", a, "-c", b, "--source-model", TINY, *extra)


def one_error(result, *words, code=1):
    status, out, err = result
    assert status == code, out + err
    assert err.startswith("mapspec: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err


def test_the_tiny_identity_passes(tiny):
    code, out, err = verify(tiny, "--target-model", TINY, "--input-shape", "1,4")
    assert code == 0 and "PASS" in out, out + err


def test_factories_get_the_weights_path_and_the_spec_vars_they_name(tiny):
    spec, a, b = tiny
    spec.write_text(SPEC + "vars: {scale: 3, unused: 5}\n")
    code, out, err = verify(tiny, "--target-model", f"{HERE / 'bad_models.py'}:linear_beside", "--input-shape", "1,4")
    assert code == 0 and "PASS" in out, out + err


def test_no_verify_section_and_no_model_says_what_to_pass(tiny):
    spec, a, b = tiny
    one_error(run("verify", spec, "-s", a, "-c", b), "no 'verify:' section", "--source-model")
    one_error(verify(tiny, "--input-shape", "1,4"), "nothing says how to run the target", "--target-model")


def test_npy_claiming_1e12_values(tiny, tmp_path):
    bomb = tmp_path / "bomb.npy"
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }"
    header += " " * (63 - len(header) % 64) + "\n"
    bomb.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\0" * 64)
    one_error(verify(tiny, "--target-model", TINY, "--input-shape", "1,4", "--input", bomb),
              "bomb.npy: the array claims 1,000,000,000,000 values")
    short = tmp_path / "short.npy"
    np.save(short, np.zeros((1, 4), np.float32))
    short.write_bytes(short.read_bytes()[:-4])
    one_error(verify(tiny, "--target-model", TINY, "--input-shape", "1,4", "--input", short), "truncated")


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_png_decompression_bomb(tiny, tmp_path):
    pytest.importorskip("PIL")
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(40000, 40000))  # 1.6 Gpx claimed by a 100-byte file
    one_error(verify(tiny, "--target-model", TINY, "--input-shape", "1,3,8,8", "--input", bomb),
              "bomb.png: refused as a decompression bomb")
    for w, h in ((9000, 8000), (10000, 10000)):  # above our bound; the second also above Pillow's warning
        bomb.write_bytes(_png_header(w, h))
        one_error(verify(tiny, "--target-model", TINY, "--input-shape", "1,3,8,8", "--input", bomb), "bomb.png: ",
                  f"{w * h:,}" if w == 9000 else "decompression bomb")


@pytest.mark.parametrize("shape,words", [
    ("100000,100000,100", "more than 67,108,864 values"),
    ("1,0", "has a dimension below 1"),
    ("1,1,1,1,1,1,1,1,1", "must have 1 to 8 dimensions"),
])
def test_bad_input_shapes(tiny, shape, words):
    one_error(verify(tiny, "--target-model", TINY, "--input-shape", shape), words)


@pytest.mark.parametrize("shape", ["1,-3,4,4", "1,a"])
def test_input_shapes_that_are_not_shapes_are_usage_errors(tiny, shape):
    one_error(verify(tiny, "--target-model", TINY, "--input-shape", shape), "is not a shape", code=2)


@pytest.mark.parametrize("shape,words", [((1 << 20, 1 << 20), "too large for an input"),
                                         ((1, -3, 4, 4), "has a dimension below 1")])
def test_shapes_from_a_spec_or_the_api_are_bounded_too(shape, words):
    with pytest.raises(MapspecError) as e:
        load_input(None, shape)
    assert words in str(e.value)


@pytest.mark.parametrize("text,words", [
    ("tokens:", "write tokens:ID,ID,... or random-tokens:LENGTH"),
    ("tokens:1,x", "token ids and lengths are integers"),
    ("tokens:-1", "token ids are not negative"),
    ("random-tokens:0", "has a dimension below 1"),
    ("random-tokens:99999999999", "too large"),
    ("random-tokens:4", "random token ids need the vocabulary size"),
    ("nosuchfile.png", "nosuchfile.png: no such input file"),
])
def test_bad_token_inputs(tiny, text, words):
    one_error(verify(tiny, "--target-model", TINY, "--input", text), words)


@pytest.mark.parametrize("ref,words", [
    ("nosuchpackage_xyz.models:build", "cannot import 'nosuchpackage_xyz.models': ModuleNotFoundError"),
    ("mapspec.models.caffenet:TINY", ("'TINY' is a", "not a factory function")),
    ("mapspec.models.densenet:nn", "'nn' is a module, not a factory function"),
    ("mapspec.models.densenet:no_such_factory", "has no attribute 'no_such_factory'"),
    ("mapspec.models.mobilefacenet:units", "returned a list, not a torch.nn.Module or a keras Model"),
    (f"{HERE / 'bad_models.py'}:returns_a_list", "returned a list"),
    (f"{HERE / 'nanogpt_model.py'}:broken", "failed: RuntimeError: factory failed on purpose"),
    (f"{HERE / 'nanogpt_model.py'}:NOT_A_MODEL", "'NOT_A_MODEL' is a int, not a factory function"),
    (f"{HERE / 'missing.py'}:f", "missing.py: no such file"),
    ("justaname", "must be written module:function"),
])
def test_bad_model_factories(tiny, ref, words):
    one_error(verify(tiny, "--target-model", ref, "--input-shape", "1,4"), *words if isinstance(words, tuple)
              else [words])


def test_spec_factory_outside_mapspec_models_is_one_clear_error(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC + "verify:\n  source: {run: torch, model: \"mypkg.models:build\"}\n  target: {run: torch}\n")
    code, out, err = run("validate", spec)
    assert code == 1 and "verify.source.model: 'mypkg.models:build' names code, not a registered model factory" in err
    assert "--source-model on the command line" in err and "does not match" not in err


def test_unknown_runner_in_a_spec_is_named(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC + "verify:\n  source: {run: tensorflow}\n  target: {run: transformer}\n")
    code, out, err = run("validate", spec)
    assert code == 1 and "verify.source.run: unknown runner 'tensorflow'; known: caffe, mxnet" in err
    assert "verify.target.run: unknown runner 'transformer' (did you mean 'transformers'?)" in err


def test_compare_handles_nan_and_inf_in_json():
    c = compare(np.array([1.0, 2.0]), np.array([1.0, np.nan]))
    assert not c.ok() and c.to_json()["max_abs"] == "inf"


def test_a_spec_verify_config_outside_its_folder_is_refused(tmp_path):
    (tmp_path / "s").mkdir()
    spec = tmp_path / "s" / "spec.yaml"
    spec.write_text(SPEC + "verify:\n  source: {run: torch, model: densenet121}\n"
                           "  target: {run: transformers, config: ../config.json}\n")
    (tmp_path / "config.json").write_text("{}")
    code, out, err = run("validate", spec)
    assert code == 1 and "verify target config '../config.json' is outside the spec's folder" in err


def test_an_npy_input_has_its_own_shape(tiny, tmp_path):
    """-i x.npy needs no --input-shape (nor a verify.input.shape): the array's shape is the input's."""
    np.save(tmp_path / "x.npy", np.arange(4, dtype=np.float32).reshape(1, 4) / 4)
    code, out, err = verify(tiny, "--target-model", TINY, "--input", tmp_path / "x.npy")
    assert code == 0 and "PASS" in out, out + err
    assert f"input: {tmp_path / 'x.npy'}, shape 1x4" in out
    # --input-shape still wins when given: the array must fit it
    one_error(verify(tiny, "--target-model", TINY, "--input", tmp_path / "x.npy", "--input-shape", "1,5"),
              "does not fit the input shape (1, 5)")
