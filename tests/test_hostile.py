"""Targeted hostile-input tests: what a crafted or damaged file or spec must never do.

* Truncations and bit flips of valid files from every writer: accepted or a FormatError.
* Absurd claims (shapes far beyond the file, negative dims, unknown dtype codes, huge
  header lengths, overlapping data): refused with a FormatError, before any allocation
  (peak traced memory stays small).
* ``torch.load`` safety: a pickle that would run code is refused; the marker it would
  create never appears, also through ``mapspec inspect``.
* YAML: Python tags, billion laughs, recursive aliases, deep nesting, a 100 MB spec: one
  SpecError each, quickly.
* Atomic output of ``mapspec apply``: an interrupt or an error mid-way leaves no temporary
  file and an existing output byte-identical; exit 130/1 with a one-line message; no
  overwrite without ``--force``.
* Paths: a spec's template/include paths resolve relative to the spec file; no spec key
  can choose where mapspec writes.
* A guard: no ``eval``/``exec``/``yaml.load``/``pickle.load``/``weights_only=False`` in mapspec.
"""

from __future__ import annotations

import errno
import io
import json
import os
import random
import struct
import subprocess
import sys
import time
import tokenize
import zipfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import ml_dtypes  # noqa: E402,F401  (registers "bfloat16" with numpy: mapspec loads it lazily)
import pytest  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fuzz import harness  # noqa: E402
from fuzz.targets import TARGETS  # noqa: E402
from mapspec import cli  # noqa: E402
from mapspec.errors import FormatError, SpecError  # noqa: E402
from mapspec.formats import module, open_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SMALL_PEAK = 32 << 20  # bytes: what refusing a tiny hostile file may allocate at most


def _ar(shape, dtype="float32", start=0) -> np.ndarray:
    n = int(np.prod(shape)) if shape else 1
    return (np.arange(start, start + n) % 251).astype(dtype).reshape(shape)


def judge(target: str, path: Path, product: bool = True, timeout: float = 20.0, track_memory: bool = True):
    return harness.run_file(TARGETS[target], path, timeout=timeout, product=product, track_memory=track_memory)


def assert_refused(target: str, path: Path, match: str = "") -> str:
    """The file is refused with a FormatError (whose message contains ``match``), in small memory."""
    v = judge(target, path)
    assert v.status == "rejected" and v.detail.startswith("FormatError"), f"{path.name}: {v.status}: {v.detail}\n" \
                                                                           f"{v.trace}"
    assert match.lower() in v.detail.lower(), v.detail
    return v.detail


def assert_safe(target: str, path: Path, product: bool = True) -> harness.Verdict:
    """Accepted, or refused with a FormatError; nothing else."""
    v = judge(target, path, product=product, track_memory=False)
    assert not v.bug, f"{path.name}: {v.detail}\n{v.trace}"
    if v.status == "rejected":
        assert v.detail.startswith("FormatError"), v.detail
    return v


# -- valid files from every writer -------------------------------------------------------

def _caffe_tensors() -> dict:
    return {"conv1[0]": _ar((4, 3, 3, 3)), "conv1[1]": _ar((4,), start=7), "fc[0]": _ar((5, 4), "float64")}


WRITERS = {
    # format -> (file name, tensors)
    "npz": ("m.npz", lambda: {"conv.weight": _ar((4, 3, 2, 2)), "conv.bias": _ar((4,), "float16"),
                              "steps": _ar((), "int64")}),
    "safetensors": ("m.safetensors", lambda: {"conv.weight": _ar((4, 3, 2, 2)), "b": _ar((4,), "bfloat16"),
                                              "i": _ar((3,), "int8")}),
    "torch": ("m.pt", lambda: {"conv.weight": _ar((4, 3, 2, 2)), "conv.bias": _ar((4,), "float64")}),
    "mxnet": ("m-0001.params", lambda: {"conv_weight": _ar((4, 3, 2, 2)), "bn_moving_mean": _ar((4,)),
                                        "emb": _ar((3, 2), "int8")}),
    "caffe": ("m.caffemodel", _caffe_tensors),
    "keras": ("m.h5", lambda: {"conv1/kernel": _ar((2, 2, 3, 4)), "conv1/bias": _ar((4,)),
                               "dense/kernel": _ar((4, 2), "float64")}),
    # the last tensor fills its 32-byte alignment unit: no padding after it that a cut could lose unnoticed
    "gguf": ("m.gguf", lambda: {"blk.0.attn_q.weight": _ar((4, 3)), "norm": _ar((5,), "float16"),
                                "last": _ar((8,))}),
}


