"""GGUF reader/writer and the dequantize transform, checked against gguf-py (the oracle)."""

from __future__ import annotations

import struct

import ml_dtypes
import numpy as np
import pytest

from mapspec.errors import FormatError, MapspecError
from mapspec.formats import TensorInfo, detect, open_checkpoint
from mapspec.formats import gguf as mg

from gguf_util import QUANTS, random_blocks

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType

FLOATS = {"float32": np.float32, "float16": np.float16, "float64": np.float64, "bfloat16": ml_dtypes.bfloat16,
          "int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64}


def arange(dtype, shape) -> np.ndarray:
    n = int(np.prod(shape))
    return (np.arange(n) % 100 + 1).astype(dtype).reshape(shape)


def gguf_py_file(path, tensors: dict, quantized: dict = (), metadata=None):
    """A file written by gguf-py's own writer."""
    w = gguf.GGUFWriter(str(path), "llama")
    for key, (kind, value) in (metadata or {}).items():
        getattr(w, f"add_{kind}")(key, value)
    for name, a in tensors.items():
        w.add_tensor(name, a, raw_dtype=Q.BF16 if a.dtype == ml_dtypes.bfloat16 else None)
    for name, (qtype, raw) in dict(quantized).items():
        w.add_tensor(name, raw, raw_dtype=Q[qtype])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# -- reading files gguf-py wrote -----------------------------------------------------------

def test_reader_matches_gguf_py(tmp_path):
    tensors = {f"t_{k}": arange(v, (3, 2, 4)) for k, v in FLOATS.items()}
    tensors["vec"] = np.arange(7, dtype=np.float32)
    quantized = {f"q_{k}": (k, random_blocks(k, 3, 2, i)) for i, k in enumerate(QUANTS)}
    meta = {"llama.block_count": ("uint32", 2), "llama.rope.freq_base": ("float32", 10000.0),
            "tokenizer.ggml.tokens": ("array", ["<s>", "a", "bc"]), "x.flag": ("bool", True),
            "x.big": ("uint64", 2 ** 40), "x.neg": ("int32", -3), "x.d": ("float64", 0.1)}
    path = gguf_py_file(tmp_path / "m.gguf", tensors, quantized, meta)
    assert detect(path) == "gguf"
    ref = gguf.GGUFReader(str(path))
    with open_checkpoint(path) as r:
        assert r.names() == [t.name for t in ref.tensors]
        for t in ref.tensors:
            got = r.read(t.name)
            assert got.tobytes() == np.asarray(t.data).tobytes(), t.name
            want_shape = tuple(reversed([int(d) for d in t.shape]))  # ggml order reversed
            if t.tensor_type.name in QUANTS:
                assert r.info(t.name).meta["shape"] == want_shape
                assert got.shape == np.asarray(t.data).shape
            else:
                assert got.shape == want_shape
        assert r.info("t_bfloat16").dtype == "bfloat16"
        assert r.info("q_Q4_K").meta == {"ggml_type": "Q4_K", "shape": (3, 512)}
        assert r.info("q_Q4_K").shape == (3, 288) and r.info("q_Q4_K").dtype == "uint8"
        md = r.metadata
        for key, field in ref.fields.items():
            if key.startswith("GGUF."):
                continue
            want = field.contents()
            assert md[key] == (pytest.approx(want) if isinstance(want, float) else want), key
        assert r.metadata_types()["tokenizer.ggml.tokens"] == "array[string]"
        assert r.metadata_types()["x.big"] == "uint64"


# -- writing: gguf-py reads ours, and agrees with its own writer -----------------------------

def test_writer_read_by_gguf_py_and_same_as_its_writer(tmp_path):
    tensors = {f"t_{k}": arange(v, (2, 3, 4)) for k, v in FLOATS.items()}
    tensors["empty"] = np.zeros((0, 4), dtype=np.float32)
    tensors["last"] = np.arange(5, dtype=np.int32)
    meta = {"general.architecture": "llama", "llama.block_count": 2, "llama.rope.freq_base": 10000.0,
            "tokenizer.ggml.tokens": ["<s>", "a"], "x.big": {"type": "uint64", "value": 7},
            "x.flag": True, "x.scores": [0.5, -1.0]}
    ours = tmp_path / "ours.gguf"
    mg.save(ours, tensors, metadata=meta)
    theirs = gguf_py_file(tmp_path / "theirs.gguf", {k: v for k, v in tensors.items() if k != "empty"}, (),
                          {"llama.block_count": ("uint32", 2), "llama.rope.freq_base": ("float32", 10000.0),
                           "tokenizer.ggml.tokens": ("array", ["<s>", "a"]), "x.big": ("uint64", 7),
                           "x.flag": ("bool", True), "x.scores": ("array", [0.5, -1.0])})
    a, b = gguf.GGUFReader(str(ours)), gguf.GGUFReader(str(theirs))
    assert {t.name for t in a.tensors} - {"empty"} == {t.name for t in b.tensors}
    tb = {t.name: t for t in b.tensors}
    for t in a.tensors:
        if t.name == "empty":
            continue
        assert t.tensor_type == tb[t.name].tensor_type, t.name
        assert list(t.shape) == list(tb[t.name].shape)
        assert np.asarray(t.data).tobytes() == np.asarray(tb[t.name].data).tobytes(), t.name
        assert t.data_offset % 32 == 0
    for key, field in b.fields.items():
        if key.startswith("GGUF."):
            continue
        assert a.fields[key].types == field.types, key
        assert a.fields[key].contents() == field.contents(), key


def test_quantized_blocks_copied_raw(tmp_path):
    raw = random_blocks("Q6_K", 2, 1)
    src = gguf_py_file(tmp_path / "q.gguf", {}, {"w": ("Q6_K", raw)})
    out = tmp_path / "out.gguf"
    with open_checkpoint(src) as r:
        infos = [TensorInfo("renamed", r.info("w").shape, "uint8", r.info("w").meta)]
        w = mg.create(str(out), infos)
        w.write("renamed", r.read("w"))
        w.close()
    (t,) = gguf.GGUFReader(str(out)).tensors
    assert t.name == "renamed" and t.tensor_type == Q.Q6_K and list(t.shape) == [256, 2]
    assert np.array_equal(np.asarray(t.data), raw)


def test_alignment_option_and_template_metadata(tmp_path):
    tmpl = gguf_py_file(tmp_path / "t.gguf", {"a": np.ones(3, np.float32)}, (),
                        {"llama.context_length": ("uint32", 128)})
    out = tmp_path / "o.gguf"
    mg.save(out, {"a": np.arange(3, dtype=np.float32), "b": np.arange(5, dtype=np.float16)},
            alignment=64, template=str(tmpl), metadata={"llama.context_length": 256})
    r = gguf.GGUFReader(str(out))
    assert r.fields["general.alignment"].contents() == 64
    assert r.fields["general.architecture"].contents() == "llama"  # kept from the template
    assert r.fields["llama.context_length"].contents() == 256  # the spec's value wins
    assert all(t.data_offset % 64 == 0 for t in r.tensors)
    with open_checkpoint(out) as m:
        assert m.alignment == 64 and np.array_equal(m.read("b"), np.arange(5, dtype=np.float16))
    again = tmp_path / "again.gguf"  # the template's alignment is kept when none is given
    mg.save(again, {"a": np.arange(3, dtype=np.float32)}, template=str(out))
    assert gguf.GGUFReader(str(again)).fields["general.alignment"].contents() == 64


@pytest.mark.parametrize("meta, message", [
    ({"k": {"type": "uint8", "value": 300}}, "does not fit uint8"),
    ({"k": {"type": "float32", "value": "x"}}, "needs a number"),
    ({"k": [1, "a"]}, "one type"),
    ({"k": {"type": "nope", "value": 1}}, "unknown type"),
    ({"k": {"value": 1}}, "type: T, value: V"),
    ({"k": None}, "cannot store"),
    ({"k\ud800": 1}, "lone surrogate"),
    ({"k": "v\udc80"}, "lone surrogate"),
])
def test_bad_metadata(tmp_path, meta, message):
    with pytest.raises(MapspecError, match=message):
        mg.save(tmp_path / "x.gguf", {"a": np.zeros(2, np.float32)}, metadata=meta)


def test_writer_refusals(tmp_path):
    with pytest.raises(MapspecError, match="no uint16 type"):
        mg.save(tmp_path / "x.gguf", {"a": np.zeros(2, np.uint16)})
    with pytest.raises(MapspecError, match="longer than 63 bytes"):
        mg.save(tmp_path / "x.gguf", {"n" * 64: np.zeros(2, np.float32)})
    with pytest.raises(MapspecError, match="dequantize it before reshaping"):
        mg.create(str(tmp_path / "y.gguf"), [TensorInfo("w", (4, 105), "uint8", {"ggml_type": "Q6_K",
                                                                                  "shape": (2, 512)})])
    with pytest.raises(MapspecError, match="power of two"):
        mg.save(tmp_path / "x.gguf", {"a": np.zeros(2, np.float32)}, alignment=48)


# -- hostile files ------------------------------------------------------------------------------

def _header(n_tensors=1, n_kv=0) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv)


