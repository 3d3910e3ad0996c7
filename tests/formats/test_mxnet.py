"""MXNet .params: our reader and writer against MXNet's nd.load/nd.save (oracle), and hostile input."""

from __future__ import annotations

import random
import struct
import subprocess
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from conftest import fixture_file
from mxnet_oracle import run

from mapspec.errors import FormatError, MapspecError
from mapspec.formats import TensorInfo, detect, open_checkpoint
from mapspec.formats import mxnet as mxp
from mapspec.formats import mxnet_symbol as ms
from mapspec.frameworks.mxnet import graph as mxg

DATA = Path(__file__).resolve().parents[1] / "data" / "mxnet"
MFN = "mobilefacenet-mxnet/model_mobilefacenet"


def mx_load(python: str, path, tmp: Path, np_semantics: bool = False) -> list:
    """[(stored name, dtype name, shape, raw bytes)] as MXNet's own loader sees the file."""
    out = tmp / (Path(path).name + ".seen.npz")
    run(python, "nd_load.py", path, out, *(["--np"] if np_semantics else []))
    d = np.load(out)
    return [(str(d[f"name{i}"]), str(d[f"dtype{i}"]), tuple(int(x) for x in d[f"shape{i}"]),
             d[f"bytes{i}"].tobytes()) for i in range(int(d["count"]))]


def mx_save(python: str, arrays: dict, dest: Path, *flags: str) -> Path:
    src = dest.with_suffix(".in.npz")
    np.savez(src, **arrays)
    run(python, "nd_save.py", src, dest, *flags)
    return dest


def le_bytes(a: np.ndarray) -> bytes:
    a = np.ascontiguousarray(a)
    if a.dtype.itemsize > 1 and a.dtype.byteorder == ">":
        a = a.byteswap().view(a.dtype.newbyteorder("<"))
    return a.tobytes()


# -- the real MobileFaceNet checkpoint ---------------------------------------------------

def test_fixture_structure():
    r = mxp.open(str(fixture_file(MFN + "-0200.params")))
    infos = r.infos()
    assert len(infos) == 284
    prefixes = [i.meta["prefix"] for i in infos.values()]
    assert prefixes.count("arg") == 184 and prefixes.count("aux") == 100
    assert all(h.version == "v2" for h in r.headers.values())
    assert infos["conv_1_conv2d_weight"].shape == (64, 3, 3, 3)
    assert infos["fc1_moving_var"].meta == {"prefix": "aux"}
    w = r.read("conv_1_conv2d_weight")
    assert w.dtype == np.float32 and not w.flags.writeable and not w.flags.owndata  # a view over the map
    assert detect(fixture_file(MFN + "-0200.params")) == "mxnet"


def test_fixture_matches_mxnet_nd_load(mxnet_python, tmp_path):
    path = fixture_file(MFN + "-0200.params")
    seen = mx_load(mxnet_python, path, tmp_path)
    r = mxp.open(str(path))
    assert len(seen) == 284
    for (full, dtype, shape, raw), (name, info) in zip(seen, r.infos().items()):
        assert full == r.raw_names[name] == f"{info.meta['prefix']}:{name}"
        assert (info.dtype, info.shape) == (dtype, shape)
        assert le_bytes(r.read(name)) == raw, name


def test_fixture_attrs_from_sibling_symbol(tmp_path):
    r = mxp.open(str(fixture_file(MFN + "-0200.params")))
    assert r.symbol_path().endswith("model_mobilefacenet-symbol.json")
    fc1 = r.attrs("fc1")
    assert fc1["op"] == "BatchNorm" and fc1["eps"] == 2e-5 and fc1["fix_gamma"] is True
    assert r.attrs("conv_1_batchnorm")["eps"] == 1e-3
    assert "fc1" in r.nodes() and len(r.nodes()) == 147
    no_sym = mxp.open(str(fixture_file(MFN + "-0200.params")), symbol=False)
    assert no_sym.nodes() == []
    with pytest.raises(FormatError, match="symbol=PATH"):
        no_sym.attrs("fc1")
    explicit = mxp.open(str(fixture_file(MFN + "-0200.params")), symbol=str(DATA / "legacy-symbol.json"))
    assert explicit.attrs("conv0")["num_filter"] == 8
    missing = mxp.open(str(fixture_file(MFN + "-0200.params")), symbol=str(tmp_path / "nope-symbol.json"))
    with pytest.raises(FormatError, match="no such symbol file"):
        missing.attrs("fc1")


