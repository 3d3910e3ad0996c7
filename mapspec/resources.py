"""Where the shipped specs and the JSON Schema live.

The repository's ``specs/`` and ``schemas/`` folders are the source of truth.  A wheel or
sdist carries them as the data subpackages ``mapspec._specs`` and ``mapspec._schemas``
(mapped in by the build: ``setup.py``); a source checkout or an editable install reads the
folders themselves.  ``$MAPSPEC_SPECS`` overrides the specs folder.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from .errors import MapspecError

_PKG = Path(__file__).resolve().parent
_DATA = {"specs": "_specs", "schemas": "_schemas"}  # the data subpackages' folders inside mapspec/


def _installed(sub: str):
    """The data subpackage's folder in an installed wheel, else None."""
    root = resources.files("mapspec") / _DATA[sub]
    path = Path(str(root))
    return path if path.is_dir() else None


def _candidates(sub: str) -> list[Path]:
    found = _installed(sub)
    return ([found] if found else []) + [_PKG.parent / sub]


def specs_dir() -> Path:
    env = os.environ.get("MAPSPEC_SPECS")
    if env:
        return Path(env)
    for c in _candidates("specs"):
        if c.is_dir():
            return c
    return _candidates("specs")[-1]


def schema_path() -> Path:
    for c in _candidates("schemas"):
        p = c / "mapspec-1.schema.json"
        if p.is_file():
            return p
    raise MapspecError("mapspec-1.schema.json is missing from this installation of mapspec "
                       "(reinstall it: pip install --force-reinstall mapspec)")


def shipped_specs() -> dict[str, Path]:
    """Shipped spec name (``densenet/caffe-to-torchvision``) -> path, sorted by name."""
    root = specs_dir()
    out = {}
    if root.is_dir():
        for p in sorted(root.rglob("*.yaml")):
            out[p.relative_to(root).with_suffix("").as_posix()] = p
    return out
