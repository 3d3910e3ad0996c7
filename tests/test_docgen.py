"""The manual's generated reference (mapspec/docgen.py, run by docs/hooks.py at `mkdocs build`): every command,
option, transform, format, schema key and public name is on its page; the strict build passes."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mapspec
from mapspec import docgen
from mapspec.cli import build_parser
from mapspec.formats import FORMATS
from mapspec.transforms import TRANSFORMS

ROOT = Path(__file__).resolve().parent.parent


def _subparsers():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def test_cli_page_has_every_command_and_option():
    page = docgen.cli_markdown()
    for name, p in _subparsers().items():
        assert f"\n## {name}\n" in page, name
        section = page.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]
        for a in p._actions:
            if a.help == argparse.SUPPRESS or isinstance(a, argparse._HelpAction):
                continue
            for flag in a.option_strings:
                assert f"`{flag}`" in section, f"{name} {flag}"
    assert "`--report` *FILE.html*" in page.split("\n## verify\n", 1)[1]
    assert "`-O`" not in page, "deprecated spellings stay out of the reference"


def test_transforms_page_has_every_transform_and_argument():
    page = docgen.transforms_page()
    for name, t in TRANSFORMS.items():
        section = page.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]
        for arg in t.args:
            assert f"| {arg} |" in section, f"{name}.{arg}"
        assert "inverse (mapspec invert)" in section


def test_formats_page_has_every_format():
    page = docgen.formats_page()
    for name, entry in FORMATS.items():
        row = next(line for line in page.splitlines() if line.startswith(f"| `{name}` |"))
        for sfx in entry.suffixes:
            assert f"`{sfx}`" in row, (name, sfx)


def test_schema_page_has_every_key_of_the_schema_file():
    schema = json.loads((ROOT / "schemas" / "mapspec-1.schema.json").read_text())
    page = docgen.schema_page()
    for key in schema["properties"]:
        assert f"| `{key}`" in page, key
    for name, node in schema["$defs"].items():
        assert f"\n## {name}\n" in page, name
        section = page.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]
        for key in node.get("properties", {}):
            assert f"| `{key}`" in section, f"{name}.{key}"


def test_generators_page_has_every_generator_and_argument():
    from mapspec.language.generators import GENERATORS

    page = docgen.generators_page()
    for name, g in GENERATORS.items():
        row = next(line for line in page.splitlines() if line.startswith(f"| `{name}` |"))
        assert all(f"`{a}`" in row for a in g.args), name


def test_models_page_has_every_registered_factory():
    from mapspec.models.registry import FACTORIES

    page = docgen.models_page()
    for name, f in FACTORIES.items():
        row = next(line for line in page.splitlines() if line.startswith(f"| `{name}` |"))
        assert f"`{f.ref}`" in row and all(f"`{p}`" in row for p in f.params), name


def test_api_page_has_every_public_name_with_its_docstring():
    page = docgen.api_page()
    for name in mapspec.__all__:
        assert f"## `{name}`" in page, name
    assert "Plan a conversion from metadata only" in page


@pytest.mark.slow
def test_mkdocs_build_is_strict_and_generates_the_reference(tmp_path):
    for module in ("mkdocs", "material"):
        pytest.importorskip(module, reason="the manual's build needs the docs extra: pip install '.[docs]'")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    assert all(re.search(rf'id="{re.escape(name)}"', cli) for name in _subparsers())
    assert not list((ROOT / "docs" / "reference").glob("*.md")) if (ROOT / "docs" / "reference").exists() else True