def _needs(fmt: str) -> None:
    why = TARGETS[fmt].available()
    if why:
        pytest.skip(why)


def write_valid(fmt: str, directory: Path) -> Path:
    _needs(fmt)
    name, make = WRITERS[fmt]
    path = directory / name
    module(fmt).save(str(path), make())
    return path


def _positions(n: int, count: int, seed: int) -> list:
    """Deterministic spread of byte positions: both ends densely, the middle sampled."""
    rng = random.Random(seed)
    fixed = set(range(min(n, 40))) | set(range(max(0, n - 40), n))
    sampled = set(rng.sample(range(n), min(n, count)))
    return sorted(fixed | sampled)


def _mutants(path: Path, out: Path, seed: int, count: int) -> list:
    """Truncations at many offsets and single-bit flips of ``path``, written into ``out``."""
    data = path.read_bytes()
    rng = random.Random(seed)
    files = []
    for i, cut in enumerate(_positions(len(data), count, seed)):
        p = out / f"trunc{i:04d}{''.join(path.suffixes)}"
        p.write_bytes(data[:cut])
        files.append(p)
    for i, pos in enumerate(_positions(len(data), count, seed + 1)):
        b = bytearray(data)
        b[pos] ^= 1 << rng.randrange(8)
        p = out / f"flip{i:04d}{''.join(path.suffixes)}"
        p.write_bytes(bytes(b))
        files.append(p)
    return files


@pytest.mark.parametrize("fmt", [f for f in WRITERS if f != "keras"])
def test_truncations_and_bit_flips(fmt, tmp_path):
    valid = write_valid(fmt, tmp_path)
    assert judge(fmt, valid).status == "accepted"
    mutants_dir = tmp_path / "mutants"
    mutants_dir.mkdir()
    files = _mutants(valid, mutants_dir, seed=11, count=120)
    verdicts = {"accepted": 0, "rejected": 0}
    for f in files:
        v = assert_safe(fmt, f)
        verdicts[v.status] += 1
    # Cutting off the end of these formats loses something that says what the file holds.
    for f in files:
        if f.name.startswith("trunc") and fmt != "caffe":  # a caffemodel cut between layers is a valid net
            assert judge(fmt, f, track_memory=False).status == "rejected", f.name
    assert verdicts["rejected"] > len(files) // 4, verdicts