def _s(text: str) -> bytes:
    return struct.pack("<Q", len(text)) + text.encode()


@pytest.mark.parametrize("blob, message", [
    (_header(2 ** 60, 0) + b"\0" * 40, "more than the"),
    (_header(0, 1) + _s("k") + struct.pack("<IIQ", 9, 4, 2 ** 62) + b"\0" * 16, "cannot fit"),
    (_header(0, 1) + struct.pack("<Q", 2 ** 63) + b"\0" * 16, "runs past the end"),
    (_header(0, 1) + _s("k") + struct.pack("<I", 99) + b"\0" * 8, "unknown value type 99"),
    (_header(1, 0) + _s("t") + struct.pack("<IQIQ", 1, 4, 0, 2 ** 63) + b"\0" * 8, "needs bytes"),
    (_header(1, 0) + _s("t") + struct.pack("<IQIQ", 1, 4, 0, 3) + b"\0" * 64, "not a multiple of the alignment"),
    (_header(1, 0) + _s("t") + struct.pack("<IQQIQ", 2, 2 ** 40, 2 ** 40, 0, 0) + b"\0" * 8, "overflows"),
    (_header(1, 0) + _s("t") + struct.pack("<IQIQ", 1, 4, 77, 0) + b"\0" * 8, "unknown ggml type 77"),
    (_header(1, 0) + _s("t") + struct.pack("<IQIQ", 1, 33, 8, 0) + b"\0" * 64, "blocks of 32"),
    (_header(1, 0) + _s("t") + struct.pack("<I", 9) + b"\0" * 80, "at most 4"),
    (b"GGUF" + struct.pack("<I", 7) + b"\0" * 20, "version 7"),
    (b"GGUF" + struct.pack(">IQQ", 3, 0, 0), "big-endian"),
    (_header(0, 1) + _s("general.alignment") + struct.pack("<II", 4, 3) + b"\0" * 8, "power of two"),
])
def test_hostile_headers(tmp_path, blob, message):
    p = tmp_path / "bad.gguf"
    p.write_bytes(blob)
    with pytest.raises(FormatError, match=message):
        mg.open(str(p))


