"""torch format: reader through torch.load(weights_only=True), streaming writer, checked with torch itself."""

from __future__ import annotations

import collections
import io
import os
import pickle
import subprocess
import sys
import textwrap
import zipfile

import ml_dtypes
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mapspec.errors import FormatError, MapspecError  # noqa: E402
from mapspec.formats import TensorInfo  # noqa: E402
from mapspec.formats import torch as tf  # noqa: E402

TORCH_DTYPES = {
    "float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
    "float8_e4m3fn": torch.float8_e4m3fn, "float8_e5m2": torch.float8_e5m2, "int64": torch.int64,
    "int32": torch.int32, "int16": torch.int16, "int8": torch.int8, "uint64": torch.uint64,
    "uint32": torch.uint32, "uint16": torch.uint16, "uint8": torch.uint8, "bool": torch.bool,
}
ML = {"bfloat16": ml_dtypes.bfloat16, "float8_e4m3fn": ml_dtypes.float8_e4m3fn,
      "float8_e5m2": ml_dtypes.float8_e5m2}


def np_arange(name: str, shape) -> np.ndarray:
    n = int(np.prod(shape, dtype=np.int64))
    if name == "bool":
        return (np.arange(n) % 3 == 1).reshape(shape)
    if name in ML:
        return (np.arange(n, dtype=np.float32) % 15 + 1).astype(ML[name]).reshape(shape)
    return (np.arange(n) % 100 + 1).astype(name).reshape(shape)


def torch_bytes(t) -> bytes:
    """Raw bytes of a tensor in C order (independent of our dtype tables)."""
    return t.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b""


