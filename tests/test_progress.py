"""Progress bars (mapspec/progress.py): on stderr only, forced, suppressed, or automatic on a terminal."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest

from mapspec import cli, progress
from mapspec.formats import module

MIB = 1 << 20


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(*argv, err=None):
    out, err = io.StringIO(), err if err is not None else io.StringIO()
    code = cli.run([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def job(tmp_path):
    src = tmp_path / "big.npz"
    # 3 MiB of float32 in two tensors
    module("npz").save(src, {"a": np.arange(2 * MIB // 4, dtype=np.float32), "b": np.arange(MIB // 4, dtype=np.float32)})
    spec = tmp_path / "s.yaml"
    spec.write_text("mapspec: 1\nrules:\n  - {from: a, to: x}\n  - {from: b, to: y}\n")
    return spec, src, tmp_path


def test_forced_bar_shows_bytes_rate_and_eta_on_stderr_only(job):
    spec, src, d = job
    code, out, err = run("apply", spec, "-s", src, "-o", d / "o.safetensors", "--progress")
    assert code == 0, err
    assert out.startswith("wrote ") and "apply" not in out.split(":")[0] and "\r" not in out
    final = err.replace("\r", "\n").strip().splitlines()[-1]
    # e.g. "apply: 100%|##########| 3.00MiB/3.00MiB [00:00<00:00, 52.1MiB/s, y]": bytes, elapsed<left, rate, tensor
    assert re.match(r"apply: 100%\|.*\| 3\.00MiB/3\.00MiB \[\d\d:\d\d<\d\d:\d\d, +[\d.]+[kMG]?iB/s, y\]$", final), final


def test_no_bar_when_piped_or_suppressed(job, monkeypatch):
    spec, src, d = job
    code, _, err = run("apply", spec, "-s", src, "-o", d / "o1.npz")  # stderr not a terminal: no bar
    assert code == 0 and err == ""
    monkeypatch.setattr(progress, "AUTO_DELAY", 0)
    code, _, err = run("apply", spec, "-s", src, "-o", d / "o2.npz", "--no-progress", err=Terminal())
    assert code == 0 and err == ""
    code, _, err = run("apply", spec, "-s", src, "-o", d / "o3.npz", "-q", err=Terminal())
    assert code == 0 and err == ""


def test_automatic_bar_on_a_terminal(job, monkeypatch):
    spec, src, d = job
    monkeypatch.setattr(progress, "AUTO_DELAY", 0)
    code, out, err = run("apply", spec, "-s", src, "-o", d / "o.npz", err=Terminal())
    assert code == 0
    assert "apply:" in err and "/3.00MiB [" in err and "apply" not in out


def test_diff_bar_counts_the_compared_bytes(job):
    spec, src, d = job
    code, _, err = run("diff", src, src, "--progress")
    assert code == 0
    final = err.replace("\r", "\n").strip().splitlines()[-1]
    assert re.match(r"diff: 100%\|.*\| 3\.00MiB/3\.00MiB \[", final), final