def _with_empty_tensor(z_offset: int) -> bytes:
    """Tensor 'a' (16 float32, data bytes 0..64) and the empty tensor 'z' at ``z_offset``."""
    head = _header(2, 0) + _s("a") + struct.pack("<IQIQ", 1, 16, 0, 0) + _s("z") + struct.pack("<IQIQ", 1, 0, 0,
                                                                                              z_offset)
    return head + b"\0" * (-len(head) % 32) + np.arange(16, dtype="<f4").tobytes()


@pytest.mark.parametrize("offset, message", [
    (0, None),  # at a's first byte: where gguf-py's writer puts an empty tensor written before it
    (64, None),  # just past a's last byte: the end of the data section
    (32, "inside the bytes of tensor 'a'"),
    (96, "needs bytes"),  # past the data section
])
def test_an_empty_tensor_lies_in_the_data_section_outside_other_tensors(tmp_path, offset, message):
    p = tmp_path / "z.gguf"
    p.write_bytes(_with_empty_tensor(offset))
    if message is None:
        with mg.open(str(p)) as r:
            assert r.read("z").shape == (0,) and np.array_equal(r.read("a"), np.arange(16, dtype=np.float32))
    else:
        with pytest.raises(FormatError, match=message) as e:
            mg.open(str(p))
        assert "'z'" in str(e.value)