def np_bytes(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


def all_arrays() -> dict:
    out = {f"layer{i}.{name}": np_arange(name, (2, 3, i % 3 + 1)) for i, name in enumerate(TORCH_DTYPES)}
    out["scalar"] = np.array(3.25, dtype=np.float32)
    out["scalar_bf16"] = np.array(1.5, dtype=ml_dtypes.bfloat16)
    out["empty"] = np.zeros((0, 5), dtype=np.float32)
    out["empty_int"] = np.zeros((4, 0, 2), dtype=np.int64)
    out["transposed"] = np.arange(12, dtype=np.float32).reshape(3, 4).T  # non-contiguous input
    out["bigendian"] = np.arange(6, dtype=">f4").reshape(2, 3)
    return out


# -- writer -> torch.load ----------------------------------------------------

@pytest.mark.parametrize("stream", [True, False])
def test_our_writer_loads_in_torch_all_dtypes(tmp_path, stream):
    arrays = all_arrays()
    p = tmp_path / "ours.pt"
    tf.save(p, arrays, stream=stream)
    for mmap in (True, False):
        sd = torch.load(str(p), map_location="cpu", weights_only=True, mmap=mmap)
        assert isinstance(sd, dict) and list(sd) == list(arrays)
        for name, want in arrays.items():
            got = sd[name]
            assert isinstance(got, torch.Tensor)
            assert tuple(got.shape) == want.shape, name
            dname = name.split(".")[-1] if name.startswith("layer") else None
            if dname:
                assert got.dtype == TORCH_DTYPES[dname], name
            assert torch_bytes(got) == np_bytes(want.astype(want.dtype.newbyteorder("="))), name
    # and values, for a dtype torch and numpy share, beyond raw bytes
    sd = torch.load(str(p), weights_only=True)
    np.testing.assert_array_equal(sd["transposed"].numpy(), arrays["transposed"])
    np.testing.assert_array_equal(sd["bigendian"].numpy(), np.arange(6, dtype=np.float32).reshape(2, 3))


def test_streaming_data_pkl_is_what_torch_save_writes(tmp_path):
    """Our up-front pickle equals torch.save's for the same dict, byte for byte."""
    tensors = {"conv.weight": torch.arange(24, dtype=torch.float32).reshape(2, 3, 4),
               "conv.bias": torch.arange(2, dtype=torch.bfloat16), "bn.num": torch.tensor(5),
               "f8": torch.arange(4, dtype=torch.float32).to(torch.float8_e5m2),
               "u16": torch.arange(3).to(torch.uint16), "mask": torch.tensor([True, False])}
    ref = tmp_path / "ref.pt"
    torch.save(tensors, str(ref))
    ours = tmp_path / "ours.pt"
    w = tf.create(str(ours), [TensorInfo(k, tuple(v.shape), str(v.dtype).split(".")[1]) for k, v in tensors.items()])
    assert w.streaming
    for k, v in tensors.items():
        arr = v.view(torch.int16).numpy().view(ml_dtypes.bfloat16) if v.dtype == torch.bfloat16 else \
            v.view(torch.uint8).numpy().view(ml_dtypes.float8_e5m2) if v.dtype == torch.float8_e5m2 else v.numpy()
        w.write(k, arr)
    w.close()

    def member(path, suffix):
        with zipfile.ZipFile(path) as z:
            (name,) = [n for n in z.namelist() if n.endswith(suffix)]
            return z.read(name)

    assert member(ours, "/data.pkl") == member(ref, "/data.pkl")
    with zipfile.ZipFile(ours) as z:
        recs = sorted(n.split("/", 1)[1] for n in z.namelist())
        infos = z.infolist()
    with zipfile.ZipFile(ref) as z:
        assert recs == sorted(n.split("/", 1)[1] for n in z.namelist())
    for zi in infos:  # torch's mmap loader needs 64-byte aligned, stored records
        assert zi.compress_type == zipfile.ZIP_STORED
        if "/data/" in zi.filename:
            with open(ours, "rb") as f:
                f.seek(zi.header_offset + 26)
                n, m = np.frombuffer(f.read(4), dtype="<u2")
            assert (zi.header_offset + 30 + n + m) % 64 == 0
    for i in range(len(tensors)):
        assert member(ours, f"/data/{i}") == member(ref, f"/data/{i}")


def test_wrap_option_and_reader_unwraps(tmp_path):
    p = tmp_path / "w.pt"
    tf.save(p, {"a.weight": np.arange(4, dtype=np.float32)}, wrap="state_dict")
    ck = torch.load(str(p), weights_only=True)
    assert list(ck) == ["state_dict"] and list(ck["state_dict"]) == ["a.weight"]
    r = tf.open(str(p))
    assert r.names() == ["a.weight"] and r.wrapper == "state_dict"


def test_writer_misuse(tmp_path):
    infos = [TensorInfo("a", (2,), "float32"), TensorInfo("b", (2,), "float32")]
    w = tf.create(str(tmp_path / "m.pt"), infos)
    with pytest.raises(MapspecError, match="out of order"):
        w.write("b", np.zeros(2, np.float32))
    with pytest.raises(MapspecError, match="announced as float32"):
        w.write("a", np.zeros(2, np.float16))
    w.abort()
    w = tf.create(str(tmp_path / "m2.pt"), infos)
    with pytest.raises(MapspecError, match="shape"):
        w.write("a", np.zeros(3, np.float32))
    w.abort()
    with pytest.raises(MapspecError, match="twice"):
        tf.create(str(tmp_path / "d.pt"), infos + infos[:1])


def test_fallback_when_private_writer_missing(tmp_path, monkeypatch):
    def missing(*args):
        raise AttributeError("PyTorchFileWriter")  # as on a torch without the private writer

    monkeypatch.setattr(tf, "_file_writer", missing)
    arrays = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "y": np_arange("bfloat16", (3,))}
    p = tmp_path / "fb.pt"
    infos = [TensorInfo(k, v.shape, "bfloat16" if k == "y" else "float32") for k, v in arrays.items()]
    w = tf.create(str(p), infos)
    assert not w.streaming
    for k, v in arrays.items():
        w.write(k, v)
    w.close()
    sd = torch.load(str(p), weights_only=True, mmap=True)
    assert torch_bytes(sd["x"]) == arrays["x"].tobytes() and sd["y"].dtype == torch.bfloat16


