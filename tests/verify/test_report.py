"""`mapspec verify --report FILE.html` (mapspec/verify/report.py): the per-layer error drawn along the network,
one self-contained page (no URL, no script), every layer in it, the first divergence marked."""

from __future__ import annotations

import io
import math
import os
import re

import pytest

from mapspec import cli
from mapspec.verify.core import Verdict
from mapspec.verify.layers import LayerResult
from mapspec.verify.metrics import Comparison
from mapspec.verify.report import html_report

torch = pytest.importorskip("torch")

NET = """import torch.nn as nn


def net():
    return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(),
                         nn.Linear(6, 4))
"""
SPEC = """mapspec: 1
name: {name}
source: {{format: torch}}
target: {{format: torch}}
rules:
{first}  - from: "<i>.<p:word>"
    to: "{{i}}.{{p}}"
"""
BREAK = """  - from: "2.weight"
    to: "2.weight"
    apply: [{mul: 2}]
"""


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.run([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def job(tmp_path):
    """A 4-Linear torch net (seeded), a spec that copies it and one that doubles layer 2's weight."""
    (tmp_path / "net.py").write_text(NET)
    torch.manual_seed(0)
    import importlib.util

    spec = importlib.util.spec_from_file_location("report_net", tmp_path / "net.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.save(mod.net().state_dict(), tmp_path / "a.pth")
    (tmp_path / "good.yaml").write_text(SPEC.format(name="good", first=""))
    (tmp_path / "broken.yaml").write_text(SPEC.format(name="broken", first=BREAK))
    return tmp_path


def _verify(d, spec, *extra):
    out = d / f"{spec}.pth"
    if not out.exists():
        assert run("apply", d / f"{spec}.yaml", "-s", d / "a.pth", "-o", out, "-q")[0] == 0
    model = f"{d / 'net.py'}:net"
    return run("verify", d / f"{spec}.yaml", "-s", d / "a.pth", "-c", out, "--source-model", model,
               "--target-model", model, "--input-shape", "1,8", *extra)


def _self_contained(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not re.search(r"https?:|//[a-z]|<script|<link|<img|<iframe|@import|url\(", page, re.I), \
        "the report must open offline: no URL, script, link or image"


def test_report_draws_every_layer_and_marks_the_first_divergence(job):
    code, text, err = _verify(job, "broken", "--report", job / "r.html")
    assert code == 1 and "FAIL" in text, text + err
    assert "first divergence: 2 -> 2" in text and "<-- first divergence" in text  # the terminal table stays
    page = (job / "r.html").read_text(encoding="utf-8")
    _self_contained(page)
    rows = re.findall(r"<tr( class=\"first-divergence\")?><td>(\d+)</td><td>([^<]*)</td><td>([^<]*)</td>", page)
    assert [(r[2], r[3]) for r in rows] == [("0", "0"), ("2", "2"), ("4", "4"), ("6", "6")]
    assert [r[2] for r in rows if r[0]] == ["2"], "exactly layer 2 is marked as the first divergence"
    assert page.count("<svg") == 3 and page.count('<line class="first-divergence"') == 3
    assert page.count("<circle") == 3 * 4  # one point per layer in each panel (all compared)
    assert "First divergence: layer 1, 2 -&gt; 2" in page and "likely cause" in page


def test_a_passing_conversion_marks_nothing(job):
    code, text, err = _verify(job, "good", "--report", job / "r.html")
    assert code == 0 and "PASS" in text, text + err
    page = (job / "r.html").read_text(encoding="utf-8")
    _self_contained(page)
    assert "first-divergence\"" not in page.replace('tr.first-divergence', '') and "PASS" in page
    assert page.count("<circle") == 12  # every layer drawn, at the floor of the scale where the error is 0


def test_report_implies_layers_and_keeps_json(job):
    code, text, err = _verify(job, "broken", "--report", job / "r.html", "--json")
    assert code == 1 and '"first_divergence"' in text, err
    assert (job / "r.html").is_file()


def test_report_is_never_written_over_a_file_or_an_input(job):
    import numpy as np

    np.save(job / "in.npy", np.arange(8, dtype=np.float32).reshape(1, 8) / 8)
    (job / "r.html").write_text("keep")
    code, _, err = _verify(job, "good", "--report", job / "r.html")
    assert code == 1 and "r.html" in err and "--force" in err and "Traceback" not in err, err
    assert (job / "r.html").read_text() == "keep"
    assert _verify(job, "good", "--report", job / "r.html", "--force")[0] == 0
    assert (job / "r.html").read_text() != "keep"
    before = {p.name: p.read_bytes() for p in job.iterdir() if p.is_file()}
    (job / "link.html").symlink_to(job / "good.pth")
    os.link(job / "good.yaml", job / "hard.html")
    for target, kind in (("a.pth", "source"), ("good.pth", "converted"), ("link.html", "converted"),
                         ("hard.html", "spec")):
        code, _, err = _verify(job, "good", "--report", job / target, "--force")
        assert code == 1 and f"would replace the {kind} file" in err and "Traceback" not in err, (target, err)
    code, _, err = _verify(job, "good", "--report", job / "in.npy", "--force", "-i", job / "in.npy")
    assert code == 1 and "would replace the input file" in err, err
    assert {p.name: p.read_bytes() for p in job.iterdir() if p.is_file() and p.name in before} == before


def _verdict(layers, first_bad=None) -> Verdict:
    return Verdict(outputs=[("output", Comparison(1e-3, 1e-2, 0.99, (1, 4)))], atol=1e-4, cosine=0.99999,
                   layers=layers, first_bad=first_bad, causes=["<b>a cause</b>"], input_desc="random",
                   input_shape=(1, 8))


def test_names_are_escaped_and_odd_values_drawn():
    evil = '<script>alert(1)</script><img src=x>'
    layers = [LayerResult(evil, "t0", Comparison(0.0, 0.0, 1.0, (1,))),
              LayerResult("s1", "t1", None, note="not compared"),
              LayerResult("s2", evil, Comparison(math.inf, math.nan, math.nan, (1,))),
              LayerResult("s3", "t3", Comparison(2.5e-3, 1e-2, 0.999, (1,)))]
    page = html_report(_verdict(layers, layers[2]), "title <i>")
    _self_contained(page)
    assert evil not in page and "&lt;script" in page and "<b>a cause</b>" not in page
    for name in ("s1", "s2", "s3", "t3", "not compared"):
        assert f">{name}<" in page
    assert page.count("<circle") == 3 + 2 + 2  # max abs: 3 layers compared; relative and cosine: NaN not drawn