def test_every_truncation_is_a_format_error(tmp_path):
    src = tmp_path / "ok.gguf"
    mg.save(src, {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.arange(4, dtype=np.int8)},
            metadata={"k": ["x", "yy"], "n": 3})
    data = src.read_bytes()
    cut = tmp_path / "cut.gguf"
    for n in range(0, len(data) - 1, 3):
        cut.write_bytes(data[:n])
        try:
            with mg.open(str(cut)) as r:
                for name in r.names():
                    r.read(name)
                r.metadata
        except FormatError:
            continue
        # a cut inside the zero padding after the last tensor loses no data
        assert n >= len(data) - 32, n


# -- through specs: raw copy, dequantize, metadata ----------------------------------------------

def _spec(tmp_path, text: str):
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return str(p)


def test_spec_renames_quantized_blocks_and_dequantizes(tmp_path):
    import mapspec

    x = (np.arange(2 * 64, dtype=np.float32).reshape(2, 64) - 50) / 9
    q8 = gguf.quants.quantize(x, Q.Q8_0)
    k6 = random_blocks("Q6_K", 3, 1, seed=3)
    src = gguf_py_file(tmp_path / "q.gguf", {"f": np.arange(4, dtype=np.float32)},
                       {"blk.0.w": ("Q8_0", q8), "blk.0.k": ("Q6_K", k6)})
    copy = _spec(tmp_path, """
mapspec: 1
source: {format: gguf}
target: {format: gguf, metadata: {general.architecture: llama, n: "{layers * 2}"}}
vars: {layers: 3}
rules:
  - {from: "blk.<i>.<w:word>", to: "layer.{i}.{w}"}
  - {from: f, to: f}
""")
    mapspec.apply(copy, str(src), str(tmp_path / "copy.gguf"))
    r = gguf.GGUFReader(str(tmp_path / "copy.gguf"))
    t = {x.name: x for x in r.tensors}
    assert t["layer.0.w"].tensor_type == Q.Q8_0 and np.array_equal(np.asarray(t["layer.0.w"].data), q8)
    assert t["layer.0.k"].tensor_type == Q.Q6_K and np.array_equal(np.asarray(t["layer.0.k"].data), k6)
    assert r.fields["n"].contents() == 6 and r.fields["general.architecture"].contents() == "llama"
    deq = _spec(tmp_path, """
mapspec: 1
source: {format: gguf}
target: {format: safetensors}
rules:
  - {from: "blk.0.w", to: w, apply: [{dequantize: Q8_0}]}
  - {from: "blk.0.k", to: k, apply: [{dequantize: Q6_K}]}
  - {from: f, to: f}
""")
    mapspec.apply(deq, str(src), str(tmp_path / "deq.safetensors"))
    with open_checkpoint(tmp_path / "deq.safetensors") as o:
        assert np.array_equal(o.read("w"), gguf.quants.dequantize(q8, Q.Q8_0))
        assert np.array_equal(o.read("k"), gguf.quants.dequantize(k6, Q.Q6_K), equal_nan=True)


