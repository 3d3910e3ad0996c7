"""Hostile input, round 2: what mapspec writes.

* Only a regular file (or a symlink to one) is ever replaced: FIFOs, devices, directories
  never, a dangling symlink only with ``--force``, a name with a trailing slash never.
* ``--report`` follows the output's rules (no overwrite without ``--force``, never a source,
  never the output), and a report that fails after a good output says what was written.
* No-overwrite is atomic: of two applies racing for one output, exactly one wins.
* SIGTERM and SIGHUP unwind like Ctrl-C; with O_TMPFILE even SIGKILL leaves no file behind.
* Temporary names are short: a legal 250-character output name works.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from proc_util import default_signals

from mapspec import cli
from mapspec.formats import module, open_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def _ar(shape, start=0) -> np.ndarray:
    return (np.arange(int(np.prod(shape))) + start).astype(np.float32).reshape(shape)


@pytest.fixture()
def case(tmp_path):
    src = tmp_path / "src.npz"
    module("npz").save(str(src), {f"l{i}.weight": _ar((3, 4), start=10 * i) for i in range(3)})
    spec = tmp_path / "s.yaml"
    spec.write_text('mapspec: 1\nrules:\n  - from: "l<i>.weight"\n    to: "layer{i}.w"\n')
    return tmp_path, spec, src


def _run(*argv) -> tuple:
    o, e = io.StringIO(), io.StringIO()
    rc = cli.run([str(a) for a in argv], o, e)
    return rc, o.getvalue(), e.getvalue()


def _apply(spec, src, out, *extra) -> tuple:
    return _run("apply", spec, "--source", src, "--output", out, *extra)


def _files(d: Path) -> set:
    return {p.name for p in d.iterdir()}


def _one_error(err: str, *words) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mapspec: error: "), err
    for w in words:
        assert w in err, err


# -- what may be replaced ---------------------------------------------------------------------

@pytest.mark.parametrize("flag", [(), ("--force",)], ids=["plain", "force"])
def test_fifo_output_is_never_replaced(case, flag):
    d, spec, src = case
    fifo = d / "out.safetensors"
    os.mkfifo(fifo)
    rc, _, err = _apply(spec, src, fifo, *flag)
    assert rc == 1
    _one_error(err, "FIFO", "not a regular file")
    assert fifo.is_fifo()


def test_device_output_is_never_replaced(case, tmp_path):
    d, spec, src = case
    link = d / "null.safetensors"
    link.symlink_to("/dev/null")  # a symlink to a device: the device is what would be replaced
    rc, _, err = _apply(spec, src, link, "--force")
    assert rc == 1
    _one_error(err, "a device")
    assert link.is_symlink() and os.readlink(link) == "/dev/null"


def test_directory_report_and_trailing_slash(case):
    """(A directory, or a name ending in a slash, as the output is a sharded output folder; as the
    report it is refused.)"""
    d, spec, src = case
    (d / "dir.json").mkdir()
    rc, _, err = _apply(spec, src, d / "new.npz", "--report", d / "dir.json", "--force")
    assert rc == 1
    _one_error(err, "--report is a directory")
    assert (d / "dir.json").is_dir() and not (d / "new.npz").exists()
    rc, _, err = _apply(spec, src, d / "new.npz", "--report", str(d / "r.json") + "/")
    assert rc == 1
    _one_error(err, "--report names a directory (trailing slash)")
    assert not (d / "new.npz").exists() and not (d / "r.json").exists()


def test_dangling_symlink_needs_force(case):
    d, spec, src = case
    link = d / "out.npz"
    link.symlink_to(d / "missing-target.npz")
    rc, _, err = _apply(spec, src, link)
    assert rc == 1
    _one_error(err, "dangling symlink", "--force")
    assert link.is_symlink() and not (d / "missing-target.npz").exists()
    rc, _, err = _apply(spec, src, link, "--force")
    assert rc == 0, err
    assert link.is_file() and not link.is_symlink()
    with open_checkpoint(str(link)) as r:
        np.testing.assert_array_equal(r.read("layer2.w"), _ar((3, 4), start=20))


def test_250_character_output_name(case):
    d, spec, src = case
    out = d / ("o" * 244 + ".npz")  # 248 characters: legal (255 max), with no room for a long temp suffix
    rc, _, err = _apply(spec, src, out)
    assert rc == 0, err
    with open_checkpoint(str(out)) as r:
        np.testing.assert_array_equal(r.read("layer0.w"), _ar((3, 4)))


# -- --report -----------------------------------------------------------------------------------

def test_report_does_not_overwrite_without_force(case):
    d, spec, src = case
    report = d / "r.json"
    report.write_text("precious")
    rc, _, err = _apply(spec, src, d / "out.npz", "--report", report)
    assert rc == 1
    _one_error(err, "--report", "--force")
    assert report.read_text() == "precious"
    assert not (d / "out.npz").exists()  # refused before anything was converted
    rc, _, err = _apply(spec, src, d / "out.npz", "--report", report, "--force")
    assert rc == 0, err
    import json

    doc = json.loads(report.read_text())
    assert [t["target"] for t in doc["tensors"]] == ["layer0.w", "layer1.w", "layer2.w"]


def test_report_never_replaces_the_source_or_the_output(case):
    d, spec, src = case
    before = src.read_bytes()
    rc, _, err = _apply(spec, src, d / "out.npz", "--report", src, "--force")
    assert rc == 1
    _one_error(err, "source")
    assert src.read_bytes() == before and not (d / "out.npz").exists()
    rc, _, err = _apply(spec, src, d / "out.npz", "--report", d / "out.npz", "--force")
    assert rc == 1
    _one_error(err, "same file")
    assert not (d / "out.npz").exists()
    rc, _, err = _apply(spec, src, src, "--force")  # the output replacing its own source
    assert rc == 1
    _one_error(err, "source")
    assert src.read_bytes() == before


def test_failed_report_says_what_was_written(case, monkeypatch):
    d, spec, src = case
    import json

    def broken(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(json, "dump", broken)
    rc, out, err = _apply(spec, src, d / "out.npz", "--report", d / "r.json")
    assert rc == 1
    _one_error(err, "wrote", "out.npz", "3 tensors", "report was not written", "No space left")
    assert (d / "out.npz").is_file() and not (d / "r.json").exists()
    assert not [n for n in _files(d) if n.endswith(".tmp")]


def test_interrupted_report_says_what_was_written(case, monkeypatch):
    d, spec, src = case
    import json

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(json, "dump", interrupted)
    rc, out, err = _apply(spec, src, d / "out.npz", "--report", d / "r.json")
    assert rc == 130
    assert "wrote" in err and "out.npz" in err and "report was not written (interrupted)" in err, err
    assert "no output was written" not in err
    assert (d / "out.npz").is_file() and not (d / "r.json").exists()
    assert not [n for n in _files(d) if n.endswith(".tmp")]


# -- no-replace is atomic -----------------------------------------------------------------------

def test_output_created_while_writing_is_not_overwritten(case, monkeypatch):
    """Another process creates the output after our check: the final step must notice."""
    d, spec, src = case
    out = d / "out.npz"
    from mapspec.formats import npz

    original = npz.NpzWriter.close

    def close(self):
        original(self)
        out.write_bytes(b"the other process's output")

    monkeypatch.setattr(npz.NpzWriter, "close", close)
    rc, _, err = _apply(spec, src, out)
    assert rc == 1
    _one_error(err, "created by someone else", "unchanged")
    assert out.read_bytes() == b"the other process's output"
    assert not [n for n in _files(d) if n.endswith(".tmp")]


_DRIVER = textwrap.dedent("""
    import os, sys, time
    from mapspec import cli
    from mapspec.formats import npz
    marker, wait_for = sys.argv[1], sys.argv[2]
    original = npz.NpzWriter.write
    def write(self, name, array):
        if not os.path.exists(marker):
            open(marker, "w").close()
            deadline = time.time() + 60
            while wait_for and not os.path.exists(wait_for) and time.time() < deadline:
                time.sleep(0.01)
            if not wait_for:
                time.sleep(60)  # until signalled
        return original(self, name, array)
    npz.NpzWriter.write = write
    sys.exit(cli.run(sys.argv[3:]))