def test_fixture_round_trip_is_byte_identical(tmp_path):
    """Reading and writing back (prefixes from the reader's meta) reproduces MXNet's file exactly."""
    src = fixture_file(MFN + "-0200.params")
    r = mxp.open(str(src))
    out = tmp_path / "copy.params"
    w = mxp.create(str(out), list(r.infos().values()))
    for name in r.names():
        w.write(name, r.read(name))
    w.close()
    assert out.read_bytes() == src.read_bytes()


# -- our writer -> MXNet, MXNet's writer -> us -----------------------------------------------

def _sample() -> dict:
    return {
        "conv_weight": np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2) / 7,
        "conv_bias": np.arange(2, dtype=np.float64) - 0.5,
        "bn_gamma": np.arange(5, dtype=np.float16) * 1.25,
        "bn_moving_mean": np.arange(5, dtype=np.float32) * -3,
        "bn_moving_var": np.arange(1, 6, dtype=np.float32),
        "ids": np.arange(-3, 3, dtype=np.int8),
        "pixels": np.arange(250, 256, dtype=np.uint8),
        "counts": np.arange(6, dtype=np.int32).reshape(2, 3) * 1000003,
        "big": np.arange(4, dtype=np.int64) * (1 << 40),
        "mask": np.array([True, False, True]),
        "empty": np.zeros((2, 0), dtype=np.float32),
        "transposed": np.arange(12, dtype=np.float32).reshape(3, 4).T,  # not C-contiguous
        "bf": (np.arange(6, dtype=np.float32) / 3).astype(ml_dtypes.bfloat16),
    }


def test_our_writer_is_read_by_mxnet(mxnet_python, tmp_path):
    arrays = _sample()
    out = tmp_path / "ours.params"
    mxp.save(str(out), arrays)
    seen = mx_load(mxnet_python, out, tmp_path)
    assert [s[0] for s in seen] == [("aux:" if k.endswith(("_moving_mean", "_moving_var")) else "arg:") + k
                                    for k in arrays]
    for (full, dtype, shape, raw), (name, a) in zip(seen, arrays.items()):
        assert dtype == ("bfloat16" if name == "bf" else a.dtype.name) and shape == a.shape, name
        assert raw == le_bytes(a), name


def test_mxnet_writer_is_read_by_us(mxnet_python, tmp_path):
    arrays = {k: v for k, v in _sample().items() if k != "bf"}
    arrays["arg:half@bfloat16"] = np.arange(4, dtype=np.float32) * 0.75
    path = mx_save(mxnet_python, {("aux:" if "moving" in k else "arg:") + k if ":" not in k else k: v
                                  for k, v in arrays.items()}, tmp_path / "theirs.params")
    r = mxp.open(str(path))
    for key, a in arrays.items():
        name = key.split(":")[-1].split("@")[0]
        got = r.read(name)
        if "@bfloat16" in key:
            assert r.info(name).dtype == "bfloat16"
            np.testing.assert_array_equal(got.astype(np.float32), a)  # 0, .75, 1.5, 2.25 are exact in bf16
            continue
        assert got.dtype == a.dtype and got.shape == a.shape, name
        assert le_bytes(got) == le_bytes(a), name
        assert r.info(name).meta["prefix"] == ("aux" if "moving" in name else "arg")


def test_plain_list_from_mxnet(mxnet_python, tmp_path):
    arrays = {"a": np.arange(3, dtype=np.float32), "b": np.arange(4, dtype=np.int64).reshape(2, 2)}
    path = mx_save(mxnet_python, arrays, tmp_path / "list.params", "--list")
    r = mxp.open(str(path))
    assert r.names() == ["0", "1"] and r.info("0").meta == {"prefix": None}
    np.testing.assert_array_equal(r.read("1"), arrays["b"])


