"""Where the shipped specs and the JSON Schema live.

In a source checkout (and an editable install) they are the repository's ``specs/``
and ``schemas/`` folders; a regular install puts them under
``<prefix>/share/mapspec/`` (``data-files`` in ``pyproject.toml``).
``$MAPSPEC_SPECS`` overrides the specs folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_PKG = Path(__file__).resolve().parent


def _candidates(sub: str) -> list[Path]:
    return [_PKG.parent / sub, Path(sys.prefix) / "share" / "mapspec" / sub]


def specs_dir() -> Path:
    env = os.environ.get("MAPSPEC_SPECS")
    if env:
        return Path(env)
    for c in _candidates("specs"):
        if c.is_dir():
            return c
    return _candidates("specs")[0]


def schema_path() -> Path:
    for c in _candidates("schemas"):
        p = c / "mapspec-1.schema.json"
        if p.is_file():
            return p
    raise FileNotFoundError("mapspec-1.schema.json not found; the installation is incomplete")


def shipped_specs() -> dict[str, Path]:
    """Shipped spec name (``densenet/caffe-to-torchvision``) -> path, sorted by name."""
    root = specs_dir()
    out = {}
    if root.is_dir():
        for p in sorted(root.rglob("*.yaml")):
            out[p.relative_to(root).with_suffix("").as_posix()] = p
    return out