""")


def _driver(d: Path, marker: str, wait_for: str, *argv) -> subprocess.Popen:
    script = d / "driver.py"
    script.write_text(_DRIVER)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, str(script), marker, wait_for, *map(str, argv)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_signals)


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the child never started writing"
        time.sleep(0.01)


def test_two_concurrent_applies_exactly_one_wins(case):
    d, spec, src = case
    out = d / "out.npz"
    work = d / "work"
    work.mkdir()
    a = _driver(work, str(work / "a"), str(work / "b"), "apply", spec, "-s", src, "-o", out)
    b = _driver(work, str(work / "b"), str(work / "a"), "apply", spec, "-s", src, "-o", out)
    ra, rb = a.wait(120), b.wait(120)
    errs = a.stderr.read() + b.stderr.read()
    assert sorted([ra, rb]) == [0, 1], errs
    assert "created by someone else" in errs or "output exists" in errs
    with open_checkpoint(str(out)) as r:
        np.testing.assert_array_equal(r.read("layer1.w"), _ar((3, 4), start=10))
    assert not [n for n in _files(d) if n.endswith(".tmp")]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
def test_signals_leave_nothing_and_keep_the_old_output(case, sig):
    d, spec, src = case
    out = d / "out.npz"
    out.write_bytes(b"old output")
    work = d / "work"
    work.mkdir()
    before = _files(d)
    p = _driver(work, str(work / "started"), "", "apply", spec, "-s", src, "-o", out, "--force")
    _wait_for(work / "started", p)
    p.send_signal(sig)
    rc = p.wait(60)
    err = p.stderr.read()
    assert rc == 128 + sig, err
    assert "no output was written" in err and "Traceback" not in err, err
    assert out.read_bytes() == b"old output"
    assert _files(d) == before


@pytest.mark.skipif(not hasattr(os, "O_TMPFILE"), reason="O_TMPFILE is Linux-only")
def test_sigkill_leaves_no_temporary_file(case):
    d, spec, src = case
    work = d / "work"
    work.mkdir()
    before = _files(d)
    p = _driver(work, str(work / "started"), "", "apply", spec, "-s", src, "-o", d / "out.npz")
    _wait_for(work / "started", p)
    p.kill()
    p.wait(60)
    assert _files(d) == before  # the unnamed temporary file died with the process


@pytest.mark.parametrize("link_fails", [False, True], ids=["named-temp", "no-hard-links"])
def test_fallback_without_o_tmpfile(case, monkeypatch, link_fails):
    """Where O_TMPFILE is missing: a short-named temporary file, linked (or, without hard links,
    renamed) into place; the same no-overwrite and cleanup rules."""
    import errno

    from mapspec import files as base

    d, spec, src = case
    monkeypatch.setattr(base, "_anonymous_file", lambda parent: None)
    if link_fails:
        def no_link(source, dest):
            raise OSError(errno.EPERM, "Operation not permitted")
        monkeypatch.setattr(base, "_link", no_link)
    out = d / "out.npz"
    rc, _, err = _apply(spec, src, out)
    assert rc == 0, err
    with open_checkpoint(str(out)) as r:
        np.testing.assert_array_equal(r.read("layer2.w"), _ar((3, 4), start=20))
    assert not [n for n in _files(d) if n.endswith(".tmp")]
    before = out.read_bytes()
    rc, _, err = _apply(spec, src, out)
    assert rc == 1 and "--force" in err and out.read_bytes() == before
    rc, _, err = _apply(spec, src, out, "--force")
    assert rc == 0, err
    assert not [n for n in _files(d) if n.endswith(".tmp")]


def test_signal_at_the_final_link_reports_the_written_output(case, monkeypatch):
    """A SIGTERM that lands while the output is being linked into place: the link completes and the
    message names the output as written (not "no output was written")."""
    from mapspec import files as base

    d, spec, src = case
    original = base._publish

    def publish_then_signal(*a, **k):
        os.kill(os.getpid(), signal.SIGTERM)  # pending while the link is made
        return original(*a, **k)

    monkeypatch.setattr(base, "_publish", publish_then_signal)
    rc, _, err = _apply(spec, src, d / "out.npz")
    assert rc == 128 + signal.SIGTERM, err
    assert "SIGTERM: stopped" in err and "out.npz was written completely" in err, err
    with open_checkpoint(str(d / "out.npz")) as r:
        np.testing.assert_array_equal(r.read("layer2.w"), _ar((3, 4), start=20))
    assert not [n for n in _files(d) if n.endswith(".tmp")]