def test_non_ascii_output_path(tmp_path):
    p = tmp_path / "modèle.pt"
    tf.save(p, {"w": np.arange(3, dtype=np.int32)})
    assert torch.load(str(p), weights_only=True, mmap=True)["w"].tolist() == [0, 1, 2]


# -- torch.save -> reader ------------------------------------------------------

def test_reader_all_dtypes_from_torch_save(tmp_path):
    sd = collections.OrderedDict()
    for name, d in TORCH_DTYPES.items():
        base = torch.arange(12) % (3 if d == torch.bool else 90) + (0 if d == torch.bool else 1)
        sd[f"w_{name}"] = (base.float().to(d) if d.is_floating_point else base.to(d)).reshape(3, 4)
    sd["scalar"] = torch.tensor(2.0, dtype=torch.float64)
    sd["empty"] = torch.zeros(0, 3, dtype=torch.bfloat16)
    big = torch.arange(20, dtype=torch.float32).reshape(4, 5)
    sd["view_t"] = big.t()  # non-contiguous view sharing storage with:
    sd["view_row"] = big[1]
    sd["param"] = torch.nn.Parameter(torch.arange(3, dtype=torch.float32))
    p = tmp_path / "ref.pt"
    torch.save(sd, str(p))
    with tf.open(str(p)) as r:
        assert r.names() == list(sd) and r.mmap and r.wrapper is None and r.skipped == {}
        for name, t in sd.items():
            info = r.info(name)
            assert info.shape == tuple(t.shape)
            a = r.read(name)
            assert a.shape == tuple(t.shape) and not a.flags.writeable
            assert np_bytes(a) == torch_bytes(t.detach()), name
        assert r.info("w_bfloat16").dtype == "bfloat16" and r.read("w_bfloat16").dtype == ml_dtypes.bfloat16
        assert r.info("w_uint16").dtype == "uint16"
        np.testing.assert_array_equal(r.read("view_t"), big.t().numpy())
        np.testing.assert_array_equal(r.read("w_bfloat16").astype(np.float32), sd["w_bfloat16"].float().numpy())


def test_reader_reads_legacy_pickle_format(tmp_path):
    sd = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.arange(3, dtype=torch.bfloat16)}
    p = tmp_path / "legacy.pt"
    torch.save(sd, str(p), _use_new_zipfile_serialization=False)
    with open(p, "rb") as f:
        assert tf.sniff(str(p), f.read(64))
    r = tf.open(str(p))
    assert not r.mmap and r.names() == ["a", "b"]
    np.testing.assert_array_equal(r.read("a"), sd["a"].numpy())
    assert np_bytes(r.read("b")) == torch_bytes(sd["b"])


def test_round_trip_both_ways(tmp_path):
    sd = {"enc.w": torch.arange(30, dtype=torch.float16).reshape(5, 6), "enc.b": torch.arange(5, dtype=torch.int8)}
    a = tmp_path / "a.pt"
    torch.save(sd, str(a))
    with tf.open(str(a)) as r:
        b = tmp_path / "b.pt"
        tf.save(b, {n: r.read(n) for n in r.names()})
    back = torch.load(str(b), weights_only=True, mmap=True)
    for k in sd:
        assert torch.equal(back[k], sd[k]) and back[k].dtype == sd[k].dtype


# -- nesting rules -------------------------------------------------------------