@pytest.mark.slow
def test_v3_numpy_semantics_both_ways(mxnet_python, tmp_path):
    arrays = {"scalar": np.array(2.5, dtype=np.float32), "vec": np.arange(3, dtype=np.float64),
              "empty": np.zeros((0, 3), dtype=np.float32)}
    theirs = mx_save(mxnet_python, arrays, tmp_path / "v3.params", "--np")
    r = mxp.open(str(theirs))
    assert {h.version for h in r.headers.values()} == {"v3"}
    for k, a in arrays.items():
        assert r.read(k).shape == a.shape and le_bytes(r.read(k)) == le_bytes(a)
    ours = tmp_path / "ours-v3.params"
    mxp.save(str(ours), arrays, version=3, prefixes=False)
    seen = mx_load(mxnet_python, ours, tmp_path, np_semantics=True)
    assert [(s[0], s[2], s[3]) for s in seen] == [(k, a.shape, le_bytes(a)) for k, a in arrays.items()]
    with pytest.raises(FormatError, match="0-d"):
        mxp.save(str(tmp_path / "v2.params"), {"scalar": np.array(1.0, dtype=np.float32)})


def _legacy_file(version: str, arrays: list) -> bytes:
    """A pre-V2 file built by hand from the layout in ndarray.cc (LegacyLoad): the oracle checks it."""
    out = struct.pack("<QQQ", 0x112, 0, len(arrays))
    for a in arrays:
        if version == "v1":
            out += struct.pack("<Ii", 0xF993FAC8, a.ndim) + struct.pack(f"<{a.ndim}q", *a.shape)
        else:
            out += struct.pack(f"<{a.ndim + 1}I", a.ndim, *a.shape)
        out += struct.pack("<iii", 1, 0, {np.float32: 0, np.int32: 4}[a.dtype.type]) + le_bytes(a)
    names = [b"arg:w", b"aux:s"]
    return out + struct.pack("<Q", len(names)) + b"".join(struct.pack("<Q", len(n)) + n for n in names)


@pytest.mark.parametrize("version", ["v1", "legacy"])
def test_legacy_headers(mxnet_python, tmp_path, version):
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5, np.arange(4, dtype=np.int32)]
    p = tmp_path / f"{version}.params"
    p.write_bytes(_legacy_file(version, arrays))
    seen = mx_load(mxnet_python, p, tmp_path)  # MXNet itself accepts the hand-built file ...
    assert [(s[0], s[2], s[3]) for s in seen] == [("arg:w", (2, 3), le_bytes(arrays[0])),
                                                  ("aux:s", (4,), le_bytes(arrays[1]))]
    r = mxp.open(str(p))  # ... and so do we, identically
    assert {h.version for h in r.headers.values()} == {version}
    np.testing.assert_array_equal(r.read("w"), arrays[0])
    np.testing.assert_array_equal(r.read("s"), arrays[1])
    assert r.info("s").meta == {"prefix": "aux"}


def test_sparse_arrays_are_refused(mxnet_python, tmp_path):
    script = tmp_path / "sparse.py"
    p = tmp_path / "sparse.params"
    script.write_text("import sys, mxnet as mx\n"
                      "mx.nd.save(sys.argv[1], {'arg:dense': mx.nd.ones((2, 2)),\n"
                      "  'arg:rows': mx.nd.sparse.row_sparse_array(([[1, 2]], [1]), shape=(3, 2))})\n")
    subprocess.run([mxnet_python, str(script), str(p)], check=True, capture_output=True, timeout=300)
    with pytest.raises(FormatError, match="row_sparse"):
        mxp.open(str(p))


# -- prefixes -----------------------------------------------------------------------------

def _names_written(tmp_path, infos, **options) -> list:
    p = tmp_path / "n.params"
    w = mxp.create(str(p), infos, **options)
    for i in infos:
        w.write(i.name, np.zeros(i.shape, np.float32))
    w.close()
    return list(mxp.open(str(p)).raw_names.values())


