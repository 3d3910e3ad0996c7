"""Hostile input, round 2: bounded time and memory from a small input.

* Includes have a total budget (files loaded, rules) and the error shows the include chain.
* Plan computes every output size (and refuses shapes no array can have); apply refuses an
  output far larger than its source before writing anything unless ``--max-output-size``
  allows it; constants are not materialised at plan.
* ``ungroup`` of an empty tensor by a huge group count does not loop.
* A torch view claiming more bytes than its storage is refused.
* A deflated npz member is decompressed in bounded chunks (peak ~ the tensor, not twice).
* FIFOs as source, template or spec include are refused instead of blocking.
* Closest-name suggestions do bounded work whatever the number of source names.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mapspec import cli
from mapspec.errors import SpecError
from mapspec.formats import module, open_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def _run(*argv) -> tuple:
    o, e = io.StringIO(), io.StringIO()
    rc = cli.run([str(a) for a in argv], o, e)
    return rc, o.getvalue(), e.getvalue()


def _cli_child(*argv, timeout: float = 60) -> tuple:
    """The CLI in a child process (a hang or a crash in the code under test cannot stop the suite)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    code = "import sys; from mapspec import cli; sys.exit(cli.run(sys.argv[1:]))"
    try:
        p = subprocess.run([sys.executable, "-c", code, *map(str, argv)], capture_output=True, text=True,
                           timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"mapspec {' '.join(map(str, argv))} did not finish within {timeout} s")
    return p.returncode, p.stdout, p.stderr


def _one_error(rc: int, err: str, *words) -> None:
    assert rc == 1, err
    lines = err.strip().splitlines()
    assert lines and lines[0].startswith("mapspec: error: ") and "Traceback" not in err, err
    for w in words:
        assert w in err, err


# -- includes -------------------------------------------------------------------------------------

def test_include_fan_out_is_bounded(tmp_path):
    """7 small files, each including the next 10 times: 10^6 loads without a budget."""
    for i in range(7):
        inc = f"include: [{', '.join([f'f{i + 1}.yaml'] * 10)}]\n" if i < 6 else ""
        (tmp_path / f"f{i}.yaml").write_text(f"mapspec: 1\n{inc}rules: []\n")
    from mapspec.language.load import MAX_SPEC_FILES, load_spec

    t0 = time.perf_counter()
    with pytest.raises(SpecError) as e:
        load_spec(str(tmp_path / "f0.yaml"))
    assert time.perf_counter() - t0 < 30
    msg = str(e.value)
    assert f"more than {MAX_SPEC_FILES} spec files" in msg
    assert "f0.yaml -> f1.yaml -> f2.yaml" in msg  # the chain that got there


def test_include_rules_budget(tmp_path, monkeypatch):
    from mapspec.language import load

    monkeypatch.setattr(load, "MAX_RULES", 5)
    rules = "".join(f'  - {{from: "a{i}", to: "b{i}"}}\n' for i in range(4))
    (tmp_path / "inc.yaml").write_text(f"mapspec: 1\nrules:\n{rules}")
    (tmp_path / "main.yaml").write_text(f"mapspec: 1\ninclude: [inc.yaml]\nrules:\n{rules}")
    with pytest.raises(SpecError, match=r"more than 5 rules \(include chain: main.yaml -> inc.yaml\)"):
        load.load_spec(str(tmp_path / "main.yaml"))


# -- output sizes ---------------------------------------------------------------------------------

@pytest.fixture()
def small(tmp_path):
    src = tmp_path / "src.npz"
    module("npz").save(str(src), {"x": np.arange(2 * 1_000_000, dtype=np.float32).reshape(2, 1_000_000),
                                  "e": np.zeros((0, 3, 1, 1), dtype=np.float32)})
    return tmp_path, src


def _spec(d: Path, rules: str) -> Path:
    p = d / "s.yaml"
    p.write_text("mapspec: 1\nrules:\n" + rules)
    return p


@pytest.mark.slow
def test_take_with_100k_indices_is_refused_before_writing(small):
    d, src = small
    idx = ", ".join(["0", "1"] * 50_000)  # every row used (element coverage), 100k rows out
    spec = _spec(d, f'  - {{from: "x", to: "y", apply: [{{take: {{indices: [{idx}], axis: 0}}}}]}}\n'
                    f'  - {{from: "e", drop: true}}\n')
    rc, out, err = _cli_child("plan", spec, "-s", src)
    assert rc == 0, err
    assert "100000x1000000" in out  # plan computes the size
    assert "note: apply would refuse this: the output would be 400,000,000,000 bytes" in out
    for extra in ((), ("--max-output-size", "1GiB")):
        rc, _, err = _cli_child("apply", spec, "-s", src, "-o", d / "out.npz", *extra)
        _one_error(rc, err, "400,000,000,000 bytes", "--max-output-size")
        assert not (d / "out.npz").exists()


def test_max_output_size_flag(small):
    d, src = small
    spec = _spec(d, '  - {from: "x", to: "y"}\n  - {from: "e", drop: true}\n')
    rc, _, err = _run("apply", spec, "-s", src, "-o", d / "a.npz", "--max-output-size", "1KiB")
    _one_error(rc, err, "8,000,000 bytes", "1,024", "--max-output-size")
    assert not (d / "a.npz").exists()
    rc, _, err = _run("apply", spec, "-s", src, "-o", d / "a.npz", "--max-output-size", "any")
    assert rc == 0, err
    rc, _, err = _run("apply", spec, "-s", src, "-o", d / "b.npz", "--max-output-size", "lots")
    assert rc == 2 and "not a size" in err