def test_gguf_to_gguf_renames_are_kernel_copies(tmp_path, monkeypatch):
    """A tensor only renamed GGUF -> GGUF is copied file to file (copy_file_range), blocks and floats
    alike, and lands byte for byte; a dequantizing reader hands out no span to copy."""
    import mapspec

    x = (np.arange(2 * 64, dtype=np.float32).reshape(2, 64) - 50) / 9
    q8 = gguf.quants.quantize(x, Q.Q8_0)
    halves = np.arange(96, dtype=np.float16).reshape(3, 32)
    src = gguf_py_file(tmp_path / "q.gguf", {"f": np.arange(4, dtype=np.float32), "h": halves},
                       {"blk.0.w": ("Q8_0", q8)})
    copied = []
    from mapspec.formats import base

    real = base.copy_range
    monkeypatch.setattr(base, "copy_range", lambda *a: copied.append(a[4]) or real(*a))
    spec = _spec(tmp_path, """
mapspec: 1
source: {format: gguf}
target: {format: gguf}
rules:
  - {from: "blk.<i>.<w:word>", to: "layer.{i}.{w}"}
  - {from: "<n:word>", to: "x.{n}"}
""")
    mapspec.apply(spec, str(src), str(tmp_path / "out.gguf"))
    assert sorted(copied) == sorted([q8.nbytes, 16, halves.nbytes])
    t = {x.name: x for x in gguf.GGUFReader(str(tmp_path / "out.gguf")).tensors}
    assert np.array_equal(np.asarray(t["layer.0.w"].data), q8) and t["layer.0.w"].tensor_type == Q.Q8_0
    assert np.array_equal(np.asarray(t["x.h"].data), halves) and np.asarray(t["x.h"].data).dtype == np.float16
    with mg.open(str(src), dequantize=True) as r:
        assert r.span("blk.0.w") is None and r.span("h") is not None


def test_transformed_quantized_blocks_are_refused(tmp_path):
    import mapspec

    src = gguf_py_file(tmp_path / "q.gguf", {}, {"w": ("Q8_0", random_blocks("Q8_0", 2, 2))})
    bad = _spec(tmp_path, """
mapspec: 1
source: {format: gguf}
target: {format: gguf}
rules:
  - {from: w, to: w, apply: [{reshape: [4, 34]}]}
""")
    with pytest.raises(MapspecError, match="reshape.* on raw Q8_0 blocks"):
        mapspec.apply(bad, str(src), str(tmp_path / "o.gguf"))
    assert not (tmp_path / "o.gguf").exists()


def test_metadata_expression_errors_name_the_spec_line(tmp_path):
    import mapspec

    src = tmp_path / "a.gguf"
    mg.save(src, {"a": np.zeros(2, np.float32)})
    spec = _spec(tmp_path, """
mapspec: 1
target:
  format: gguf
  metadata:
    k: "{nope + 1}"
rules:
  - {from: a, to: a}
""")
    p = mapspec.plan(spec, str(src))
    assert not p.ok and "s.yaml:6" in str(p.errors[0]) and "nope" in str(p.errors[0])
    torch_out = _spec(tmp_path, """
mapspec: 1
target: {format: npz, metadata: {k: 1}}
rules:
  - {from: a, to: a}
""")
    with pytest.raises(MapspecError, match="no write option 'metadata'"):
        mapspec.apply(torch_out, str(src), str(tmp_path / "o.npz"))


def test_reader_option_dequantize(tmp_path):
    raw = random_blocks("Q4_K", 2, 1, seed=5)
    src = gguf_py_file(tmp_path / "q.gguf", {"f": np.arange(3, dtype=np.float32)}, {"w": ("Q4_K", raw)})
    with open_checkpoint(src, dequantize=True) as r:
        assert r.info("w").shape == (2, 256) and r.info("w").dtype == "float32"
        assert np.array_equal(r.read("w"), gguf.quants.dequantize(raw, Q.Q4_K))
        assert np.array_equal(r.read("f"), np.arange(3, dtype=np.float32))
    other = gguf_py_file(tmp_path / "q5.gguf", {}, {"w": ("Q5_K", np.zeros((1, 176), np.uint8))})
    with pytest.raises(FormatError, match="cannot dequantize Q5_K"):
        open_checkpoint(other, dequantize=True)
    with open_checkpoint(other) as r:  # raw blocks of any known type still copy
        assert r.info("w").meta == {"ggml_type": "Q5_K", "shape": (1, 256)}