def test_prefix_rules(tmp_path):
    t = lambda name, meta=None: TensorInfo(name, (1,), "float32", meta)  # noqa: E731
    # 4. by name suffix
    assert _names_written(tmp_path, [t("bn_moving_mean"), t("bn_running_var"), t("bn_gamma")]) == [
        "aux:bn_moving_mean", "aux:bn_running_var", "arg:bn_gamma"]
    # 2. meta wins over the suffix; 1. an explicit prefix wins over everything
    assert _names_written(tmp_path, [t("bn_moving_mean", {"prefix": "arg"}), t("aux:odd", {"prefix": "arg"})]) == [
        "arg:bn_moving_mean", "aux:odd"]
    # 3. the template's aux states, whatever they are called
    tpl = DATA / "custom-aux-symbol.json"
    names = [t("stats_a"), t("stats_b"), t("norm_g"), t("not_in_template_moving_var")]
    assert _names_written(tmp_path, names, template=str(tpl)) == [
        "aux:stats_a", "aux:stats_b", "arg:norm_g", "aux:not_in_template_moving_var"]
    assert _names_written(tmp_path, names[:2], template=mxg.load_symbol(tpl)) == ["aux:stats_a", "aux:stats_b"]
    assert _names_written(tmp_path, names[:2], template=ms.open(str(tpl))) == ["aux:stats_a", "aux:stats_b"]
    # bare names (Gluon style)
    assert _names_written(tmp_path, [t("a_moving_mean"), t("b")], prefixes=False) == ["a_moving_mean", "b"]
    with pytest.raises(MapspecError, match="both be saved as"):
        mxp.create(str(tmp_path / "x.params"), [t("arg:a"), t("a")])


def test_prefix_collision_on_read(tmp_path):
    p = tmp_path / "dup.params"
    mxp.save(str(p), {"arg:x": np.zeros(1, np.float32), "aux:x": np.ones(1, np.float32)})
    with pytest.raises(FormatError, match="two arrays have the name 'x'"):
        mxp.open(str(p))


def test_writer_contract(tmp_path):
    infos = [TensorInfo("a", (2,), "float32"), TensorInfo("b", (3,), None)]
    w = mxp.create(str(tmp_path / "w.params"), infos)
    with pytest.raises(MapspecError, match="out of order"):
        w.write("b", np.zeros(3, np.float32))
    w.abort()
    w = mxp.create(str(tmp_path / "w.params"), infos)
    with pytest.raises(MapspecError, match="announced as float32"):
        w.write("a", np.zeros(2, np.float64))
    w.abort()
    with pytest.raises(FormatError, match="cannot load int16"):
        mxp.create(str(tmp_path / "w.params"), [TensorInfo("a", (2,), "int16")])
    with pytest.raises(FormatError, match="has no type for float8_e4m3fn"):
        mxp.create(str(tmp_path / "w.params"), [TensorInfo("a", (2,), "float8_e4m3fn")])
    with pytest.raises(MapspecError, match="version"):
        mxp.create(str(tmp_path / "w.params"), infos, version=1)
    # dtype None is float32, as MXNet's default
    p = tmp_path / "ok.params"
    w = mxp.create(str(p), infos)
    w.write("a", np.arange(2, dtype=np.float32))
    w.write("b", np.arange(3, dtype=np.float32))
    w.close()
    assert open_checkpoint(p).info("b").dtype == "float32"


def test_reader_reads_mxnet2_int_types(tmp_path):
    """int16..uint64 (flags 8-11) are read (MXNet 2 writes them) though the writer refuses them."""
    a = np.arange(5, dtype=np.uint16) * 1000
    raw = (struct.pack("<QQQ", 0x112, 0, 1) + struct.pack("<Iiiq", 0xF993FAC9, 0, 1, 5)
           + struct.pack("<iii", 1, 0, 9) + a.tobytes() + struct.pack("<Q", 0))
    p = tmp_path / "u16.params"
    p.write_bytes(raw)
    np.testing.assert_array_equal(mxp.open(str(p)).read("0"), a)


# -- hostile input --------------------------------------------------------------------------

def _small_file(tmp_path) -> bytes:
    p = tmp_path / "small.params"
    mxp.save(str(p), {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "s_moving_var": np.arange(2, dtype=np.int64),
                      "e": np.zeros((0, 2), np.float16)})
    return p.read_bytes()


def _open_and_read(path) -> None:
    r = mxp.open(str(path))
    for name in r.names():
        r.read(name).sum()
    r.close()