def test_reshape_to_an_impossible_shape_fails_at_plan(small):
    d, src = small
    spec = _spec(d, f'  - {{from: "e", to: "y", apply: [{{reshape: [{2 ** 62}, {2 ** 62}, 0]}}]}}\n'
                    f'  - {{from: "x", drop: true}}\n')
    rc, _, err = _cli_child("plan", spec, "-s", src)
    assert rc == 1 and "Traceback" not in err, err
    assert "no array can have" in err and "rule 1" in err, err


def test_ungroup_of_an_empty_tensor_by_a_huge_count(small):
    d, src = small
    spec = _spec(d, '  - {from: "e", to: "y", apply: [{ungroup: 1000000000000}]}\n  - {from: "x", drop: true}\n')
    rc, _, err = _cli_child("apply", spec, "-s", src, "-o", d / "out.npz", timeout=60)
    assert rc == 0, err  # nothing to place: done at once
    with open_checkpoint(str(d / "out.npz")) as r:
        assert r.info("y").shape == (0, 3_000_000_000_000, 1, 1)


def test_huge_constant_is_not_built_at_plan(small):
    d, src = small
    spec = _spec(d, '  - {to: "c", value: 0, dtype: float32, shape: [100000, 1000000]}\n'
                    '  - {from: "x", to: "x"}\n  - {from: "e", drop: true}\n')
    from mapspec.engine import plan

    tracemalloc.start()
    try:
        p = plan(str(spec), str(src))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    p.source.close()
    assert p.ok and peak < 64 << 20, peak
    rc, _, err = _cli_child("apply", spec, "-s", src, "-o", d / "out.npz")
    _one_error(rc, err, "'c' (400,000,000,000 B)", "--max-output-size")


# -- readers --------------------------------------------------------------------------------------

def test_torch_stride_zero_view_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    p = tmp_path / "v.pth"
    torch.save({"big": torch.arange(4, dtype=torch.float32)[:1].expand(1 << 20, 1 << 10),
                "ok": torch.arange(6, dtype=torch.float32).reshape(2, 3)[:, 1]}, p)
    assert p.stat().st_size < 8192
    rc, _, err = _cli_child("inspect", p)
    _one_error(rc, err, "'big'", "stride-0", "4,294,967,296 bytes")


def test_torch_sound_views_still_read(tmp_path):
    torch = pytest.importorskip("torch")
    p = tmp_path / "v.pth"
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    torch.save({"col": base[:, 1], "t": base.t()}, p)
    with open_checkpoint(str(p)) as r:
        assert r.read("col").tolist() == [1.0, 5.0, 9.0]
        assert r.read("t").tolist() == [[0, 4, 8], [1, 5, 9], [2, 6, 10], [3, 7, 11]]


def test_npz_deflated_member_is_inflated_in_bounded_chunks(tmp_path):
    p = tmp_path / "z.npz"
    n = 16 << 20  # float32 values: 64 MiB, deflated to a few hundred KB
    arr = np.zeros(n, dtype=np.float32)
    arr[::4096] = np.arange(n // 4096, dtype=np.float32)
    np.savez_compressed(p, a=arr)
    assert p.stat().st_size < 4 << 20
    with open_checkpoint(str(p)) as r:
        tracemalloc.start()
        try:
            got = r.read("a")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < arr.nbytes + (16 << 20), peak  # the tensor plus a chunk, not twice the tensor
        np.testing.assert_array_equal(got, arr)


@pytest.mark.parametrize("role", ["source", "template", "inspect"])
def test_fifo_inputs_are_refused(tmp_path, role):
    fifo = tmp_path / "f.npz"
    os.mkfifo(fifo)
    src = tmp_path / "src.npz"
    module("npz").save(str(src), {"x": np.arange(3, dtype=np.float32)})
    spec = _spec(tmp_path, '  - {from: "x", to: "x"}\n')
    argv = {"source": ("plan", spec, "-s", fifo), "template": ("plan", spec, "-s", src, "--template", fifo),
            "inspect": ("inspect", fifo)}[role]
    rc, _, err = _cli_child(*argv, timeout=30)
    _one_error(rc, err, "FIFO", "not a regular file")


def test_fifo_include_is_refused(tmp_path):
    os.mkfifo(tmp_path / "inc.yaml")
    spec = tmp_path / "s.yaml"
    spec.write_text("mapspec: 1\ninclude: [inc.yaml]\nrules: []\n")
    rc, _, err = _cli_child("validate", spec, timeout=30)
    assert rc == 1 and "not a regular file" in err, err


# -- suggestions ----------------------------------------------------------------------------------

def test_suggestion_work_is_bounded(monkeypatch):
    import difflib

    from mapspec.engine import MAX_SUGGEST, MAX_SUGGESTIONS, plan
    from mapspec.formats import Reader, TensorInfo
    from mapspec.language.load import load_spec

    class Many(Reader):
        format = "fake"

        def __init__(self, n):
            super().__init__("many")
            for i in range(n):
                name = f"block{i % 97}.layer{i}.weight"
                self._infos[name] = TensorInfo(name, (1,), "float32")

    calls = {"n": 0}
    original = difflib.SequenceMatcher.set_seq1

    def counting(self, a):
        calls["n"] += 1
        return original(self, a)

    monkeypatch.setattr(difflib.SequenceMatcher, "set_seq1", counting)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        spec = Path(d) / "s.yaml"
        rules = "".join(f'  - {{from: "nomatch{i}.<x:path>", to: "t{i}.{{x}}"}}\n' for i in range(60))
        spec.write_text(f"mapspec: 1\nrelax: [unused-source]\nrules:\n{rules}")
        p = plan(load_spec(str(spec)), Many(50_000))
    assert len(p.unmatched_rules) == 60
    assert calls["n"] <= MAX_SUGGESTIONS * (MAX_SUGGEST + 1)  # not 60 x 50,000
