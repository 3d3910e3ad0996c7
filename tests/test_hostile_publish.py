"""Hostile input, round 3: putting outputs in place.

* A sharded output is published as one: at every instant its folder holds the old complete
  checkpoint or the new one (read here through the index with the safetensors package), on
  SIGINT, SIGTERM and SIGKILL, mid-write and mid-publish, with real signals on real processes.
* SIGKILL leaves only hidden ``.ms-...tmp`` temporaries, which the next run there removes.
* A file a writer puts beside its output (ONNX ``OUT.onnx.data``) follows the output's rules.
* Durable by default: data fsync'ed before it is linked or renamed into place, the folder after;
  ``--no-sync`` turns it off.
"""

from __future__ import annotations

import io
import json
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
from mapspec.formats import module

ROOT = Path(__file__).resolve().parent.parent
N = 6  # tensors; 2 per shard at --max-shard-size 100 -> 3 shards


def _ar(shape, start=0) -> np.ndarray:
    return (np.arange(int(np.prod(shape))) + start).astype(np.float32).reshape(shape)


def _source(path: Path, start: int) -> Path:
    module("npz").save(str(path), {f"l{i}.weight": _ar((3, 4), start=start + 100 * i) for i in range(N)})
    return path


@pytest.fixture()
def case(tmp_path):
    """A folder D holding an old sharded checkpoint (values from 0) beside a config.json, and a new
    source (values from 5000) that converts to the same shard names."""
    spec = tmp_path / "s.yaml"
    spec.write_text('mapspec: 1\nrules:\n  - from: "l<i>.weight"\n    to: "layer{i}.w"\n')
    old, new = _source(tmp_path / "old.npz", 0), _source(tmp_path / "new.npz", 5000)
    d = tmp_path / "D"
    rc, _, err = _run("apply", spec, "-s", old, "-o", str(d) + "/", "--max-shard-size", "100")
    assert rc == 0, err
    (d / "config.json").write_text('{"model_type": "test"}')
    return tmp_path, spec, new, d


def _run(*argv) -> tuple:
    o, e = io.StringIO(), io.StringIO()
    rc = cli.run([str(a) for a in argv], o, e)
    return rc, o.getvalue(), e.getvalue()


def state(d: Path) -> str:
    """'old', 'new' or 'none' (no index): what a reader through the index gets; AssertionError on a mix."""
    from safetensors.numpy import load_file

    index = d / "model.safetensors.index.json"
    if not index.exists():
        return "none"
    wm = json.loads(index.read_text())["weight_map"]
    starts = set()
    for name, shard in wm.items():
        t = load_file(str(d / shard))[name]
        i = int(name[len("layer"):-len(".w")])
        starts.add(int(t.flat[0]) - 100 * i)
        np.testing.assert_array_equal(t, _ar((3, 4), start=int(t.flat[0])))
    assert sorted(wm) == [f"layer{i}.w" for i in range(N)]
    assert len(starts) == 1, f"a mix of checkpoints: {starts}"
    return {0: "old", 5000: "new"}[starts.pop()]


def _visible(d: Path) -> set:
    return {n for n in os.listdir(d) if not n.startswith(".")}


def _hidden(*dirs: Path) -> list:
    return [n for d in dirs if d.exists() for n in os.listdir(d) if n.startswith(".")]


# -- real processes, real signals ----------------------------------------------------------------

