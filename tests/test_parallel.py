"""apply --jobs: the parallel path writes exactly the bytes of the serial one; failures leave nothing."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from mapspec.engine import apply, execute, plan
from mapspec.errors import ConversionError
from mapspec.formats import safetensors as st

SPEC = """mapspec: 1
name: mixed
source: {format: safetensors}
target: {format: safetensors}
rules:
  - from: "t<i>.a"
    to: "out.{i}.a_t"
    apply: [{transpose: [1, 0]}]
  - from: "t<i>.b"
    to: "out.{i}.b16"
    apply: [{cast: bfloat16}]
  - from: "t<i>.c"
    to: "out.{i}.c"
    apply: [{mul: {by: "t{i}.s"}}]
  - from: "t<i>.s"
    to: "out.{i}.s"
  - from: "t<i>.d"
    to: "out.{i}.d"
"""


@pytest.fixture
def source(tmp_path):
    tensors = {}
    for i in range(6):
        tensors[f"t{i}.a"] = np.arange(i * 1000, i * 1000 + 37 * 53, dtype=np.float32).reshape(37, 53)
        tensors[f"t{i}.b"] = np.linspace(-3, 3, 4096 + i, dtype=np.float32)
        tensors[f"t{i}.c"] = np.arange(64, dtype=np.float32) + i
        tensors[f"t{i}.s"] = np.float32(i + 0.5) * np.ones((), np.float32)
        tensors[f"t{i}.d"] = np.arange(i, i + 3 * 5 * 7, dtype=np.int16).reshape(3, 5, 7)
    path = tmp_path / "src.safetensors"
    st.save(str(path), tensors)
    spec = tmp_path / "mixed.yaml"
    spec.write_text(SPEC)
    return str(spec), str(path), tensors


@pytest.mark.parametrize("jobs", [1, 2, 3, 8])
def test_parallel_bytes_equal_streaming_writer(tmp_path, source, jobs):
    """Positional writes (threads, pwrite, file-to-file copies of renamed tensors) give the very bytes
    that the streaming writer gives for the same tensors computed by numpy."""
    import ml_dtypes

    spec, src, t = source
    want = {}
    for i in range(6):
        want[f"out.{i}.a_t"] = np.ascontiguousarray(t[f"t{i}.a"].T)
        want[f"out.{i}.b16"] = t[f"t{i}.b"].astype(ml_dtypes.bfloat16)
        want[f"out.{i}.c"] = t[f"t{i}.c"] * t[f"t{i}.s"]
        want[f"out.{i}.s"] = t[f"t{i}.s"]
        want[f"out.{i}.d"] = t[f"t{i}.d"]
    st.save(str(tmp_path / "expected.safetensors"), want)
    apply(spec, src, str(tmp_path / "par.safetensors"), jobs=jobs)
    # the same header and data; only the padding after the JSON may differ (renamed tensors are placed at
    # their source's place in the page, tests/formats/test_safetensors.py)
    got, exp = _split(tmp_path / "par.safetensors"), _split(tmp_path / "expected.safetensors")
    assert got[0] == exp[0] and got[1] == exp[1]


def _split(path):
    """(the JSON header parsed, the data area) of a safetensors file; the header's padding must be spaces."""
    import json
    import struct

    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    text = raw[8:8 + n].decode("utf-8")
    body = text.rstrip(" ")
    assert body.endswith("}") and (8 + n) % 8 == 0
    return json.loads(body), raw[8 + n:]


def test_renamed_tensors_are_copied_file_to_file(tmp_path, source, monkeypatch):
    spec, src, _ = source
    copied = []
    real = st.SafetensorsWriter.copy_at

    def spy(self, name, info, span):
        copied.append(name)
        return real(self, name, info, span)

    monkeypatch.setattr(st.SafetensorsWriter, "copy_at", spy)
    apply(spec, src, str(tmp_path / "o.safetensors"), jobs=2)
    # plain renames are copied; out.{i}.s may be too, once the step that references t{i}.s is done
    assert {f"out.{i}.d" for i in range(6)} <= set(copied)
    assert all(n.endswith((".d", ".s")) for n in copied)


def test_parallel_uses_threads_and_values_are_right(tmp_path, source, monkeypatch):
    spec, src, tensors = source
    seen = set()
    real = st.SafetensorsWriter.write_at

    def spy(self, name, array):
        seen.add(threading.current_thread().name)
        return real(self, name, array)

    monkeypatch.setattr(st.SafetensorsWriter, "write_at", spy)
    out = tmp_path / "o.safetensors"
    apply(spec, src, str(out), jobs=4)
    assert seen and all(n.startswith("mapspec") for n in seen)
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    got = load_file(str(out))
    for i in range(6):
        src_t = {k: torch.from_numpy(np.array(v)) for k, v in tensors.items() if k.startswith(f"t{i}.")}
        assert torch.equal(got[f"out.{i}.a_t"], src_t[f"t{i}.a"].T)
        assert torch.equal(got[f"out.{i}.b16"], src_t[f"t{i}.b"].to(torch.bfloat16))
        assert torch.equal(got[f"out.{i}.c"], src_t[f"t{i}.c"] * src_t[f"t{i}.s"])


def test_worker_failure_leaves_nothing(tmp_path, source):
    spec, src, tensors = source
    bad = tmp_path / "bad.yaml"
    bad.write_text(SPEC.replace('apply: [{mul: {by: "t{i}.s"}}]', 'apply: [{div: {by: "t{i}.s"}}]'))
    tensors["t4.s"] = np.zeros((), np.float32)
    st.save(src, tensors)
    out = tmp_path / "o.safetensors"
    with pytest.raises(ConversionError, match="t4.c"):
        apply(str(bad), src, str(out), jobs=3)
    assert sorted(os.listdir(tmp_path)) == ["bad.yaml", "mixed.yaml", "src.safetensors"]  # no temporary file


def test_formats_without_positional_writes_stay_serial(tmp_path, source):
    torch = pytest.importorskip("torch")
    spec, src, tensors = source
    out = tmp_path / "o.pt"
    p = plan(spec, src, target_format="torch")
    execute(p, str(out), jobs=4)
    p.source.close()
    sd = torch.load(out, weights_only=True)
    np.testing.assert_array_equal(sd["out.2.a_t"].numpy(), tensors["t2.a"].T)


def test_run_reports_in_order_while_threads_move_on():
    """A slow first step does not hold up the threads, and done() still sees the steps in order."""
    import threading
    import time

    from mapspec import parallel

    gate = threading.Event()
    started, reported = [], []

    def work(i, prepared):
        started.append(i)
        if i == 0:
            assert gate.wait(10)
        elif i == 6:
            gate.set()  # step 6 can only start if steps 1..5 freed the second thread while step 0 ran
        return prepared * 10

    parallel.run(range(12), 2, lambda i: i, work, lambda i, r: reported.append((i, r)))
    assert reported == [(i, i * 10) for i in range(12)]
    assert set(started) == set(range(12))


def test_run_stops_at_the_first_failure():
    from mapspec import parallel

    ran = []

    def work(i, prepared):
        ran.append(i)
        if i == 3:
            raise ValueError("step 3 broke")

    with pytest.raises(ValueError, match="step 3"):
        parallel.run(range(200), 2, lambda i: i, work, lambda i, r: None)
    assert max(ran) < 3 + 2 * parallel.WINDOW + 2