def test_training_checkpoint_unwraps_state_dict(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))
    opt = torch.optim.Adam(model.parameters())
    model(torch.ones(4, 2)).sum().backward()
    opt.step()
    ck = {"epoch": 7, "model_state_dict": model.state_dict(), "optimizer_state_dict": opt.state_dict(),
          "loss": 0.5, "note": "hello"}
    p = tmp_path / "ck.pt"
    torch.save(ck, str(p))
    r = tf.open(str(p))
    assert r.names() == list(model.state_dict())
    assert r.wrapper == "model_state_dict"
    assert set(r.skipped) == {"epoch", "optimizer_state_dict", "loss", "note"}
    assert r.info("0.weight").meta == {"wrapper": "model_state_dict"}
    np.testing.assert_array_equal(r.read("0.weight"), model.state_dict()["0.weight"].numpy())
    assert r.info("1.num_batches_tracked").dtype == "int64"
    # explicit root, and no unwrapping at all
    r2 = tf.open(str(p), root="optimizer_state_dict")
    assert "state.0.exp_avg" in r2.names() and r2.wrapper == "optimizer_state_dict"
    assert "param_groups.0.lr" in r2.skipped
    r3 = tf.open(str(p), root="")
    assert "model_state_dict.0.weight" in r3.names() and "optimizer_state_dict.state.0.exp_avg" in r3.names()
    assert r3.skipped["epoch"].startswith("not a tensor")
    with pytest.raises(MapspecError, match="not found"):
        tf.open(str(p), root="nope")


def test_nested_wrappers_lists_and_plain_nesting(tmp_path):
    t = torch.arange(4, dtype=torch.float32)
    cases = [
        ({"model": {"module": {"a": t}}, "step": 3}, ["a"], "model.module"),
        ({"state_dict": {"enc": {"w": t}, "head": [t, t * 2]}}, ["enc.w", "head.0", "head.1"], "state_dict"),
        ({"encoder": {"w": t}, "decoder": {"w": t}}, ["encoder.w", "decoder.w"], None),
        # two wrapper keys with tensors: ambiguous, so nothing is unwrapped
        ({"model": {"w": t}, "state_dict": {"w": t}}, ["model.w", "state_dict.w"], None),
        # a tensor at the top level: the top level is the state dict itself
        ({"model": {"w": t}, "bias": t}, ["model.w", "bias"], None),
        ([t, (t, t)], ["0", "1.0", "1.1"], None),
        (t, ["tensor"], None),
    ]
    for i, (obj, names, wrapper) in enumerate(cases):
        p = tmp_path / f"n{i}.pt"
        torch.save(obj, str(p))
        r = tf.open(str(p))
        assert r.names() == names, obj
        assert r.wrapper == wrapper


def test_name_collision_and_unsupported_tensors(tmp_path):
    t = torch.arange(2, dtype=torch.float32)
    p = tmp_path / "c.pt"
    torch.save({"a.b": t, "a": {"b": t}}, str(p))
    with pytest.raises(FormatError, match="same name"):
        tf.open(str(p))
    torch.save({"c": torch.ones(2, dtype=torch.complex64), "ok": t, "sp": torch.eye(2).to_sparse()}, str(p))
    r = tf.open(str(p))
    assert r.names() == ["ok"] and "complex64" in r.skipped["c"] and "sparse" in r.skipped["sp"]
    torch.save(42, str(p))
    with pytest.raises(FormatError, match="not a state dict"):
        tf.open(str(p))


def test_cyclic_and_shared_containers_stay_linear(tmp_path):
    shared = [torch.ones(1)]
    obj = {"a": shared, "b": shared}
    p = tmp_path / "s.pt"
    torch.save(obj, str(p))
    r = tf.open(str(p))
    assert r.names() == ["a.0"] and "b" in r.skipped
    lst: list = []
    lst.append(lst)
    lst.append(torch.ones(1))
    torch.save({"x": lst}, str(p))
    r = tf.open(str(p))
    assert r.names() == ["x.1"] and "x.0" in r.skipped


# -- hostile input -------------------------------------------------------------

class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("legacy", [False, True])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, legacy):
    marker = tmp_path / "PWNED"
    p = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(2), "x": _Evil(marker)}, str(p), _use_new_zipfile_serialization=not legacy)
    assert not marker.exists()
    with pytest.raises(FormatError, match="run code") as e:
        tf.open(str(p))
    assert "system" in str(e.value)
    assert not marker.exists()


