"""Temporary names and their removal (mapspec/durable.py): only ours, only stale."""

from __future__ import annotations

import os
import subprocess
import sys

from mapspec import durable


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid  # reaped: no process has it (until the pid is reused, which a test run will not reach)


def test_sweep_removes_only_stale_temporaries_of_this_machine(tmp_path):
    dead, other_host = _dead_pid(), "000000" if durable.HOST != "000000" else "111111"
    names = {
        f".ms-{durable.HOST}-{dead}-abcd1234.tmp": False,  # ours, process gone: removed
        f".ms-{durable.HOST}-{dead}-abcd1234.tmp.data": False,  # a writer's file beside it: removed
        f".ms-{durable.HOST}-{os.getpid()}-abcd1234.tmp": True,  # a live process's: kept
        f".ms-{other_host}-{dead}-abcd1234.tmp": True,  # another machine's (shared folder): kept
        ".ms-notes.tmp": True, "model.safetensors": True, f".ms-{durable.HOST}-{dead}-x.txt": True,
    }
    for n in names:
        (tmp_path / n).write_text("x")
    stale_dir = tmp_path / f".ms-{durable.HOST}-{dead}-0000ffff.tmp"
    (stale_dir / "sub").mkdir(parents=True)
    (stale_dir / "sub" / "shard.safetensors").write_text("x")
    durable.sweep(tmp_path)
    assert sorted(os.listdir(tmp_path)) == sorted(n for n, keep in names.items() if keep)


def test_temp_names_are_short_and_recognised(tmp_path):
    name = os.path.basename(durable.temp_name(tmp_path))
    assert name.startswith(durable.PREFIX) and len(name) < 40 and durable.is_temp(name)
    assert not durable.is_stale(name)  # this process is alive


def _recorded_writebacks(monkeypatch):
    calls = []
    record = lambda fd, off, n, flags: calls.append((off, n, flags)) or 0  # noqa: E731
    monkeypatch.setattr(durable, "_libc", lambda name, *types: record if name == "sync_file_range" else None)
    return calls


def test_durable_output_starts_writeback_of_every_tensor(tmp_path, monkeypatch):
    import numpy as np
    from safetensors.numpy import load_file, save_file

    import mapspec

    tensors = {f"t{i}": np.arange(i * 100, i * 100 + 64 * (i + 1), dtype=np.float32).reshape(-1, 8) for i in range(4)}
    save_file(tensors, str(tmp_path / "in.safetensors"))
    spec = tmp_path / "s.yaml"
    spec.write_text("mapspec: 1\nname: s\nsource: {format: safetensors}\ntarget: {format: safetensors}\n"
                    "rules:\n  - {from: 't<i>', to: 'u{i}'}\n")
    for sync in (True, False):
        calls = _recorded_writebacks(monkeypatch)
        out = tmp_path / f"out-{sync}.safetensors"
        mapspec.apply(str(spec), str(tmp_path / "in.safetensors"), str(out), sync=sync)
        got = load_file(str(out))
        assert all(np.array_equal(got[f"u{i}"], tensors[f"t{i}"]) for i in range(4))
        if not sync:
            assert calls == []  # --no-sync: the kernel's own schedule
            continue
        # one writeback per tensor, covering exactly its bytes in the output
        with open(out, "rb") as f:
            head = 8 + int.from_bytes(f.read(8), "little")
        import json
        with open(out, "rb") as f:
            f.seek(8)
            meta = json.loads(f.read(head - 8))
        want = sorted((head + v["data_offsets"][0], v["data_offsets"][1] - v["data_offsets"][0], 2)
                      for k, v in meta.items() if k != "__metadata__")
        assert sorted(calls) == want


def test_written_outside_a_durable_output_does_nothing(monkeypatch):
    calls = _recorded_writebacks(monkeypatch)
    durable.written(0, 0, 100)
    with durable.writing(False):
        durable.written(0, 0, 100)
    with durable.writing(True):
        durable.written(0, 0, 0)
    assert calls == []