def test_inspect_shows_the_ggml_type_of_quantized_tensors(tmp_path):
    import io
    import json

    from mapspec import cli

    src = gguf_py_file(tmp_path / "q.gguf", {"f": np.arange(3, dtype=np.float32)},
                       {"w": ("Q4_K", random_blocks("Q4_K", 2, 1, seed=5)), "v": ("Q8_0", random_blocks("Q8_0", 3, 2))})

    def inspect(*extra):
        out, err = io.StringIO(), io.StringIO()
        assert cli.run(["inspect", str(src), *extra], stdout=out, stderr=err) == 0, err.getvalue()
        return out.getvalue()

    rows = {line.split()[0]: line.split() for line in inspect().splitlines()[2:] if line.strip()}
    assert "ggml type" in inspect().splitlines()[0]
    # Q4_K: 144-byte blocks of 256 values; Q8_0: 34-byte blocks of 32 values (ggml's block layouts)
    assert rows["w"][1:3] == ["2x144", "uint8"] and rows["w"][-4:] == ["Q4_K", "blocks", "of", "2x256"]
    assert rows["v"][1:3] == ["3x68", "uint8"] and rows["v"][-4:] == ["Q8_0", "blocks", "of", "3x64"]
    assert rows["f"][-1] == "-"
    tensors = {t["name"]: t for t in json.loads(inspect("--json"))["tensors"]}
    assert tensors["w"]["ggml_type"] == "Q4_K" and tensors["w"]["ggml_shape"] == [2, 256]
    assert tensors["v"]["ggml_type"] == "Q8_0" and tensors["v"]["ggml_shape"] == [3, 64]
    assert "ggml_type" not in tensors["f"]
    deq = {t["name"]: t for t in json.loads(inspect("--json", "--option", "dequantize=true"))["tensors"]}
    assert deq["w"]["ggml_type"] == "Q4_K" and deq["w"]["dequantized"] is True and deq["w"]["shape"] == [2, 256]
    assert "Q4_K (dequantized)" in inspect("--option", "dequantize=true")


# -- property: any typed metadata round-trips through our writer, gguf-py's reader and ours ------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_INTS = {"uint8": (0, 255), "int8": (-128, 127), "uint16": (0, 65535), "int16": (-32768, 32767),
         "uint32": (0, 2 ** 32 - 1), "int32": (-2 ** 31, 2 ** 31 - 1), "uint64": (0, 2 ** 64 - 1),
         "int64": (-2 ** 63, 2 ** 63 - 1)}


def _typed_value(tname):
    if tname in _INTS:
        return st.integers(*_INTS[tname])
    if tname == "float32":
        return st.floats(width=32, allow_nan=False)
    if tname == "float64":
        return st.floats(allow_nan=False)
    if tname == "bool":
        return st.booleans()
    return st.text(max_size=20)


_SCALARS = list(_INTS) + ["float32", "float64", "bool", "string"]
_entry = st.sampled_from(_SCALARS).flatmap(
    lambda t: st.one_of(_typed_value(t).map(lambda v: (t, v)),
                        st.lists(_typed_value(t), max_size=5).map(lambda v: (f"array[{t}]", v))))


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=1, max_size=12),
                       _entry, max_size=6))
def test_metadata_round_trip(tmp_path_factory, meta):
    path = tmp_path_factory.mktemp("m") / "m.gguf"
    mg.save(path, {"a": np.arange(3, dtype=np.float32)},
            metadata={k: {"type": t, "value": v} for k, (t, v) in meta.items()})
    ref = gguf.GGUFReader(str(path))
    with mg.open(str(path)) as r:
        assert r.metadata_types() == {k: t for k, (t, _) in meta.items()}
        for k, (t, v) in meta.items():
            got, theirs = r.metadata[k], ref.fields[k].contents()
            assert got == theirs, (k, got, theirs)
            want = np.float32(v).item() if t == "float32" else (
                [np.float32(x).item() for x in v] if t == "array[float32]" else v)
            assert got == want, (k, t, got, want)