def test_pickle_with_eval_and_unknown_class_is_refused(tmp_path):
    marker = tmp_path / "PWNED2"

    class Payload:
        def __reduce__(self):
            return (eval, (f"open({str(marker)!r}, 'w')",))

    buf = io.BytesIO()
    torch.save({"x": Payload()}, buf)
    p = tmp_path / "e.pt"
    p.write_bytes(buf.getvalue())
    with pytest.raises(FormatError, match="run code"):
        tf.open(str(p))
    assert not marker.exists()
    # a raw (non-torch) pickle in a zip-less file that builds an arbitrary object
    p.write_bytes(pickle.dumps(collections.Counter(a=1), protocol=2))
    with pytest.raises(FormatError):
        tf.open(str(p))


def _corruptions(data: bytes, rng, n: int):
    for i in range(n):
        if i % 2 == 0:
            yield data[: int(rng.integers(0, len(data)))]
        else:
            b = bytearray(data)
            for _ in range(int(rng.integers(1, 5))):
                b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
            yield bytes(b)


@pytest.mark.parametrize("legacy", [False, True])
def test_corrupt_files_give_format_errors_only(tmp_path, legacy):
    sd = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.arange(4, dtype=torch.int64),
          "c": torch.arange(3, dtype=torch.bfloat16)}
    src = tmp_path / "src.pt"
    torch.save(sd, str(src), _use_new_zipfile_serialization=not legacy)
    data = src.read_bytes()
    p = tmp_path / "bad.pt"
    rng = np.random.default_rng(1 if legacy else 2)
    errors = 0
    for bad in _corruptions(data, rng, 300):
        p.write_bytes(bad)
        try:
            with tf.open(str(p)) as r:
                for n in r.names():
                    r.read(n)
        except FormatError:
            errors += 1
    assert errors > 100
    for content in (b"", b"PK\x03\x04", b"not a checkpoint at all"):
        p.write_bytes(content)
        with pytest.raises(FormatError):
            tf.open(str(p))


def test_sniff():
    assert tf.sniff("x.pt", b"PK\x03\x04" + b"\0" * 22 + b"\x10\x00\x00\x00" + b"archive/data.pkl")
    assert not tf.sniff("x.npz", b"PK\x03\x04" + b"\0" * 22 + b"\x05\x00\x00\x00" + b"a.npy")
    assert not tf.sniff("x", b"\x89HDF\r\n\x1a\n")


def test_import_is_light():
    code = "import sys, mapspec.formats.torch as m; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- performance: lazy metadata, bounded-memory writing ------------------------------

_MEMORY_SCRIPT = textwrap.dedent("""
    import resource, sys, time
    import numpy as np
    from mapspec.formats import TensorInfo, torch as tf
    path, n, mb, stream = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
    shape = (mb * 1024 * 256,)  # float32
    import torch  # import cost outside the measurement
    infos = [TensorInfo(f"t{i}", shape, "float32") for i in range(n)]
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    w = tf.create(path, infos, stream=stream)
    for i in range(n):
        a = np.full(shape, i, dtype=np.float32)  # made on demand, dropped after the write
        w.write(f"t{i}", a)
        del a
    w.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    r = tf.open(path)
    infos = r.infos()
    t1 = time.perf_counter()
    assert len(infos) == n and float(r.read(f"t{n-1}")[-1]) == n - 1
    print((peak - base) // 1024, round(t1 - t0, 3))
""")


@pytest.mark.slow
def test_streaming_memory_is_bounded_and_metadata_is_lazy(tmp_path):
    """8 x 64 MB written: peak RSS growth stays near one tensor; open+infos of 512 MB << 0.5 s."""
    path = tmp_path / "big.pt"
    out = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(path), "8", "64", "1"], check=True,
                         capture_output=True, text=True).stdout.split()
    grew_mb, open_s = int(out[0]), float(out[1])
    assert path.stat().st_size > 512 * 2**20
    assert grew_mb < 3 * 64, f"streaming writer grew RSS by {grew_mb} MB for 8 x 64 MB tensors"
    assert open_s < 0.5, f"open + infos of a 512 MB checkpoint took {open_s} s"
