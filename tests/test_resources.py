"""Where the shipped specs and the schema live (mapspec/resources.py): the repository's specs/ and schemas/."""

from __future__ import annotations

import json
from pathlib import Path

from mapspec.resources import schema_path, shipped_specs, specs_dir

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_specs_are_every_yaml_file_under_specs():
    want = sorted(p.relative_to(ROOT / "specs").with_suffix("").as_posix() for p in (ROOT / "specs").rglob("*.yaml"))
    got = shipped_specs()
    assert sorted(got) == want and len(want) > 10
    assert all(path.is_file() and path.suffix == ".yaml" for path in got.values())
    assert specs_dir().resolve() == (ROOT / "specs").resolve()


def test_schema_is_the_repositorys(tmp_path, monkeypatch):
    assert json.loads(schema_path().read_text()) == json.loads((ROOT / "schemas" / "mapspec-1.schema.json").read_text())
    monkeypatch.setenv("MAPSPEC_SPECS", str(tmp_path))
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b.yaml").write_text("mapspec: 1\nrules: []\n")
    assert list(shipped_specs()) == ["a/b"]
