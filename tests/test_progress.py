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


NET = '''import torch


def net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
'''
RULES = "".join(f"  - {{from: '{n}', to: '{n}'}}\n" for n in ("0.weight", "0.bias", "2.weight", "2.bias"))


@pytest.fixture
def verify_job(tmp_path):
    """A two-Linear torch net converted npz -> safetensors (23 float32 values: 92 bytes a side)."""
    torch = pytest.importorskip("torch")
    (tmp_path / "m.py").write_text(NET)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    module("npz").save(tmp_path / "src.npz", {k: v.detach().numpy() for k, v in net.state_dict().items()})
    spec = tmp_path / "s.yaml"
    spec.write_text("mapspec: 1\nsource: {format: npz}\ntarget: {format: safetensors}\nverify:\n"
                    "  source: {run: torch}\n  target: {run: torch}\n  input: {shape: [1, 4]}\nrules:\n" + RULES)
    assert run("apply", spec, "-s", tmp_path / "src.npz", "-o", tmp_path / "out.safetensors")[0] == 0
    model = f"{tmp_path / 'm.py'}:net"
    return [spec, "-s", tmp_path / "src.npz", "-c", tmp_path / "out.safetensors", "--source-model", model,
            "--target-model", model]


def _finals(err: str) -> dict:
    """The last drawing of each bar, by its label."""
    lines = [l for l in err.replace("\r", "\n").splitlines() if ":" in l]
    return {l.split(":")[0]: l for l in lines}


def test_verify_bars_count_loaded_bytes_then_steps(verify_job):
    code, out, err = run("verify", *verify_job, "--layers", "--progress")
    assert code == 0, err
    assert "PASS" in out and "load" not in out and "steps" not in out and "\r" not in out
    finals = _finals(err)
    # both sides' weights: 2 x 92 bytes
    assert re.match(r"load: 100%\|.*\| 184iB/184iB \[.*, target out\.safetensors\]$", finals["load"]), finals
    # run the source, run the target, compare layers 0 and 2 (the ReLU has no weights, so no pair)
    assert re.match(r"verify: 100%\|.*\| 4/4 steps \[.*, compare layers\]$", finals["verify"]), finals
    code, _, err = run("verify", *verify_job, "--progress")  # without --layers: the two runs
    assert code == 0 and "| 2/2 steps [" in _finals(err)["verify"]


def test_verify_bar_only_on_a_terminal(verify_job, monkeypatch):
    code, out, err = run("verify", *verify_job, "--layers")
    assert code == 0 and err == "" and "PASS" in out
    monkeypatch.setattr(progress, "AUTO_DELAY", 0)
    code, _, err = run("verify", *verify_job, err=Terminal())
    assert code == 0 and "load:" in err and "verify:" in err
    code, _, err = run("verify", *verify_job, "--no-progress", err=Terminal())
    assert code == 0 and err == ""


class Recorder:
    def __init__(self, log, desc, total, unit):
        self.log, self.desc = log, desc
        log.append((desc, total, unit))

    def update(self, n=1):
        self.log.append((self.desc, n))

    def set_postfix_str(self, text, refresh=True):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def test_verify_reports_each_tensor_loaded(verify_job):
    from mapspec.language.load import load_spec
    from mapspec.verify import run_verify

    spec, _, src, _, conv, _, model = verify_job[:7]
    log = []
    v = run_verify(load_spec(str(spec)), str(src), str(conv), source_model=model, target_model=model,
                   progress=lambda *a: Recorder(log, *a))
    assert v.ok
    tensors = [("load", 48), ("load", 12), ("load", 24), ("load", 8)]  # 3x4, 3, 2x3, 2 float32, in file order
    assert log == [("load", 184, "iB"), *tensors, ("load", 0), *tensors, ("load", 0),
                   ("verify", 2, "step"), ("verify", 1), ("verify", 1)]


def test_inspect_bar_over_shards(job):
    spec, src, d = job
    assert run("apply", spec, "-s", src, "-o", f"{d / 'sh'}/", "--max-shard-size", "2MiB")[0] == 0
    code, out, err = run("inspect", d / "sh", "--progress")
    assert code == 0 and "2 safetensors shards" in out and "inspect" not in out
    assert re.match(r"inspect: 100%\|.*\| 2/2 shards \[.*model-00002-of-00002\.safetensors\]$",
                    _finals(err)["inspect"]), err
    code, _, err = run("inspect", d / "sh")  # piped: nothing
    assert code == 0 and err == ""
    code, _, err = run("inspect", src, "--progress")  # one file is metadata only: no bar (README)
    assert code == 0 and err == ""
