"""What a finished conversion reports (mapspec/engine/report.py): the --report document."""

from __future__ import annotations

import json

from mapspec import cli

from engine_util import SMALL, _small_source, write_spec


def test_report_and_cli_apply(tmp_path):
    spec = write_spec(tmp_path, SMALL)
    src = _small_source(tmp_path)
    out = tmp_path / "o.npz"
    import io
    o, e = io.StringIO(), io.StringIO()
    code = cli.run(["apply", spec, "--source", str(src), "--output", str(out), "--report", str(tmp_path / "r.json")],
                   stdout=o, stderr=e)
    assert code == 0, e.getvalue()
    assert o.getvalue().startswith(f"wrote {out}: 5 tensors")
    report = json.loads((tmp_path / "r.json").read_text())
    assert [t["target"] for t in report["tensors"]][:2] == ["layer1.weight", "layer2.weight"]