_DRIVER = textwrap.dedent("""
    import os, sys, time
    from mapspec import cli
    from mapspec.formats import npz
    phase, marker = sys.argv[1], sys.argv[2]

    def pause():
        open(marker, "w").close()
        time.sleep(3 if os.environ.get("SHORT") else 60)

    if phase == "write":  # the third source tensor read: shards are being written in the staging folder
        read = npz.NpzReader._read
        seen = []
        def _read(self, info):
            seen.append(info.name)
            if len(seen) == 3:
                pause()
            return read(self, info)
        npz.NpzReader._read = _read
    elif phase in ("before-swap", "after-swap"):
        from mapspec import durable
        exchange = durable.exchange
        def swap(a, b):
            if phase == "before-swap":
                pause()
            done = exchange(a, b)
            if phase == "after-swap":
                pause()
            return done
        durable.exchange = swap
    elif phase == "named":  # a writer that needs a named temporary (Keras HDF5, ONNX with external data)
        from mapspec import files as base
        base._anonymous_file = lambda parent: None
        write = npz.NpzWriter.write
        def slow_write(self, name, array):
            pause()
            return write(self, name, array)
        npz.NpzWriter.write = slow_write
    elif phase == "in-place":  # no exchange: shards renamed one by one, the index last
        from mapspec.formats import shard_output
        shard_output._swappable = lambda d: False
        replace, n = os.replace, []
        def slow_replace(a, b):
            replace(a, b)
            n.append(b)
            if len(n) == 2:
                pause()
        os.replace = slow_replace
    sys.exit(cli.run(sys.argv[3:]))
""")