def test_every_truncation_is_a_format_error(tmp_path):
    raw = _small_file(tmp_path)
    p = tmp_path / "t.params"
    for n in range(len(raw)):
        p.write_bytes(raw[:n])
        with pytest.raises(FormatError):
            _open_and_read(p)


@pytest.mark.slow
def test_fixture_truncations(tmp_path):
    raw = fixture_file(MFN + "-0200.params").read_bytes()
    rng = random.Random(3)
    cuts = list(range(0, 200)) + rng.sample(range(len(raw)), 150) + list(range(len(raw) - 300, len(raw)))
    p = tmp_path / "t.params"
    for n in cuts:
        p.write_bytes(raw[:n])
        with pytest.raises(FormatError):
            _open_and_read(p)


def test_every_flipped_byte_is_handled(tmp_path):
    """Flip each byte of a small file: either a FormatError or a file that reads (a flipped value)."""
    raw = _small_file(tmp_path)
    p = tmp_path / "f.params"
    errors = 0
    for i in range(len(raw)):
        for mask in (0xFF, 0x01, 0x80):
            b = bytearray(raw)
            b[i] ^= mask
            p.write_bytes(bytes(b))
            try:
                _open_and_read(p)
            except FormatError:
                errors += 1
    assert errors > len(raw)  # most header bytes matter


@pytest.mark.parametrize("patch, message", [
    (lambda b: b[:16] + struct.pack("<Q", 1 << 62) + b[24:], "array count"),
    (lambda b: b[:32] + struct.pack("<i", 1 << 30) + b[36:], "claims 1073741824 dimensions"),
    (lambda b: b[:32] + struct.pack("<i", -7) + b[36:], "claims -7 dimensions"),
    (lambda b: b[:36] + struct.pack("<q", 1 << 62) + b[44:], "needs bytes"),
    (lambda b: b[:36] + struct.pack("<q", -2) + b[44:], "negative"),
    (lambda b: b[:52] + struct.pack("<ii", 7, 0) + b[60:], "device"),
    (lambda b: b[:60] + struct.pack("<i", 99) + b[64:], "type flag 99"),
    (lambda b: b[:60] + struct.pack("<i", -1) + b[64:], "type flag -1"),
    (lambda b: b[:28] + struct.pack("<i", 1) + b[32:], "row_sparse"),
    (lambda b: b[:28] + struct.pack("<i", 5) + b[32:], "unknown storage type 5"),
    (lambda b: b[:24] + struct.pack("<I", 0xDEADBEEF) + b[28:], "neither an NDArray magic"),
    (lambda b: struct.pack("<Q", 0x113) + b[8:], "list magic"),
    (lambda b: b[:8] + struct.pack("<Q", 1) + b[16:], "reserved"),
    (lambda b: b[:-13] + struct.pack("<Q", 1 << 60) + b[-5:], "name #1 claims"),
    (lambda b: b[:-3] + b"\xff\xfe\xfd", "not UTF-8"),
    (lambda b: b[:32] + struct.pack("<i", 0) + b[36:], "'none' NDArray"),
])
def test_absurd_headers(tmp_path, patch, message):
    """Header fields of a two-array file (w: 2x3 float32 first; names last) replaced by absurd values."""
    p = tmp_path / "h.params"
    mxp.save(str(p), {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.arange(3, dtype=np.float32)})
    raw = p.read_bytes()
    # Offsets: 24 magic | 28 stype | 32 ndim | 36 dims (2 x i64) | 52 dev_type, dev_id | 60 flag | 64 data.
    assert struct.unpack_from("<Iiiqqiii", raw, 24) == (0xF993FAC9, 0, 2, 2, 3, 1, 0, 0)
    assert raw.endswith(b"arg:b")
    p.write_bytes(patch(raw))
    with pytest.raises(FormatError, match=message):
        _open_and_read(p)


def test_not_a_params_file(tmp_path):
    p = tmp_path / "x.params"
    p.write_bytes(b"hello")
    with pytest.raises(FormatError, match="24-byte header"):
        mxp.open(str(p))
    assert not mxp.sniff(str(p), b"hello")
