"""MkDocs hook: the reference pages are generated from the code at every build (mapspec/docgen.py).

`mkdocs build` alone regenerates them: nothing generated is committed, so nothing can go stale.
The checkout's own package is imported (the repository root is put first on sys.path).
"""

from __future__ import annotations

import os
import sys

from mkdocs.structure.files import File

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def on_files(files, config):
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from mapspec.docgen import PAGES

    for path, make in PAGES.items():
        files.append(File.generated(config, path, content=make()))
    return files
