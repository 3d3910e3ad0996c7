"""safetensors reader/writer, checked against the ``safetensors`` library (the oracle)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

from mapspec.errors import FormatError, MapspecError
from mapspec.formats import TensorInfo
from mapspec.formats import safetensors as st

safetensors_numpy = pytest.importorskip("safetensors.numpy")

NUMPY_DTYPES = ["float64", "float32", "float16", "int64", "int32", "int16", "int8",
                "uint64", "uint32", "uint16", "uint8", "bool"]
ML_DTYPES = {"bfloat16": ml_dtypes.bfloat16, "float8_e4m3fn": ml_dtypes.float8_e4m3fn,
             "float8_e5m2": ml_dtypes.float8_e5m2}
CODES = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "float8_e4m3fn": "F8_E4M3",
         "float8_e5m2": "F8_E5M2", "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8",
         "uint64": "U64", "uint32": "U32", "uint16": "U16", "uint8": "U8", "bool": "BOOL"}


def arange(dtype_name: str, shape) -> np.ndarray:
    """Distinct values (modulo the type's range) so that permutations show."""
    n = int(np.prod(shape, dtype=np.int64))
    if dtype_name == "bool":
        return (np.arange(n) % 3 == 1).reshape(shape)
    if dtype_name in ML_DTYPES:
        return (np.arange(n, dtype=np.float32) % 15 + 1).astype(ML_DTYPES[dtype_name]).reshape(shape)
    dt = np.dtype(dtype_name)
    mod = 100 if dt.itemsize == 1 else 10_000
    return (np.arange(n) % mod).astype(dt).reshape(shape)


def all_tensors() -> dict:
    out = {}
    for i, name in enumerate(NUMPY_DTYPES + list(ML_DTYPES)):
        out[f"t_{name}"] = arange(name, (2, 3, i % 3 + 1))
    out["scalar"] = np.array(7.5, dtype=np.float32)
    out["empty"] = np.zeros((0, 4), dtype=np.float32)
    out["empty_bf16"] = np.zeros((3, 0), dtype=ml_dtypes.bfloat16)
    out["last"] = np.arange(5, dtype=np.int32)  # non-empty last tensor: every truncation must show
    return out


def raw_bytes(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()


# -- round trips through the library ---------------------------------------

def test_our_writer_library_reader_all_dtypes(tmp_path):
    torch = pytest.importorskip("torch")
    import safetensors.torch as sttorch

    tensors = all_tensors()
    p = tmp_path / "ours.safetensors"
    st.save(p, tensors, metadata={"format": "pt", "who": "mapspec"})
    loaded = sttorch.load_file(str(p))
    assert set(loaded) == set(tensors)
    for name, want in tensors.items():
        got = loaded[name]
        assert tuple(got.shape) == want.shape, name
        # compare raw bytes: independent of any numpy<->torch dtype mapping of ours
        got_bytes = got.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes() if got.numel() else b""
        assert got_bytes == raw_bytes(want), name
    # numpy dtypes also through the library's numpy side (which cannot represent bf16/f8)
    from safetensors import safe_open
    with safe_open(str(p), framework="np") as f:
        assert f.metadata() == {"format": "pt", "who": "mapspec"}
        for name in (f"t_{d}" for d in NUMPY_DTYPES):
            got = f.get_tensor(name)
            np.testing.assert_array_equal(got, tensors[name])
            assert got.dtype == tensors[name].dtype


def test_library_writer_our_reader_all_dtypes(tmp_path):
    torch = pytest.importorskip("torch")
    import safetensors.torch as sttorch

    tdt = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16,
           "bfloat16": torch.bfloat16, "float8_e4m3fn": torch.float8_e4m3fn, "float8_e5m2": torch.float8_e5m2,
           "int64": torch.int64, "int32": torch.int32, "int16": torch.int16, "int8": torch.int8,
           "uint64": torch.uint64, "uint32": torch.uint32, "uint16": torch.uint16, "uint8": torch.uint8,
           "bool": torch.bool}
    tensors = {}
    for name, d in tdt.items():
        base = torch.arange(24) % (3 if d == torch.bool else 90) + (0 if d == torch.bool else 1)
        tensors[name] = base.to(torch.float32).to(d).reshape(2, 3, 4) if d.is_floating_point else \
            base.to(d).reshape(2, 3, 4)
    tensors["scalar"] = torch.tensor(2.5, dtype=torch.bfloat16)
    tensors["empty"] = torch.zeros(0, 2, dtype=torch.float16)
    p = tmp_path / "lib.safetensors"
    sttorch.save_file(tensors, str(p), metadata={"a": "b"})
    with st.open(str(p)) as r:
        assert set(r.names()) == set(tensors)
        assert r.metadata == {"a": "b"}
        for name, t in tensors.items():
            info = r.info(name)
            assert info.shape == tuple(t.shape)
            arr = r.read(name)
            assert arr.shape == tuple(t.shape)
            want = t.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b""
            assert arr.tobytes() == want, name
        assert r.info("bfloat16").dtype == "bfloat16" and r.read("bfloat16").dtype == ml_dtypes.bfloat16
        assert r.info("float8_e4m3fn").dtype == "float8_e4m3fn"
        assert r.info("bool").dtype == "bool"
        # values, not only bytes: bfloat16 through ml_dtypes equals torch's float conversion
        np.testing.assert_array_equal(r.read("bfloat16").astype(np.float32),
                                      tensors["bfloat16"].float().numpy())


def test_numpy_library_round_trip_both_ways(tmp_path):
    tensors = {f"t_{d}": arange(d, (4, 5)) for d in NUMPY_DTYPES}
    a = tmp_path / "a.safetensors"
    safetensors_numpy.save_file(tensors, str(a))
    with st.open(str(a)) as r:
        read = {n: np.array(r.read(n)) for n in r.names()}
    b = tmp_path / "b.safetensors"
    st.save(b, read)
    back = safetensors_numpy.load_file(str(b))
    for n, want in tensors.items():
        np.testing.assert_array_equal(back[n], want)
        assert back[n].dtype == want.dtype


def test_reads_are_zero_copy_readonly_views(tmp_path):
    p = tmp_path / "v.safetensors"
    safetensors_numpy.save_file({"w": np.arange(1000, dtype=np.float32).reshape(10, 100)}, str(p))
    r = st.open(str(p))
    a = r.read("w")
    assert not a.flags.owndata and not a.flags.writeable
    np.testing.assert_array_equal(a, np.arange(1000, dtype=np.float32).reshape(10, 100))
    r.close()


def test_infos_in_data_order_and_metadata_optional(tmp_path):
    p = tmp_path / "o.safetensors"
    st.save(p, {"z": np.arange(3, dtype=np.float32), "a": np.arange(2, dtype=np.int8)})
    raw = p.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0  # header padded like the library does
    head = json.loads(raw[8:8 + n])
    assert "__metadata__" not in head
    assert head["z"] == {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}
    assert head["a"] == {"dtype": "I8", "shape": [2], "data_offsets": [12, 14]}
    assert st.open(str(p)).names() == ["z", "a"]
    assert st.sniff(str(p), raw[:64])
    assert not st.sniff(str(p), b"PK\x03\x04" + b"\0" * 60)


# -- the streaming writer ----------------------------------------------------

def test_writer_non_contiguous_and_big_endian_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(st, "_CHUNK", 64)  # force the chunked path with tiny arrays
    base = np.arange(2 * 30 * 40, dtype=np.float32).reshape(2, 30, 40)
    tensors = {
        "transposed": base.transpose(2, 0, 1),  # non-contiguous, rows > chunk
        "strided": base[:, ::3, ::2],
        "bigendian": np.arange(100, dtype=">i4").reshape(10, 10),
        "be_transposed": np.arange(60, dtype=">f8").reshape(6, 10).T,
        "bf16_t": np.arange(200, dtype=np.float32).astype(ml_dtypes.bfloat16).reshape(10, 20).T,
        "one_d_strided": np.arange(500, dtype=np.int16)[::3],
    }
    p = tmp_path / "c.safetensors"
    st.save(p, tensors)
    with st.open(str(p)) as r:
        for n, want in tensors.items():
            got = r.read(n)
            assert got.dtype.isnative and got.dtype == want.dtype.newbyteorder("=")
            np.testing.assert_array_equal(got.astype(np.float64), want.astype(np.float64))
    # the library agrees (numpy dtypes only: safetensors.numpy cannot represent bfloat16)
    del tensors["bf16_t"]
    p2 = tmp_path / "c2.safetensors"
    st.save(p2, tensors)
    lib = safetensors_numpy.load_file(str(p2))
    for n, want in tensors.items():
        np.testing.assert_array_equal(lib[n], want)


def test_writer_streams_header_first(tmp_path):
    infos = [TensorInfo("a", (2, 2), "float32"), TensorInfo("b", (3,), "int64")]
    p = tmp_path / "s.safetensors"
    w = st.create(str(p), infos)
    w.write("a", np.arange(4, dtype=np.float32).reshape(2, 2))
    w._fh.flush()
    (n,) = struct.unpack("<Q", p.read_bytes()[:8])
    assert p.stat().st_size == 8 + n + 16  # header and tensor a on disk before b arrives
    w.write("b", np.arange(3, dtype=np.int64))
    w.close()
    np.testing.assert_array_equal(safetensors_numpy.load_file(str(p))["b"], np.arange(3))


def test_writer_misuse(tmp_path):
    infos = [TensorInfo("a", (2,), "float32"), TensorInfo("b", (2,), "float32")]
    w = st.create(str(tmp_path / "m.safetensors"), infos)
    with pytest.raises(MapspecError, match="out of order"):
        w.write("b", np.zeros(2, np.float32))
    with pytest.raises(MapspecError, match="announced as float32"):
        w.write("a", np.zeros(2, np.float64))
    w.abort()
    w = st.create(str(tmp_path / "m2.safetensors"), infos)
    w.write("a", np.zeros(2, np.float32))
    with pytest.raises(MapspecError, match="before tensor 'b'"):
        w.close()
    w.abort()
    with pytest.raises(MapspecError, match="strings"):
        st.create(str(tmp_path / "m3.safetensors"), infos, metadata={"a": 1})


# -- hostile input --------------------------------------------------------------

def _valid_file(tmp_path) -> bytes:
    p = tmp_path / "valid.safetensors"
    st.save(p, all_tensors())
    return p.read_bytes()


def _open_all(path) -> None:
    """Open and read everything: the only exception allowed out is FormatError."""
    with st.open(str(path)) as r:
        for n in r.names():
            np.asarray(r.read(n)).sum()


@pytest.mark.slow
def test_every_truncation_is_a_format_error(tmp_path):
    data = _valid_file(tmp_path)
    p = tmp_path / "t.safetensors"
    for cut in range(len(data)):
        p.write_bytes(data[:cut])
        with pytest.raises(FormatError):
            _open_all(p)


@pytest.mark.slow
def test_flipped_header_bytes_never_escape_format_error(tmp_path):
    data = _valid_file(tmp_path)
    (n,) = struct.unpack("<Q", data[:8])
    p = tmp_path / "f.safetensors"
    rng = np.random.default_rng(0)
    outcomes = {"ok": 0, "error": 0}
    for pos in range(0, 8 + n):
        for value in (data[pos] ^ 0xFF, int(rng.integers(0, 256)), ord("9"), ord("-")):
            b = bytearray(data)
            b[pos] = value
            p.write_bytes(bytes(b))
            try:
                _open_all(p)
                outcomes["ok"] += 1
            except FormatError:
                outcomes["error"] += 1
    assert outcomes["error"] > 0


def _file_with_header(tmp_path, header, data: bytes = b"", length=None) -> str:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    p = tmp_path / "h.safetensors"
    p.write_bytes(struct.pack("<Q", len(text) if length is None else length) + text + data)
    return str(p)


@pytest.mark.parametrize("header,data,length,match", [
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, 1 << 60, "exceeds the limit"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, 10_000, "past the end"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, None, "overlap"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},  # an empty tensor inside another's bytes
      "z": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]}}, b"\0" * 8, None, "overlap"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},  # an empty tensor past the data area
      "z": {"dtype": "F32", "shape": [0], "data_offsets": [20, 20]}}, b"\0" * 8, None, "past the end"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, None, "past the end"),
    ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 12, None, "needs 12 bytes"),
    ({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8, None, "non-negative"),
    ({"a": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}}, b"\0" * 8, None, "non-negative"),
    ({"a": {"dtype": "F32", "shape": [True, 2], "data_offsets": [0, 8]}}, b"\0" * 8, None, "non-negative"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, b"\0" * 8, None, "ordered"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0]}}, b"\0" * 8, None, "pair"),
    ({"a": {"dtype": "X99", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, None, "unknown"),
    ({"a": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8, None, "not supported"),
    ({"a": {"dtype": "F32", "shape": [1 << 40, 1 << 40], "data_offsets": [0, 8]}}, b"\0" * 8, None, "size overflows 64 bits"),
    ({"a": {"dtype": "F32", "shape": [1 << 62, 4], "data_offsets": [0, 8]}}, b"\0" * 8, None, "size overflows 64 bits"),
    ({"a": [1, 2]}, b"", None, "not an object"),
    ({"__metadata__": {"a": 1}}, b"", None, "strings to strings"),
    ([1, 2, 3], b"", None, "start with"),
    (b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "a": {}}', b"\0" * 4, None, "twice"),
    (b'{"a": ', b"", None, "not valid JSON"),
    (b'{' + b'[' * 100_000, b"", None, "JSON"),
    (b'{"\xff": 1}', b"", None, "UTF-8"),
])
def test_bad_headers(tmp_path, header, data, length, match):
    p = _file_with_header(tmp_path, header, data, length)
    with pytest.raises(FormatError, match=match) as e:
        _open_all(p)
    assert e.value.offset is not None


def test_tiny_and_empty_files(tmp_path):
    for content in (b"", b"\x01", b"\x02\0\0\0\0\0\0\0{}"[:9]):
        p = tmp_path / "x.safetensors"
        p.write_bytes(content)
        with pytest.raises(FormatError):
            _open_all(p)
    p.write_bytes(struct.pack("<Q", 2) + b"{}")
    assert len(st.open(str(p))) == 0  # an empty but valid file


def test_huge_header_length_does_not_allocate(tmp_path):
    p = _file_with_header(tmp_path, b"{}", length=99_000_000)  # under the cap, past the end
    with pytest.raises(FormatError, match="past the end"):
        st.open(p)


def test_import_is_light():
    code = ("import sys, mapspec.formats.safetensors as m; "
            "assert 'torch' not in sys.modules and 'h5py' not in sys.modules and 'safetensors' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- renamed tensors keep their place in the page (copy_phases) ----------------------------------------------

RENAME_SPEC = """mapspec: 1
name: rename
source: {format: safetensors}
target: {format: safetensors}
rules:
  - from: "w.<i>"
    to: "renamed.layer.{i}.weight"
  - from: "t.<i>"
    to: "transposed.{i}"
    apply: [{transpose: [1, 0]}]
"""


def _lib_offsets(path):
    """{name: absolute file offset of its data} from the header as the safetensors library's own
    format description defines it (8-byte length, JSON, data area)."""
    raw = open(path, "rb").read(1 << 20)
    (n,) = struct.unpack("<Q", raw[:8])
    head = json.loads(raw[8:8 + n])
    return {k: 8 + n + v["data_offsets"][0] for k, v in head.items() if k != "__metadata__"}, 8 + n


def test_renamed_tensors_sit_at_their_sources_place_in_the_page(tmp_path):
    """A rename-only tensor is copied by the kernel; the output's data area starts so that its bytes sit
    at the same offset mod 4096 as in the source (whole-page copies), and the library reads the file."""
    from mapspec.engine import apply

    rng = np.random.default_rng(0)
    src = {f"w.{i}": (np.arange(4096 * 3, dtype=np.float32) + 1000 * i).reshape(96, 128) for i in range(4)}
    src.update({f"t.{i}": rng.standard_normal((64, 32)).astype(np.float32) for i in range(2)})
    source = tmp_path / "src.safetensors"
    safetensors_numpy.save_file(src, str(source), metadata={"format": "np"})
    (tmp_path / "s.yaml").write_text(RENAME_SPEC)
    out = tmp_path / "out.safetensors"
    apply(str(tmp_path / "s.yaml"), str(source), str(out), jobs=2)
    src_at, _ = _lib_offsets(source)
    out_at, start = _lib_offsets(out)
    assert start % 8 == 0
    for i in range(4):
        assert out_at[f"renamed.layer.{i}.weight"] % 4096 == src_at[f"w.{i}"] % 4096
    assert src_at["w.0"] % 4096 != 8 + 0  # the case is not trivial: the library's header is not a page long
    got = safetensors_numpy.load_file(str(out))
    assert sorted(got) == sorted([f"renamed.layer.{i}.weight" for i in range(4)] + ["transposed.0", "transposed.1"])
    for i in range(4):
        np.testing.assert_array_equal(got[f"renamed.layer.{i}.weight"], src[f"w.{i}"])
    for i in range(2):
        np.testing.assert_array_equal(got[f"transposed.{i}"], src[f"t.{i}"].T)


def test_without_copies_the_header_is_the_librarys(tmp_path):
    """Nothing copied: no extra padding, the very bytes of the library's save_file."""
    x = {"a": np.arange(10, dtype=np.float32), "b": np.arange(6, dtype=np.int16).reshape(2, 3)}
    st.save(str(tmp_path / "ours.safetensors"), x)
    safetensors_numpy.save_file(x, str(tmp_path / "lib.safetensors"))
    assert (tmp_path / "ours.safetensors").read_bytes() == (tmp_path / "lib.safetensors").read_bytes()


def test_data_phase_follows_the_most_copied_bytes():
    infos = [TensorInfo("a", (1024,), "float32"), TensorInfo("b", (10,), "float32"), TensorInfo("c", (4,), "uint8")]
    assert st.data_phase(infos, {}) is None
    # a: 4096 bytes at data offset 0 wants the area at 104; b (40 bytes at 4096) wants 16 - 4096 = 16 mod 4096
    assert st.data_phase(infos, {"a": 104, "b": 16}) == 104
    assert st.data_phase(infos, {"b": 16}) == 16
    # a phase that would break the data area's 8-byte alignment is never chosen
    assert st.data_phase(infos, {"a": 101}) is None
    assert st.data_phase(infos, {"a": 101, "b": 24}) == 24
    blob, _ = st.header_bytes(infos, None, {"a": 104})
    assert len(blob) % 4096 == 104
