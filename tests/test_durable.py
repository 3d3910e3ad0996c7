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
