"""Hostile input, round 3: templates and checkpoints that made tracebacks, unbounded work or stray files.

* A GGUF template's metadata arrays are copied as bytes, in bounded memory (millions of empty
  strings cost what a chunk costs, not 20 times the file).
* ONNX external data past the end of its file: ``inspect`` and ``apply`` both refuse it (one check
  in the reader).
* A ``.keras`` template with an unsafe member name (``../../evil.txt``, absolute, backslashes, a
  drive letter) is refused on read; reading a ``.keras`` leaves no temporary file, even when killed.
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mapspec import cli

ROOT = Path(__file__).resolve().parent.parent


def _run(*argv) -> tuple:
    o, e = io.StringIO(), io.StringIO()
    rc = cli.run([str(a) for a in argv], o, e)
    return rc, o.getvalue(), e.getvalue()


def _gguf_with_empty_strings(path: Path, n: int) -> Path:
    """A GGUF file (written by hand from the GGUF spec) whose tokens are ``n`` empty strings."""
    key = b"tokenizer.ggml.tokens"
    with open(path, "wb") as f:
        f.write(b"GGUF" + struct.pack("<IQQ", 3, 0, 2))
        f.write(struct.pack("<Q", 12) + b"general.name" + struct.pack("<IQ", 8, 3) + b"abc")
        f.write(struct.pack("<Q", len(key)) + key + struct.pack("<IIQ", 9, 8, n))
        f.write(bytes(8 * n))
        f.write(bytes(-f.tell() % 32))
    return path


def _copy_template(template: Path, out: Path) -> int:
    """Write a one-tensor GGUF with ``template``'s metadata in a child process; its peak traced memory."""
    child = textwrap.dedent(f"""
        import tracemalloc
        import numpy as np
        from mapspec.formats import TensorInfo
        from mapspec.formats.gguf import GGUFWriter
        tracemalloc.start()
        w = GGUFWriter({str(out)!r}, [TensorInfo("a", (2,), "float32")], template={str(template)!r})
        w.write("a", np.arange(2, dtype=np.float32))
        w.close()
        print(tracemalloc.get_traced_memory()[1])
    """)
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


def test_gguf_template_metadata_arrays_are_copied_in_bounded_memory(tmp_path):
    n = 250_000  # 2 MB of empty strings; decoding them costs ~40 MB of Python objects
    template = _gguf_with_empty_strings(tmp_path / "template.gguf", n)
    peak = _copy_template(template, tmp_path / "out.gguf")
    assert peak < 4 << 20, f"copying {n} empty strings traced {peak} bytes"
    src, out = template.read_bytes(), (tmp_path / "out.gguf").read_bytes()
    end = 24 + (8 + 12 + 4 + 8 + 3) + (8 + 21 + 4 + 4 + 8 + 8 * n)  # the metadata, before the padding
    assert len(src) == -(-end // 32) * 32
    assert out[:8] == src[:8] and struct.unpack_from("<QQ", out, 8) == (1, 2) and out[24:end] == src[24:end]


def test_gguf_template_metadata_copy_reads_back_in_gguf_py(tmp_path):
    gguf = pytest.importorskip("gguf")
    template = _gguf_with_empty_strings(tmp_path / "template.gguf", 1000)
    _copy_template(template, tmp_path / "out.gguf")
    r = gguf.GGUFReader(str(tmp_path / "out.gguf"))  # somebody else's reader
    tokens = r.fields["tokenizer.ggml.tokens"]
    assert len(tokens.data) == 1000 and all(len(tokens.parts[i]) == 0 for i in tokens.data)
    assert r.fields["general.name"].contents() == "abc"
    assert r.tensors[0].name == "a" and list(r.tensors[0].data) == [0.0, 1.0]


def _onnx_external(d: Path, offset: int, length: int, data: bytes) -> Path:
    """An ONNX model (built with the onnx package) whose initializer 'a' lies in external data w.bin."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    t = numpy_helper.from_array(np.zeros((2, 3), np.float32), "a")
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "w.bin"), ("offset", str(offset)), ("length", str(length))):
        e = t.external_data.add()
        e.key, e.value = k, v
    node = helper.make_node("Identity", ["a"], ["y"])
    graph = helper.make_graph([node], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], [t])
    d.mkdir()
    onnx.save_model(helper.make_model(graph), str(d / "m.onnx"))
    (d / "w.bin").write_bytes(data)
    return d / "m.onnx"


@pytest.mark.parametrize("offset,size", [(0, 20), (8, 24), (2 ** 62, 24)])
def test_onnx_external_data_past_its_end_is_refused_by_inspect_and_apply(tmp_path, offset, size):
    model = _onnx_external(tmp_path / "m", offset, 24, bytes(size))
    spec = tmp_path / "s.yaml"
    spec.write_text("mapspec: 1\nsource: {format: onnx}\ntarget: {format: npz}\nrules:\n  - {from: a, to: a}\n")
    expected = (f"mapspec: error: {model}: at byte 27: tensor 'a': external data 'w.bin' needs bytes {offset}.."
                f"{offset + 24} but that file has only {size} bytes (truncated or corrupt)\n")
    for argv in (["inspect", model], ["apply", spec, "-s", model, "-o", tmp_path / "out.npz"]):
        rc, out, err = _run(*argv)
        assert (rc, err) == (1, expected), (argv, out, err)
    assert not (tmp_path / "out.npz").exists()


@pytest.mark.parametrize("member", ["../../evil.txt", "/etc/evil.txt", "assets/../../evil.txt",
                                    "assets\\..\\..\\evil.txt", "C:evil.txt", "c:/evil.txt"])
def test_keras_archive_member_with_an_unsafe_name_is_refused(tmp_path, member):
    path = tmp_path / "evil.keras"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("metadata.json", "{}")
        z.writestr("config.json", "{}")
        z.writestr("model.weights.h5", b"\0" * 64)
        z.writestr(member, "owned\n")
    offset = [zi.header_offset for zi in zipfile.ZipFile(path).infolist() if zi.filename == member][0]
    rc, out, err = _run("inspect", path)
    assert (rc, err) == (1, f"mapspec: error: {path}: at byte {offset}: zip member {member!r} has an unsafe name "
                            f"(absolute, '..', a backslash or a drive letter: extracted, it would leave its "
                            f"folder); refused\n"), err


def test_keras_archive_read_leaves_no_temporary_file_even_when_killed(tmp_path):
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, name="d1")], name="net")
    model.save(str(tmp_path / "m.keras"))
    temp = tmp_path / "tmp"
    temp.mkdir()
    child = textwrap.dedent(f"""
        import sys, time
        from mapspec.formats import open_checkpoint
        r = open_checkpoint({str(tmp_path / "m.keras")!r})
        assert sorted(r.infos()) == ["d1/bias", "d1/kernel"], sorted(r.infos())
        r.read("d1/kernel")
        print("open", flush=True)
        time.sleep(120)
    """)
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "TMPDIR": str(temp), "KERAS_BACKEND": "torch"}
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path, env=env)
    try:
        line = proc.stdout.readline()
        assert line == "open\n", line + proc.stderr.read()
        assert list(temp.rglob("*")) == []  # while the archive is open: its weights have no name
    finally:
        proc.kill()  # SIGKILL: no cleanup runs
        proc.wait(timeout=60)
    assert list(temp.rglob("*")) == []
