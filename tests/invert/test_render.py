"""The reverse spec written out (mapspec/invert/render.py): put in place atomically, never over a file."""

from __future__ import annotations

from checkpoint_util import run


def test_output_is_not_overwritten(tmp_path):
    out = tmp_path / "r.yaml"
    out.write_text("keep")
    code, _, err = run("invert", "densenet/torchvision-to-efficient-pytorch", "-o", out)
    assert code == 1 and "output exists; pass --force" in err and out.read_text() == "keep"
    assert run("invert", "densenet/torchvision-to-efficient-pytorch", "-o", out, "--force")[0] == 0
    assert out.read_text().startswith("# The reverse of")
    assert [p.name for p in tmp_path.iterdir()] == ["r.yaml"]  # no temporary file left behind
