"""The manual cannot rot: each tutorial's commands run as written, and README's links lead to pages.

Convention (docs/tutorials/*.md): a fenced block titled ``run`` (```` ```bash title="run" ````) is run by
bash (``set -euo pipefail``) in the tutorial's own temporary folder, in page order; a block titled with a
file name (```` ```python title="make_llama.py" ````) is written to that file first. ``mapspec`` and
``python`` are this interpreter and this checkout's package. Other blocks (output shown to the reader)
are not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
TUTORIALS = sorted((DOCS / "tutorials").glob("*.md"))
FENCE = re.compile(r'^```(\w*)[^\n]*?title="([^"]+)"[^\n]*\n(.*?)^```\s*$', re.S | re.M)
NEEDS = {  # tutorial -> what it needs beyond the project's own files (else it skips, saying so)
    "mobilefacenet-mxnet-caffe.md": "fixtures",
}


def blocks(page: Path) -> list[tuple[str, str]]:
    """[(title, text)] of the page's titled fenced blocks, in order."""
    return [(m.group(2), m.group(3)) for m in FENCE.finditer(page.read_text(encoding="utf-8"))]


def _fixtures() -> Path:
    return Path(os.environ.get("MAPSPEC_FIXTURES", ROOT.parent / "shared" / "fixtures"))


def _shims(folder: Path) -> dict:
    """An environment whose `mapspec` and `python` are this interpreter, importing this checkout."""
    bin_dir = folder / ".bin"
    bin_dir.mkdir()
    shims = (("mapspec", f'exec "{sys.executable}" -m mapspec "$@"'), ("python", f'exec "{sys.executable}" "$@"'))
    for name, cmd in shims:
        (bin_dir / name).write_text(f"#!/bin/sh\n{cmd}\n")
        (bin_dir / name).chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               MAPSPEC_FIXTURES=str(_fixtures()), KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "torch"))
    env.pop("COLUMNS", None)
    return env


def test_every_tutorial_has_commands():
    assert TUTORIALS, "docs/tutorials/ is empty"
    for page in TUTORIALS:
        assert any(t == "run" for t, _ in blocks(page)), f"{page.name}: no ```bash title=\"run\"``` block"


@pytest.mark.slow
@pytest.mark.parametrize("page", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(page, tmp_path):
    if NEEDS.get(page.name) == "fixtures" and not (_fixtures() / "mobilefacenet-mxnet").is_dir():
        pytest.skip(f"{page.name} converts the real insightface model: set $MAPSPEC_FIXTURES")
    env = _shims(tmp_path)
    for i, (title, text) in enumerate(blocks(page)):
        if title != "run":
            (tmp_path / title).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / title).write_text(text)
            continue
        r = subprocess.run(["bash", "-c", "set -euo pipefail\n" + text], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{page.name}, run block {i}:\n{text}\nstdout:\n{r.stdout[-3000:]}\n" \
                                  f"stderr:\n{r.stderr[-3000:]}"


def _links(text: str) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", text)


def test_readme_links_lead_to_pages():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    links = [u for u in _links(text) if not re.match(r"[a-z]+://|#", u)]
    assert any(u.startswith("docs/") for u in links), "README links into no page of the manual"
    for url in links:
        path, _, anchor = url.partition("#")
        target = ROOT / path
        assert target.is_file(), f"README links to {url}: no such file"
        if anchor and target.suffix == ".md":
            heads = {_slug(h) for h in re.findall(r"^#+ (.+)$", target.read_text(encoding="utf-8"), re.M)}
            assert anchor in heads, f"README links to {url}: no heading {anchor!r} there"


def _slug(heading: str) -> str:
    """The anchor MkDocs (Python-Markdown's toc) gives a heading."""
    text = re.sub(r"[`*]", "", heading).strip().lower()
    text = re.sub(r"[^\w\s-]", "", text)
    return re.sub(r"[-\s]+", "-", text).strip("-")


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in DOCS.rglob("*.md"):
        rel = page.relative_to(DOCS).as_posix()
        assert rel in nav, f"docs/{rel} is not in mkdocs.yml's nav"


def test_reference_pages_are_generated_not_committed():
    from mapspec.docgen import PAGES

    for path in PAGES:
        assert not (DOCS / path).exists(), f"docs/{path} is generated at build time (mapspec/docgen.py): delete it"
        assert path in (ROOT / "mkdocs.yml").read_text(encoding="utf-8"), f"{path} is not in mkdocs.yml's nav"
