"""Streaming machinery behind the speed/memory work: bounded C-order pieces, the torch-free torch writer
(its zip container, ZIP64 included), readers dropping mapped pages, and the engine's read-once/release.

Expected bytes come from numpy (``np.ascontiguousarray`` in the wanted byte order) and files are read
back with torch itself and with Python's ``zipfile`` (which checks every CRC), never with our reader alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mapspec
from mapspec.errors import MapspecError
from mapspec.formats import TensorInfo, module
from mapspec.formats import torch as tf
from mapspec.formats import torch_zip
from mapspec.formats.chunks import c_order_chunks

# -- c_order_chunks ----------------------------------------------------------------------------------

DTYPES = [np.dtype("<f4"), np.dtype(">f4"), np.dtype(">f8"), np.dtype("<i2"), np.dtype("u1"),
          np.dtype(ml_dtypes.bfloat16)]


def expected_bytes(arr: np.ndarray, order: str) -> bytes:
    dt = arr.dtype if arr.dtype.itemsize == 1 or arr.dtype == np.dtype(ml_dtypes.bfloat16) else \
        arr.dtype.newbyteorder(order)
    return np.ascontiguousarray(arr).astype(dt).tobytes()


@st.composite
def views(draw):
    """A view of a C array of distinct values: permuted, sliced with steps, reversed, in a byte order."""
    ndim = draw(st.integers(0, 4))
    shape = tuple(draw(st.lists(st.integers(0, 7), min_size=ndim, max_size=ndim)))
    dt = draw(st.sampled_from(DTYPES))
    base = (np.arange(int(np.prod(shape)), dtype=np.int64) % 251).astype(dt).reshape(shape)
    view = base
    if ndim:
        perm = draw(st.permutations(range(ndim)))
        view = view.transpose(perm)
        idx = tuple(slice(None, None, draw(st.sampled_from([1, 2, -1]))) for _ in range(ndim))
        view = view[idx]
    return view


@settings(max_examples=300, deadline=None)
@given(views(), st.sampled_from([1, 3, 16, 64, 1 << 20]), st.sampled_from(["<", "="]))
def test_chunks_are_the_c_order_bytes(arr, limit, order):
    pieces = [bytes(p) for p in c_order_chunks(arr, limit, byteorder=order)]
    assert b"".join(pieces) == expected_bytes(arr, "<" if order == "<" or sys.byteorder == "little" else ">")
    row = (arr.shape[-1] if arr.ndim else 1) * arr.dtype.itemsize  # one innermost row
    assert all(len(p) <= max(limit, row, 1) or arr.flags.c_contiguous for p in pieces)


def test_chunks_of_a_large_transposed_view_use_tiles_and_bounded_buffers():
    a = np.arange(600 * 700, dtype=np.float32).reshape(600, 700)
    pieces = list(c_order_chunks(a.T, limit=64 << 10))
    assert max(len(p) for p in pieces) <= 64 << 10
    got = b"".join(bytes(p) for p in c_order_chunks(a.T, limit=64 << 10))
    assert got == np.ascontiguousarray(a.T).tobytes()
    w = np.arange(2 * 3 * 300 * 5, dtype=">f4").reshape(2, 3, 300, 5)
    hwio = w.transpose(2, 3, 1, 0)  # OIHW -> HWIO, other byte order
    got = b"".join(bytes(p) for p in c_order_chunks(hwio, limit=1000))
    assert got == np.ascontiguousarray(hwio).astype("<f4").tobytes()


def test_chunks_of_a_contiguous_array_are_views_not_copies():
    a = np.arange(3 << 20, dtype="<f4")
    pieces = list(c_order_chunks(a))
    assert sum(len(p) for p in pieces) == a.nbytes and len(pieces) > 1
    assert all(np.shares_memory(np.frombuffer(p, np.uint8), a) for p in pieces)


# -- the torch writer without torch -----------------------------------------------------------------

def sample_arrays() -> dict:
    return {
        "conv.weight": np.arange(2 * 3 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 3),
        "fc.weight_t": np.arange(35, dtype=np.float32).reshape(5, 7).T,
        "be": np.arange(12, dtype=">f8").reshape(3, 4),
        "bf16": np.arange(10, dtype=np.float32).astype(ml_dtypes.bfloat16),
        "f8": np.arange(6, dtype=np.float32).astype(ml_dtypes.float8_e4m3fn),
        "u16": np.arange(4, dtype=np.uint16),
        "count": np.array(7, dtype=np.int64),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }


def _torch_view(t, torch):
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    if t.dtype == torch.float8_e4m3fn:
        return t.view(torch.uint8).numpy().view(ml_dtypes.float8_e4m3fn)
    return t.numpy()


def check_loads_in_torch(path, arrays: dict) -> None:
    torch = pytest.importorskip("torch")
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None  # every record's CRC-32 and size agree with its data
    for mmap in (True, False):
        sd = torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
        assert list(sd) == list(arrays)
        for name, want in arrays.items():
            got = _torch_view(sd[name], torch)
            assert got.shape == want.shape, name
            assert got.tobytes() == np.ascontiguousarray(want).astype(want.dtype.newbyteorder("=")).tobytes(), name


@pytest.mark.parametrize("zip64_at", [None, 100, 1])
def test_torch_writer_records_load_in_torch_also_with_zip64(tmp_path, monkeypatch, zip64_at):
    """ZIP64 fields (needed past 4 GiB) forced on small files by lowering the threshold."""
    if zip64_at is not None:
        monkeypatch.setattr(torch_zip, "_ZIP64_AT", zip64_at)
    arrays = sample_arrays()
    p = tmp_path / "z.pt"
    tf.save(p, arrays)
    check_loads_in_torch(p, arrays)
    with zipfile.ZipFile(p) as z:
        infos = z.infolist()
        assert all(i.compress_type == zipfile.ZIP_STORED for i in infos)
        assert infos[0].filename == "z/data.pkl"  # torch.save names the folder after the file
        if zip64_at == 1:
            assert all(i.extract_version >= 45 for i in infos)


def test_torch_writer_streams_pieces_of_views_without_importing_torch(tmp_path):
    script = textwrap.dedent("""
        import sys
        import numpy as np
        from mapspec.formats import torch as tf
        a = np.arange(512 * 300, dtype=np.float32).reshape(512, 300)
        tf._CHUNK = 4096  # many pieces
        tf.save(sys.argv[1], {"w": a.T, "b": np.arange(3, dtype=">i8")})
        print("torch" in sys.modules)
    """)
    p = tmp_path / "w.pth"
    out = subprocess.run([sys.executable, "-c", script, str(p)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    a = np.arange(512 * 300, dtype=np.float32).reshape(512, 300)
    check_loads_in_torch(p, {"w": a.T, "b": np.arange(3, dtype=np.int64)})


def test_torch_writer_abort_and_misuse(tmp_path):
    p = tmp_path / "a.pt"
    w = tf.create(str(p), [TensorInfo("a", (2,), "float32"), TensorInfo("b", (3,), "float32")])
    w.write("a", np.arange(2, dtype=np.float32))
    with pytest.raises(mapspec.MapspecError, match="closed before tensor 'b'"):
        w.close()
    w.abort()
    w.abort()  # twice is harmless


# -- readers drop mapped pages after the last use -----------------------------------------------------

def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
@pytest.mark.parametrize("fmt", ["safetensors", "caffe"])
def test_release_drops_pages_and_views_stay_valid(tmp_path, fmt):
    n = 8 << 20  # 32 MiB of float32
    want = np.arange(n, dtype=np.float32)
    name = "t" if fmt == "safetensors" else "layer[0]"
    p = tmp_path / ("x.safetensors" if fmt == "safetensors" else "x.caffemodel")
    module(fmt).save(p, {name: want})
    with mapspec.open_checkpoint(str(p)) as r:
        before = _rss()
        view = r.read(name)
        assert float(view.sum(dtype=np.float64)) == float(want.sum(dtype=np.float64))  # touches every page
        touched = _rss()
        r.release(name)
        released = _rss()
        assert touched - before > 24 << 20
        assert touched - released > 24 << 20
        np.testing.assert_array_equal(view, want)  # the view reads the same data again


# -- the engine: read once, released after the last use --------------------------------------------

class Recording(mapspec.formats.Reader):
    """Wraps a reader and records read/release calls."""

    def __init__(self, inner):
        super().__init__(inner.path)
        self.inner = inner
        self._infos = inner.infos()
        self.format = inner.format
        self.calls: list = []

    def _read(self, info):
        self.calls.append(("read", info.name))
        return self.inner.read(info.name)

    def release(self, name):
        self.calls.append(("release", name))
        self.inner.release(name)


def test_engine_reads_each_tensor_once_and_releases_it_after_its_last_use(tmp_path):
    src = tmp_path / "s.safetensors"
    arrays = {"bn[0]": np.arange(4, dtype=np.float32) * 6, "bn[1]": np.arange(4, dtype=np.float32) + 10,
              "bn[2]": np.array([2.0], dtype=np.float32), "w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    module("safetensors").save(src, arrays)
    spec = tmp_path / "s.yaml"
    spec.write_text(textwrap.dedent("""
        mapspec: 1
        name: t
        source: {format: safetensors}
        target: {format: safetensors}
        rules:
          - from: "bn[0]"
            to: mean
            apply: [{div: {by: "bn[2]"}}]
          - from: "w"
            to: w_t
            apply: [{transpose: [1, 0]}]
          - from: "bn[1]"
            to: var
            apply: [{div: {by: "bn[2]"}}]
          - from: "bn[2]"
            to: factor
    """))
    rec = Recording(mapspec.open_checkpoint(str(src)))
    out = tmp_path / "o.safetensors"
    mapspec.apply(str(spec), rec, str(out), jobs=1)  # one step at a time: the order below is exact
    reads = [n for k, n in rec.calls if k == "read"]
    releases = [n for k, n in rec.calls if k == "release"]
    assert sorted(reads) == sorted(set(reads)) == sorted(arrays)  # the factor blob: read once for 3 uses
    assert sorted(releases) == sorted(arrays)
    assert rec.calls.index(("release", "bn[2]")) > rec.calls.index(("read", "bn[1]"))  # kept until its last use
    assert rec.calls.index(("release", "bn[0]")) < rec.calls.index(("read", "w"))  # and the others let go at once
    with mapspec.open_checkpoint(str(out)) as r:
        np.testing.assert_array_equal(r.read("mean"), arrays["bn[0]"] / 2)
        np.testing.assert_array_equal(r.read("var"), arrays["bn[1]"] / 2)
        np.testing.assert_array_equal(r.read("w_t"), arrays["w"].T)


_MEMORY = textwrap.dedent("""
    import sys
    import mapspec
    from mapspec.engine import execute

    def hwm():  # this process's own peak RSS (ru_maxrss would include the forking parent's)
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])

    src, spec, out = sys.argv[1:4]
    p = mapspec.plan(spec, src, output=out)
    base = hwm()
    execute(p, out)
    print((hwm() - base) // 1024, "torch" in sys.modules)
""")



@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_conversion_memory_stays_near_the_largest_tensor(tmp_path):
    """6 x 32 MiB caffe blobs -> torch (renames, one transposed): peak growth under two tensors."""
    src = tmp_path / "m.caffemodel"
    module("caffe").save(src, {f"l{i}[0]": np.full((2048, 4096), i, dtype=np.float32) for i in range(6)})
    spec = tmp_path / "m.yaml"
    spec.write_text(textwrap.dedent("""
        mapspec: 1
        name: m
        source: {format: caffe}
        target: {format: torch}
        rules:
          - from: "l0[0]"
            to: first_t
            apply: [{transpose: [1, 0]}]
          - from: "l<i>[0]"
            to: "layer{i}.weight"
    """))
    out = tmp_path / "m.pth"
    res = subprocess.run([sys.executable, "-c", _MEMORY, str(src), str(spec), str(out)], capture_output=True,
                         text=True, check=True).stdout.split()
    grew_mb, torch_imported = int(res[0]), res[1]
    assert grew_mb < 64, f"converting 6 x 32 MiB grew peak RSS by {grew_mb} MB (two tensors: 64)"
    assert torch_imported == "False"
    check_loads_in_torch(out, {"first_t": np.zeros((4096, 2048), np.float32),
                               **{f"layer{i}.weight": np.full((2048, 4096), i, np.float32) for i in range(1, 6)}})


def test_caffe_writer_streams_views_in_little_endian_pieces(tmp_path, monkeypatch):
    """A transposed, big-endian view goes out in bounded pieces; protobuf's decoder reads the values."""
    from mapspec.formats import caffe
    from mapspec.frameworks.caffe import schema

    monkeypatch.setattr(caffe, "_CHUNK", 256)
    w = np.arange(3 * 4 * 5 * 6, dtype=">f4").reshape(3, 4, 5, 6).transpose(2, 3, 1, 0)
    b = np.arange(7, dtype=">f8")[::-1]
    p = tmp_path / "c.caffemodel"
    caffe.save(p, {"conv[0]": w, "conv[1]": b})
    net = schema.NetParameter.FromString(p.read_bytes())
    (layer,) = net.layer
    assert tuple(layer.blobs[0].shape.dim) == w.shape
    np.testing.assert_array_equal(np.array(layer.blobs[0].data, np.float32), np.ascontiguousarray(w).reshape(-1))
    np.testing.assert_array_equal(np.array(layer.blobs[1].double_data), b)


@pytest.mark.parametrize("fmt,suffix", [("safetensors", ".safetensors"), ("torch", ".pt"), ("mxnet", ".params"),
                                        ("keras", ".h5")])
def test_writers_refuse_a_dtype_mapspec_has_no_name_for(tmp_path, fmt, suffix):
    """One dtype check for every writer (Writer._check_dtype): a complex array is a clean error, not a KeyError."""
    w = module(fmt).create(str(tmp_path / f"m{suffix}"), [TensorInfo("d/a", (2,), "float32")])
    try:
        with pytest.raises(MapspecError, match=r"tensor 'd/a' arrived as complex64 but was announced as float32"):
            w.write("d/a", np.arange(2, dtype=np.complex64))
    finally:
        w.abort()
