"""Every module of ``mapspec/`` stays under 600 lines: a longer one is split along a seam a reader
would recognise (as formats/torch.py -> torch_load.py, torch_zip.py), not allowed to grow."""

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mapspec"
MAX_LINES = 600


def test_no_module_is_over_600_lines():
    long = {str(p.relative_to(PACKAGE.parent)): n for p in sorted(PACKAGE.rglob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them): {long}"