def _driver(work: Path, phase: str, *argv, short: bool = False) -> subprocess.Popen:
    script = work / "driver.py"
    script.write_text(_DRIVER)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if short:
        env["SHORT"] = "1"
    return subprocess.Popen([sys.executable, str(script), phase, str(work / "paused"), *map(str, argv)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_signals)


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the child never reached the phase"
        time.sleep(0.01)


def _apply_new(tmp_path, spec, new, d, phase, short=False):
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    (work / "paused").unlink(missing_ok=True)
    p = _driver(work, phase, "apply", spec, "-s", new, "-o", str(d) + "/", "--max-shard-size", "100",
                "--force", "-j", "1", short=short)
    _wait_for(work / "paused", p)
    return p


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_signal_mid_write_keeps_the_old_checkpoint_whole(case, sig):
    tmp_path, spec, new, d = case
    before = _visible(d)
    p = _apply_new(tmp_path, spec, new, d, "write")
    assert state(d) == "old"
    p.send_signal(sig)
    rc = p.wait(60)
    err = p.stderr.read()
    assert rc == 128 + sig, err
    assert "no output was written" in err and "Traceback" not in err, err
    assert state(d) == "old" and _visible(d) == before
    assert _hidden(d, tmp_path) == []  # the staging folder is gone


@pytest.mark.slow  # signals to child processes
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
@pytest.mark.parametrize("phase", ["before-swap", "after-swap"])
def test_signal_during_publish_completes_it(case, sig, phase):
    """A signal while the checkpoint is being put in place is held until it is: the new one, whole."""
    tmp_path, spec, new, d = case
    p = _apply_new(tmp_path, spec, new, d, phase, short=True)
    p.send_signal(sig)
    rc = p.wait(60)
    err = p.stderr.read()
    assert rc == 128 + sig, err
    assert "model.safetensors.index.json was written completely" in err, err
    assert state(d) == "new" and (d / "config.json").read_text() == '{"model_type": "test"}'
    assert _hidden(d, tmp_path) == []


@pytest.mark.parametrize("phase", ["write", "before-swap", "after-swap"])
def test_sigkill_leaves_old_or_new_and_only_our_temporaries(case, phase):
    tmp_path, spec, new, d = case
    p = _apply_new(tmp_path, spec, new, d, phase)
    p.kill()
    p.wait(60)
    assert state(d) == ("new" if phase == "after-swap" else "old")
    assert (d / "config.json").exists()
    assert _visible(d) == {"config.json", "model.safetensors.index.json"} | {
        f"model-0000{k}-of-00003.safetensors" for k in (1, 2, 3)}
    left = _hidden(d, tmp_path)
    assert left and all(n.startswith(".ms-") and ".tmp" in n for n in left), left
    # the next run in that place removes them (their process is gone) and publishes whole
    rc, _, err = _run("apply", spec, "-s", new, "-o", str(d) + "/", "--max-shard-size", "100", "--force")
    assert rc == 0, err
    assert state(d) == "new" and _hidden(d, tmp_path) == []


def test_a_live_process_temporaries_are_not_removed(case):
    """Only temporaries of a process that is gone are removed: a running conversion's are kept."""
    tmp_path, spec, new, d = case
    p = _apply_new(tmp_path, spec, new, d, "write")
    try:
        mine = _hidden(tmp_path)
        assert mine
        rc, _, err = _run("apply", spec, "-s", new, "-o", tmp_path / "other.npz")
        assert rc == 0, err
        assert set(mine) <= set(_hidden(tmp_path))
    finally:
        p.kill()
        p.wait(60)


def test_in_place_fallback_never_shows_a_mix(case):
    """Without the folder swap (another OS, a mount point): the old index is moved away before shards of
    the same names are replaced, so a reader sees the old checkpoint, none, or the new one; never a mix."""
    tmp_path, spec, new, d = case
    p = _apply_new(tmp_path, spec, new, d, "in-place")
    assert state(d) == "none"  # two new shards in place, the old index gone, the new not yet there
    p.kill()
    p.wait(60)
    assert state(d) == "none" and (d / "config.json").exists()
    rc, _, err = _run("apply", spec, "-s", new, "-o", str(d) + "/", "--max-shard-size", "100", "--force")
    assert rc == 0, err
    assert state(d) == "new" and _hidden(d, tmp_path) == []


def test_sigkill_of_a_named_temporary_writer(tmp_path):
    """Formats whose writer needs a name leave a hidden .ms-...tmp after kill -9; the next run removes it."""
    spec = tmp_path / "s.yaml"
    spec.write_text('mapspec: 1\nrules:\n  - from: "l<i>.weight"\n    to: "layer{i}.w"\n')
    src = _source(tmp_path / "src.npz", 0)
    work = tmp_path / "work"
    work.mkdir()
    out = tmp_path / "out" / "o.npz"
    out.parent.mkdir()
    p = _driver(work, "named", "apply", spec, "-s", src, "-o", out)
    _wait_for(work / "paused", p)
    p.kill()
    p.wait(60)
    left = os.listdir(out.parent)
    assert len(left) == 1 and left[0].startswith(".ms-") and left[0].endswith(".tmp"), left
    rc, _, err = _run("apply", spec, "-s", src, "-o", out)
    assert rc == 0, err
    assert os.listdir(out.parent) == ["o.npz"]


# -- in-process: what the swap keeps -------------------------------------------------------------

def test_force_keeps_other_files_and_removes_stale_shards(case):
    tmp_path, spec, new, d = case
    (d / "sub").mkdir()
    (d / "sub" / "notes.txt").write_text("mine")
    (d / "link").symlink_to("config.json")
    ino = (d / "config.json").stat().st_ino
    rc, _, err = _run("apply", spec, "-s", new, "-o", str(d) + "/", "--max-shard-size", "150", "--force")
    assert rc == 0, err
    assert state(d) == "new"
    assert _visible(d) == {"config.json", "sub", "link", "model.safetensors.index.json",
                           "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
    assert (d / "config.json").stat().st_ino == ino  # the same file, not a copy
    assert (d / "sub" / "notes.txt").read_text() == "mine" and os.readlink(d / "link") == "config.json"
    assert _hidden(d, tmp_path) == []


def test_symlinked_output_folder_stays_a_symlink(case):
    tmp_path, spec, new, d = case
    link = tmp_path / "L"
    link.symlink_to(d)
    rc, _, err = _run("apply", spec, "-s", new, "-o", str(link) + "/", "--max-shard-size", "100", "--force")
    assert rc == 0, err
    assert link.is_symlink() and state(d) == "new"


# -- files beside the output ----------------------------------------------------------------------

def test_onnx_external_data_is_not_clobbered(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 3])
    inits = [numpy_helper.from_array(np.zeros((2, 3), np.float32), n) for n in ("layer0.w", "layer1.w")]
    nodes = [helper.make_node("Add", ["x", "layer0.w"], ["y"]), helper.make_node("Add", ["y", "layer1.w"], ["out"])]
    m = helper.make_model(helper.make_graph(nodes, "g", [inp], [out], initializer=inits),
                          opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(m, str(tmp_path / "t.onnx"))
    module("npz").save(str(tmp_path / "src.npz"), {"l0.weight": _ar((2, 3)), "l1.weight": _ar((2, 3), 10)})
    spec = tmp_path / "s.yaml"
    spec.write_text('mapspec: 1\nrules:\n  - from: "l<i>.weight"\n    to: "layer{i}.w"\n')
    data = tmp_path / "OUT.onnx.data"
    data.write_bytes(b"someone else's file")
    argv = ("apply", spec, "-s", tmp_path / "src.npz", "-t", tmp_path / "t.onnx", "-o", tmp_path / "OUT.onnx",
            "--target-option", "external_data=true", "--target-option", "size_threshold=0")
    rc, _, err = _run(*argv)
    assert rc == 1 and "OUT.onnx.data" in err and "--force" in err, err
    assert data.read_bytes() == b"someone else's file" and not (tmp_path / "OUT.onnx").exists()
    assert _hidden(tmp_path) == []
    rc, _, err = _run(*argv, "--force")
    assert rc == 0, err
    got = onnx.load(str(tmp_path / "OUT.onnx"))  # onnx reads OUT.onnx.data itself
    assert {t.name: numpy_helper.to_array(t).tolist() for t in got.graph.initializer} == {
        "layer0.w": _ar((2, 3)).tolist(), "layer1.w": _ar((2, 3), 10).tolist()}
    assert _hidden(tmp_path) == []


# -- durability -----------------------------------------------------------------------------------

def _trace(monkeypatch) -> list:
    """Every fsync (of a file or a folder: its path) and every rename/link, in order."""
    events = []
    real_fsync, real_replace, real_rename, real_link = os.fsync, os.replace, os.rename, os.link

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def wrap(kind, real):
        def f(a, b, *args, **kw):
            events.append((kind, os.fspath(b)))
            return real(a, b, *args, **kw)
        return f

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", wrap("rename", real_replace))
    monkeypatch.setattr(os, "rename", wrap("rename", real_rename))
    monkeypatch.setattr(os, "link", wrap("link", real_link))
    return events


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc/self/fd")
def test_single_file_synced_before_it_is_linked_and_folder_after(tmp_path, monkeypatch):
    spec = tmp_path / "s.yaml"
    spec.write_text('mapspec: 1\nrules:\n  - from: "l<i>.weight"\n    to: "layer{i}.w"\n')
    src = _source(tmp_path / "src.npz", 0)
    events = _trace(monkeypatch)
    rc, _, err = _run("apply", spec, "-s", src, "-o", tmp_path / "out.npz")
    assert rc == 0, err
    kinds = [k for k, _ in events]
    first_link = kinds.index("link")
    assert "fsync" in kinds[:first_link], events  # the data, before its name
    assert ("fsync", str(tmp_path)) in events[first_link:], events  # the folder, after
    events.clear()
    rc, _, err = _run("apply", spec, "-s", src, "-o", tmp_path / "out2.npz", "--no-sync")
    assert rc == 0, err
    assert not [e for e in events if e[0] == "fsync"], events


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc/self/fd")
def test_shards_synced_then_index_then_folders(case, monkeypatch):
    tmp_path, spec, new, d = case
    events = _trace(monkeypatch)
    rc, _, err = _run("apply", spec, "-s", new, "-o", str(d) + "/", "--max-shard-size", "100", "--force")
    assert rc == 0, err
    synced = [os.path.basename(p) for k, p in events if k == "fsync"]
    shards = [f"model-0000{k}-of-00003.safetensors" for k in (1, 2, 3)]
    assert synced[:4] == shards + ["model.safetensors.index.json"], synced
    assert synced[4:-2] and all(n.startswith(".ms-") for n in synced[4:-2]), synced  # the staging folder
    assert synced[-2:] == ["D", tmp_path.name], synced  # after the swap: the folder and its parent
    events.clear()
    rc, _, err = _run("apply", spec, "-s", new, "-o", str(d) + "/", "--max-shard-size", "100", "--force",
                      "--no-sync")
    assert rc == 0, err
    assert not [e for e in events if e[0] == "fsync"] and state(d) == "new"