def test_keras_truncations_and_bit_flips(tmp_path):
    """The HDF5 library is C: the mutants are parsed in one child process (in-process parsing, as
    the fuzz target does); a crash of that process fails the test, naming the file."""
    valid = write_valid("keras", tmp_path)
    mutants_dir = tmp_path / "mutants"
    mutants_dir.mkdir()
    files = _mutants(valid, mutants_dir, seed=12, count=60)
    cmd = [sys.executable, str(ROOT / "tests" / "fuzz" / "driver.py"), "replay", "--target", "keras", "--json",
           *map(str, files)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode in (0, 1), f"replay process died ({done.returncode}) after {len(rows)} files:\n" \
                                      f"{done.stderr[-2000:]}"
    assert len(rows) == len(files)
    bad = [r for r in rows if r["status"] == "bug" or (r["status"] == "rejected"
                                                        and not r["detail"].startswith("FormatError"))]
    assert not bad, bad[:3]
    assert sum(r["status"] == "rejected" for r in rows) > len(rows) // 4


def test_keras_product_path_refuses_a_truncation(tmp_path):
    """The shipped reader parses in a child process first (isolate=True): same verdict."""
    valid = write_valid("keras", tmp_path)
    cut = tmp_path / "cut.h5"
    cut.write_bytes(valid.read_bytes()[: valid.stat().st_size // 2])
    assert_refused("keras", cut)


# -- absurd claims -----------------------------------------------------------------------

def _npz_with_member(path: Path, header: str, body: bytes, version: int = 1, name: str = "x.npy",
                     compress: int = zipfile.ZIP_STORED) -> Path:
    h = header.encode("latin1", "replace")
    pre = b"\x93NUMPY" + bytes([version, 0]) + (struct.pack("<H", len(h)) if version == 1 else
                                                  struct.pack("<I", len(h)))
    with zipfile.ZipFile(path, "w", compression=compress) as z:
        z.writestr(name, pre + h + body)
    return path


@pytest.mark.parametrize("header,match", [
    ("{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,), }", "header says"),
    ("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", "bad shape"),
    ("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4611686018427387904), }", "overflows"),
    ("{'descr': '<f4', 'fortran_order': False, 'shape': (True, 2), }", "bad shape"),
    ("{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", "pickled object arrays are refused"),
    ("{'descr': '<c16', 'fortran_order': False, 'shape': (1,), }", "unsupported dtype"),
    ("{'descr': 'f4,,', 'fortran_order': False, 'shape': (2,), }", "not a numpy type"),
    ("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'evil': __import__('os'), }", "unreadable"),
])
def test_npz_absurd_headers(tmp_path, header, match):
    _npz_with_member(tmp_path / "a.npz", header, _ar((2,)).tobytes())
    assert_refused("npz", tmp_path / "a.npz", match)


def test_npz_huge_header_length(tmp_path):
    p = tmp_path / "a.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("x.npy", b"\x93NUMPY\x02\x00" + struct.pack("<I", 0xFFFFFF00) + b"{}")
    assert_refused("npz", p, "absurd")


def test_npz_deflate_claim_beyond_deflate(tmp_path):
    """A deflated member whose directory entry claims far more than deflate can expand to (a bomb)."""
    p = tmp_path / "a.npz"
    np.savez_compressed(p, x=_ar((64,)))
    data = bytearray(p.read_bytes())
    cd = data.rfind(b"PK\x01\x02")
    struct.pack_into("<I", data, cd + 24, 0xFFFFFFF0)  # uncompressed size in the central directory
    p.write_bytes(bytes(data))
    assert_refused("npz", p)


def test_npz_duplicate_member_names(tmp_path):
    p = tmp_path / "a.npz"
    np.savez(p, x=_ar((3,)))
    second = io.BytesIO()
    np.lib.format.write_array(second, _ar((1,), start=9))
    with zipfile.ZipFile(p, "a") as z, pytest.warns(UserWarning, match="Duplicate name"):
        z.writestr("x.npy", second.getvalue())
    assert_refused("npz", p, "two zip members")


def _safetensors(path: Path, header, data: bytes = b"", length=None) -> Path:
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


@pytest.mark.parametrize("header,data,length,match", [
    ({"x": {"dtype": "F32", "shape": [1000000000000], "data_offsets": [0, 8]}}, 8, None, "needs"),
    ({"x": {"dtype": "F32", "shape": [1000000, 1000000], "data_offsets": [0, 4000000000000]}}, 8, None,
     "past the end"),
    ({"x": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, 4, None, "non-negative"),
    ({"x": {"dtype": "X9", "shape": [1], "data_offsets": [0, 4]}}, 4, None, "unknown"),
    ({"x": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, 8, None, "not supported"),
    ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "y": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, 12, None, "overlap"),
    ({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, 4, 1 << 63, "exceeds"),
    ({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, 4, 50_000_000, "past the end"),
])
def test_safetensors_absurd_claims(tmp_path, header, data, length, match):
    _needs("safetensors")
    p = _safetensors(tmp_path / "a.safetensors", header, bytes(data), length)
    assert_refused("safetensors", p, match)


def _params(arrays: list, names=None) -> bytes:
    out = struct.pack("<QQQ", 0x112, 0, len(arrays)) + b"".join(arrays)
    names = names or []
    out += struct.pack("<Q", len(names)) + b"".join(struct.pack("<Q", len(n)) + n for n in names)
    return out


def _v2(dims, flag=0, data=b"") -> bytes:
    return (struct.pack("<Iii", 0xF993FAC9, 0, len(dims)) + struct.pack(f"<{len(dims)}q", *dims)
            + struct.pack("<iii", 1, 0, flag) + data)


@pytest.mark.parametrize("raw,match", [
    (struct.pack("<QQQ", 0x112, 0, 1 << 60), "cannot fit"),
    (_params([struct.pack("<Iii", 0xF993FAC9, 0, 1000)]), "dimensions"),
    (_params([_v2((-1, 4), data=b"\0" * 16)]), "negative"),
    (_params([_v2((1 << 40, 1 << 10), data=b"\0" * 16)]), "needs bytes"),
    (_params([_v2((0, 1 << 62))]), "overflows"),
    (_params([_v2((2,), flag=99, data=b"\0" * 8)]), "type flag 99"),
    (_params([_v2((2,), data=b"\0" * 8)], [b"a"]) [:-9] + struct.pack("<Q", 1 << 62) + b"a", "claims"),
    (_params([_v2((2,), data=b"\0" * 8)], [b"a", b"b"]), "name count"),
    (_params([_v2((2,), data=b"\0" * 8), _v2((2,), data=b"\0" * 8)], [b"arg:a", b"aux:a"]), "two arrays"),
])
def test_mxnet_absurd_claims(tmp_path, raw, match):
    p = tmp_path / "a.params"
    p.write_bytes(raw)
    assert_refused("mxnet", p, match)


_I64 = st.integers(-(1 << 63), (1 << 63) - 1)


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(dims=st.lists(st.one_of(_I64, st.integers(-2, 70000)), max_size=5), flag=st.integers(-3, 14),
       data_len=st.integers(0, 64), magic=st.sampled_from([0xF993FAC9, 0xF993FACA, 0xF993FAC8]))
def test_mxnet_any_header_values(tmp_path_factory, dims, flag, data_len, magic):
    """Structure-aware property test: any integers in an array header give a clean verdict, and
    an accepted file holds exactly the bytes its header claims."""
    if magic == 0xF993FAC8:
        head = struct.pack("<Ii", magic, len(dims))
    else:
        head = struct.pack("<Iii", magic, 0, len(dims))
    body = head + struct.pack(f"<{len(dims)}q", *dims) + struct.pack("<iii", 1, 0, flag) + b"\x07" * data_len
    p = tmp_path_factory.mktemp("mx") / "h.params"
    p.write_bytes(_params([body]))
    v = judge("mxnet", p, track_memory=False)
    assert not v.bug, v.detail + v.trace
    if v.status == "accepted":
        from mapspec.formats.mxnet import TYPE_FLAGS
        from mapspec import dtypes

        assert int(np.prod(dims, dtype=object)) * dtypes.itemsize(TYPE_FLAGS[flag]) == data_len


_NPY_VALUES = st.one_of(st.integers(-(1 << 64), 1 << 64), st.booleans(), st.none(), st.floats(allow_nan=False),
                        st.text(max_size=6), st.sampled_from(["<f4", ">f8", "|b1", "<c8", "|O", "V3", "<U2", "f4,,"]))


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(descr=_NPY_VALUES, fortran=_NPY_VALUES,
       shape=st.one_of(st.lists(_NPY_VALUES, max_size=4).map(tuple), _NPY_VALUES),
       data_len=st.integers(0, 48))
def test_npz_any_header_values(tmp_path_factory, descr, fortran, shape, data_len):
    header = repr({"descr": descr, "fortran_order": fortran, "shape": shape})
    p = _npz_with_member(tmp_path_factory.mktemp("npz") / "a.npz", header, b"\x03" * data_len)
    v = judge("npz", p, track_memory=False)
    assert not v.bug, v.detail + v.trace


def _varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _field(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _caffemodel(blob: bytes) -> bytes:
    layer = _field(1, b"conv") + _field(2, b"Convolution") + _field(7, blob)
    return _field(1, b"net") + _field(100, layer)


def _blob(dims, floats: int) -> bytes:
    shape = _field(1, b"".join(_varint(d) for d in dims))
    return _field(7, shape) + _field(5, struct.pack(f"<{floats}f", *range(floats)))


@pytest.mark.parametrize("raw", [
    pytest.param(_caffemodel(_blob([1000000, 1000000], 4)), id="shape-beyond-data"),
    pytest.param(_caffemodel(_blob([-5, 2], 4)), id="negative-dim"),
    pytest.param(_caffemodel(_blob([0, 1 << 62, 4], 0)), id="overflowing-empty-shape"),
    pytest.param(_field(1, b"net") + _varint(100 << 3 | 2) + _varint(1 << 40) + b"\0" * 8, id="layer-length-huge"),
    pytest.param(_caffemodel(_field(7, _field(1, _varint(4))) + _varint(5 << 3 | 2) + _varint(1 << 40)
                             + b"\0" * 16), id="data-length-huge"),
])
def test_caffe_absurd_claims(tmp_path, raw):
    _needs("caffe")
    p = tmp_path / "a.caffemodel"
    p.write_bytes(raw)
    assert_refused("caffe", p)


def _torch_rewrite(src: Path, dst: Path, edit) -> Path:
    """Copy a torch zip checkpoint record by record through torch's own writer, editing data.pkl."""
    import torch

    with zipfile.ZipFile(src) as z:
        records = [(n.split("/", 1)[1], z.read(n)) for n in z.namelist()]
    w = torch._C.PyTorchFileWriter(str(dst))
    for name, data in records:
        if name in ("version", ".data/serialization_id"):  # the writer adds these itself
            continue
        if name == "data.pkl":
            new = edit(data)
            assert new != data, "the edit did not apply"
            data = new
        w.write_record(name, data, len(data))
    w.write_end_of_file()
    return dst


@pytest.mark.parametrize("old,new", [
    pytest.param(b"J" + struct.pack("<i", 70000) + b"K\x01", b"J" + struct.pack("<i", 0x7FFFFFFF) + b"K\x01",
                 id="size-beyond-storage"),
    pytest.param(b"J" + struct.pack("<i", 70000) + b"K\x01", b"J" + struct.pack("<i", -5) + b"K\x01",
                 id="negative-size"),
    pytest.param(b"K\x01K\x01\x86", b"K\x00K\x00\x86", id="zero-strides-claim"),
])
def test_torch_absurd_claims(tmp_path, old, new):
    _needs("torch")
    import torch

    src = tmp_path / "src.pt"
    torch.save({"w": torch.arange(70000, dtype=torch.float32).reshape(70000, 1)}, src)
    p = _torch_rewrite(src, tmp_path / "a.pt", lambda d: d.replace(old, new))
    v = judge("torch", p)
    assert not v.bug, v.detail + v.trace
    if v.status == "accepted":  # strides of 0 are a legal view: it must still describe its real size
        r = open_checkpoint(str(p))
        assert r.infos()["w"].shape == (70000, 1)
        r.close()


def test_torch_legacy_storage_size_beyond_file(tmp_path):
    _needs("torch")
    import torch

    p = tmp_path / "leg.pt"
    values = torch.arange(1000, dtype=torch.float32)
    torch.save({"w": values}, p, _use_new_zipfile_serialization=False)
    data = p.read_bytes()
    at = data.find(struct.pack("<q", 1000) + values.numpy().tobytes()[:8])
    assert at > 0
    p.write_bytes(data[:at] + struct.pack("<q", 1 << 40) + data[at + 8:])
    assert_refused("torch", p)


def test_keras_absurd_claims(tmp_path):
    _needs("keras")
    import h5py

    def legacy(path: Path, make) -> Path:
        with h5py.File(path, "w") as f:
            f.attrs["layer_names"] = np.array([b"d"])
            g = f.create_group("d")
            g.attrs["weight_names"] = np.array([b"d/kernel:0"])
            make(g)
        return path

    # A 4 TB dataset of unallocated chunks in a tiny file.
    assert_refused("keras", legacy(tmp_path / "bomb.h5", lambda g: g.create_dataset(
        "d/kernel:0", shape=(1 << 20, 1 << 20), dtype="f4", chunks=(64, 64))), "refused")
    # A dtype no checkpoint has.
    assert_refused("keras", legacy(tmp_path / "complex.h5", lambda g: g.create_dataset(
        "d/kernel:0", data=np.ones(3, np.complex64))))
    # Data in another file.
    ext = tmp_path / "outside.bin"
    ext.write_bytes(b"\0" * 16)
    assert_refused("keras", legacy(tmp_path / "external.h5", lambda g: g.create_dataset(
        "d/kernel:0", shape=(4,), dtype="f4", external=[(str(ext), 0, 16)])), "external")
    # A link that points elsewhere.
    assert_refused("keras", legacy(tmp_path / "soft.h5", lambda g: g.__setitem__(
        "d/kernel:0", h5py.SoftLink("/elsewhere"))), "link")


# -- torch.load safety -------------------------------------------------------------------

class _Evil:
    """Unpickling this runs ``touch MARKER``."""

    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_files(tmp_path: Path) -> tuple:
    import torch

    marker = tmp_path / "PWNED"
    _Evil.marker = str(marker)
    evil = {"w": torch.arange(3.0), "payload": _Evil()}
    zipped, legacy, plain = tmp_path / "evil.pt", tmp_path / "evil_legacy.pt", tmp_path / "evil.pth"
    torch.save(evil, zipped)
    torch.save(evil, legacy, _use_new_zipfile_serialization=False)
    import pickle

    plain.write_bytes(pickle.dumps(_Evil(), protocol=2))
    return marker, [zipped, legacy, plain]


def test_torch_pickle_that_runs_code_is_refused(tmp_path):
    _needs("torch")
    marker, files = _evil_files(tmp_path)
    for f in files:
        with pytest.raises(FormatError, match="allow-list|weights_only|refuse"):
            open_checkpoint(str(f))
        assert not marker.exists(), f"{f.name} ran code"


@pytest.mark.slow  # a child process imports torch: ~15 s
def test_torch_pickle_that_runs_code_via_cli(tmp_path):
    _needs("torch")
    marker, files = _evil_files(tmp_path)
    for f in files:
        done = subprocess.run([sys.executable, "-m", "mapspec", "inspect", str(f)], capture_output=True, text=True,
                              timeout=300, cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert done.returncode == 1, (done.returncode, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mapspec: error:"), done.stderr
        assert "Traceback" not in done.stderr + done.stdout
        assert not marker.exists(), f"{f.name} ran code through the CLI"


# -- YAML ----------------------------------------------------------------------------------

def _one_spec_error(path: Path, match: str, seconds: float = 5.0) -> SpecError:
    from mapspec.language.load import check_spec

    t0 = time.monotonic()
    spec, errors = check_spec(str(path))
    took = time.monotonic() - t0
    assert took < seconds, f"{path.name}: {took:.1f} s"
    assert len(errors) == 1 and isinstance(errors[0], SpecError), [str(e) for e in errors]
    assert match in str(errors[0]), str(errors[0])
    return errors[0]


def test_yaml_python_tags(tmp_path):
    marker = tmp_path / "PWNED"
    for i, tag in enumerate((f"!!python/object/apply:os.system ['touch {marker}']",
                             f"!!python/object/new:os.system ['touch {marker}']", "!!python/name:os.system",
                             "!!python/module:os")):
        p = tmp_path / f"tag{i}.yaml"
        p.write_text(f"mapspec: 1\nrules: []\nvars:\n  x: {tag}\n")
        _one_spec_error(p, "YAML")
    assert not marker.exists()


def test_yaml_billion_laughs(tmp_path):
    lines = ["mapspec: 1", "rules: []", "vars:", "  a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    p = tmp_path / "laughs.yaml"
    p.write_text("\n".join(lines) + "\n")
    _one_spec_error(p, "expands to more than")


def test_yaml_recursive_alias(tmp_path):
    p = tmp_path / "rec.yaml"
    p.write_text("mapspec: 1\nrules: []\nvars:\n  a: &a [1, *a]\n")
    _one_spec_error(p, "recursive")


@pytest.mark.parametrize("depth", [100, 5000, 200000])
def test_yaml_deep_nesting(tmp_path, depth):
    p = tmp_path / "deep.yaml"
    p.write_text("mapspec: 1\nrules: []\nvars:\n  a: " + "[" * depth + "]" * depth + "\n")
    _one_spec_error(p, "nested")


def test_yaml_deep_nesting_through_aliases(tmp_path):
    """Aliases multiply depth too: 10 levels each, 10 times over."""
    lines = ["mapspec: 1", "rules: []", "vars:", "  l0: &l0 " + "[" * 10 + "]" * 10]
    lines += [f"  l{i}: &l{i} " + "[" * 9 + f"*l{i - 1}" + "]" * 9 for i in range(1, 10)]
    p = tmp_path / "deep_alias.yaml"
    p.write_text("\n".join(lines) + "\n")
    _one_spec_error(p, "nested")


def test_yaml_100mb_spec(tmp_path):
    p = tmp_path / "huge.yaml"
    with open(p, "w") as f:
        f.write("mapspec: 1\nrules: []\n")
        line = "# " + "x" * 1022 + "\n"
        for _ in range(100 * 1024):
            f.write(line)
    assert p.stat().st_size > 100 * 1024 * 1024
    _one_spec_error(p, "limit")


def test_yaml_control_characters(tmp_path):
    p = tmp_path / "bin.yaml"
    p.write_bytes(b"mapspec: 1\nrules: []\nname: a\x04b\n")
    err = _one_spec_error(p, "control character")
    assert (err.line, err.col) == (3, 8)


# -- atomic output ---------------------------------------------------------------------------

@pytest.fixture()
def apply_case(tmp_path):
    """A source with three tensors, a spec copying them, an existing output with known bytes."""
    src = tmp_path / "src.npz"
    module("npz").save(str(src), {f"l{i}.weight": _ar((3, 4), start=i) for i in range(3)})
    spec = tmp_path / "s.yaml"
    spec.write_text('mapspec: 1\nrules:\n  - from: "l<i>.weight"\n    to: "layer{i}.w"\n')
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"the user's precious old output")
    return tmp_path, spec, src, out


def _apply(spec, src, out, *extra) -> tuple:
    o, e = io.StringIO(), io.StringIO()
    rc = cli.run(["apply", str(spec), "--source", str(src), "--output", str(out), *extra], o, e)
    return rc, o.getvalue(), e.getvalue()


def _fail_on_second_write(monkeypatch, exc: BaseException) -> None:
    """The second tensor written fails, whichever way it is written (in order, or at its offset: --jobs)."""
    from mapspec.formats import safetensors as st

    calls = {"n": 0}

    def failing(original):
        def method(self, name, *args):
            calls["n"] += 1
            if calls["n"] == 2:
                raise exc
            return original(self, name, *args)
        return method

    for method in ("write", "write_at", "copy_at"):
        monkeypatch.setattr(st.SafetensorsWriter, method, failing(getattr(st.SafetensorsWriter, method)))


def _leftovers(directory: Path) -> list:
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("exc,code", [
    pytest.param(KeyboardInterrupt(), 130, id="interrupt"),
    pytest.param(FormatError("src.npz", "data is truncated", tensor="l1.weight"), 1, id="format-error"),
    pytest.param(OSError(errno.ENOSPC, "No space left on device"), 1, id="disk-full"),
])
def test_apply_failure_midway_keeps_existing_output(apply_case, monkeypatch, exc, code):
    _needs("safetensors")
    d, spec, src, out = apply_case
    before = out.read_bytes()
    _fail_on_second_write(monkeypatch, exc)
    rc, _, err = _apply(spec, src, out, "--force")
    assert rc == code
    assert len(err.strip().splitlines()) == 1 and err.startswith("mapspec: "), err
    assert out.read_bytes() == before
    assert _leftovers(d) == []


def test_apply_failure_midway_leaves_no_output(apply_case, monkeypatch):
    _needs("safetensors")
    d, spec, src, out = apply_case
    out.unlink()
    _fail_on_second_write(monkeypatch, KeyboardInterrupt())
    rc, _, err = _apply(spec, src, out)
    assert rc == 130 and "interrupted" in err
    assert not out.exists() and _leftovers(d) == []


def test_apply_refuses_to_overwrite_without_force(apply_case):
    _needs("safetensors")
    d, spec, src, out = apply_case
    before = out.read_bytes()
    rc, _, err = _apply(spec, src, out)
    assert rc == 1 and "--force" in err and len(err.strip().splitlines()) == 1
    assert out.read_bytes() == before and _leftovers(d) == []
    rc, _, err = _apply(spec, src, out, "--force")
    assert rc == 0, err
    r = open_checkpoint(str(out))
    np.testing.assert_array_equal(r.read("layer1.w"), _ar((3, 4), start=1))  # independent: arange + 1
    r.close()


# -- paths ---------------------------------------------------------------------------------

def test_spec_paths_are_relative_to_the_spec(tmp_path, monkeypatch):
    from mapspec.language.load import load_spec

    home = tmp_path / "specs"
    (home / "sub").mkdir(parents=True)
    (home / "net.prototxt").write_text('name: "n"\n')
    (home / "sub" / "more.yaml").write_text('mapspec: 1\nrules:\n  - from: "b"\n    to: "b2"\n')
    (home / "main.yaml").write_text('mapspec: 1\ntarget: {format: caffe, template: net.prototxt}\n'
                                    'include: [sub/more.yaml]\nrules:\n  - from: "a"\n    to: "a2"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "net.prototxt").write_text("decoy")
    monkeypatch.chdir(elsewhere)
    spec = load_spec(str(home / "main.yaml"))
    assert spec.target.template == str(home / "net.prototxt")
    assert [os.path.abspath(i) for i in spec.includes] == [str(home / "sub" / "more.yaml")]
    assert [r.to_text for r in spec.rules] == ["a2", "b2"]


@pytest.mark.parametrize("text", [
    "mapspec: 1\noutput: /tmp/x.safetensors\nrules: []\n",
    "mapspec: 1\ntarget: {format: npz, output: /tmp/x.npz}\nrules: []\n",
    "mapspec: 1\ntarget: {format: npz, path: /tmp/x.npz}\nrules: []\n",
    "mapspec: 1\nsource: {format: npz, output: /tmp/x.npz}\nrules: []\n",
])
def test_no_spec_key_chooses_where_mapspec_writes(tmp_path, text):
    p = tmp_path / "s.yaml"
    p.write_text(text)
    _one_spec_error(p, "unknown key")


# -- guard -----------------------------------------------------------------------------------

def _code_tokens(path: Path) -> list:
    """(string, line) of the code tokens of a Python file: comments and string literals left out."""
    skip = (tokenize.COMMENT, tokenize.STRING, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENCODING, tokenize.ENDMARKER)
    skip += tuple(getattr(tokenize, n) for n in ("FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END")
                  if hasattr(tokenize, n))
    with open(path, "rb") as f:
        return [(t.string, t.start[0]) for t in tokenize.tokenize(f.readline) if t.type not in skip]


_FORBIDDEN = (
    (("eval", "("), "eval("), (("exec", "("), "exec("), (("yaml", ".", "load"), "yaml.load"),
    (("yaml", ".", "unsafe_load"), "yaml.unsafe_load"), (("yaml", ".", "full_load"), "yaml.full_load"),
    (("yaml", ".", "Loader"), "yaml.Loader"), (("yaml", ".", "UnsafeLoader"), "yaml.UnsafeLoader"),
    (("pickle", ".", "load"), "pickle.load"), (("pickle", ".", "loads"), "pickle.loads"),
    (("pickle", ".", "Unpickler"), "pickle.Unpickler"), (("weights_only", "=", "False"), "weights_only=False"),
)


def test_no_code_execution_primitives_in_mapspec():
    found = []
    for path in sorted((ROOT / "mapspec").rglob("*.py")):
        toks = _code_tokens(path)
        strings = [s for s, _ in toks]
        for i in range(len(toks)):
            for seq, label in _FORBIDDEN:
                if tuple(strings[i:i + len(seq)]) == seq and (i == 0 or strings[i - 1] != "."):
                    found.append(f"{path.relative_to(ROOT)}:{toks[i][1]}: {label}")
    assert not found, "\n".join(found)


def test_every_torch_load_is_weights_only():
    for path in sorted((ROOT / "mapspec").rglob("*.py")):
        toks = _code_tokens(path)
        strings = [s for s, _ in toks]
        for i in range(len(strings) - 3):
            if strings[i:i + 4] == ["torch", ".", "load", "("]:
                depth, j, args = 0, i + 3, []
                while j < len(strings):
                    depth += strings[j] == "("
                    depth -= strings[j] == ")"
                    args.append(strings[j])
                    if depth == 0:
                        break
                    j += 1
                call = " ".join(args)
                assert "weights_only = True" in call, f"{path.relative_to(ROOT)}:{toks[i][1]}: torch.load{call}"


def test_guard_catches_what_it_looks_for(tmp_path):
    """The guard is not vacuous: it flags a file that uses the primitives (and not one that names them)."""
    bad = tmp_path / "bad.py"
    bad.write_text("import yaml, pickle\nx = eval('1')\ny = yaml.load(s)\nz = pickle.loads(b)\n"
                   "t = torch.load(p, weights_only=False)\n")
    good = tmp_path / "good.py"
    good.write_text("# eval( yaml.load( pickle.load weights_only=False\ns = 'eval(1)'\nm.eval()\n"
                    "import ast\nast.literal_eval('1')\n")
    def hits(p):
        strings = [s for s, _ in _code_tokens(p)]
        return {label for i in range(len(strings)) for seq, label in _FORBIDDEN
                if tuple(strings[i:i + len(seq)]) == seq and (i == 0 or strings[i - 1] != ".")}
    assert hits(bad) == {"eval(", "yaml.load", "pickle.loads", "weights_only=False"}
    assert hits(good) == set()


# -- new formats through the CLI: one line, exit 1 --------------------------------------------

def _hostile_gguf(d: Path) -> Path:
    p = d / "absurd.gguf"  # 2**60 tensors claimed by a 64-byte file
    p.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 2 ** 60, 0) + b"\0" * 40)
    return p


def _hostile_onnx(d: Path) -> Path:
    """An initializer whose external data points outside the model's directory."""
    from mapspec.formats.protowire import VARINT, encode_varint, len_field, tag

    def entry(k: str, v: str) -> bytes:
        body = len_field(1, len(k)) + k.encode() + len_field(2, len(v)) + v.encode()
        return len_field(13, len(body)) + body

    t = tag(1, VARINT) + encode_varint(4) + tag(2, VARINT) + encode_varint(1) + len_field(8, 1) + b"w"
    t += entry("location", "../../etc/passwd") + entry("length", "16") + tag(14, VARINT) + encode_varint(1)
    graph = len_field(5, len(t)) + t
    p = d / "outside.onnx"
    p.write_bytes(tag(1, VARINT) + encode_varint(8) + len_field(7, len(graph)) + graph)
    return p


def _hostile_keras(d: Path) -> Path:
    p = d / "bomb.keras"
    with zipfile.ZipFile(p, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("config.json", "{}")
        z.writestr("model.weights.h5", b"\0" * (8 << 20))  # 8 MB of zeros in ~8 KB: over 16:1
    return p


@pytest.mark.parametrize("make,match", [(_hostile_gguf, "more than the"),
                                        (_hostile_onnx, "leaves the model's directory"),
                                        (_hostile_keras, "zip bomb")])
def test_new_formats_hostile_files_one_line(tmp_path, make, match):
    path = make(tmp_path)
    out, err = io.StringIO(), io.StringIO()
    code = cli.run(["inspect", str(path)], stdout=out, stderr=err)
    assert code == 1 and match in err.getvalue(), err.getvalue()
    assert "Traceback" not in err.getvalue() and err.getvalue().count("\n") == 1
