"""The lazy registry (mapspec/registry.py) and the tables built on it: formats, verify runners, frameworks and
CLI commands.  Every entry imports; a missing package is one MissingDependency with its pip line; an unknown
name lists the known names and the nearest one."""

from __future__ import annotations

import sys
from typing import NamedTuple

import pytest

from mapspec.cli import COMMAND_TABLE
from mapspec.cli.flags import Command
from mapspec.errors import MapspecError, MissingDependency
from mapspec.formats.registry import FORMATS
from mapspec.frameworks import FRAMEWORKS
from mapspec.language.runners import RUNNERS
from mapspec.registry import LazyTable, UnknownName

TABLES = {"format": FORMATS, "runner": RUNNERS, "framework": FRAMEWORKS, "command": COMMAND_TABLE}


def _entries():
    return [(kind, name) for kind, table in TABLES.items() for name in table]


@pytest.mark.parametrize("kind,name", _entries())
def test_every_entry_imports(kind, name):
    table = TABLES[kind]
    assert isinstance(table, LazyTable) and table.kind == kind
    try:
        got = table.load(name)
    except MissingDependency as e:  # an optional package not installed here: the one error type
        pytest.skip(str(e))
    if kind == "command":
        assert isinstance(got, Command) and got.name == name
    elif kind == "runner":
        assert callable(got.build)
    elif kind == "format":
        assert hasattr(got, "READ_OPTIONS")
    else:
        assert got.__name__ == FRAMEWORKS[name]


def test_the_help_lists_the_commands_in_the_tables_order():
    from mapspec.cli import build_parser

    text = build_parser().format_help()
    positions = [text.index(f"    {name} ") if f"    {name} " in text else text.index(f"    {name}\n")
                 for name in COMMAND_TABLE]
    assert positions == sorted(positions) and len(COMMAND_TABLE) == 14


@pytest.fixture
def fake_module(tmp_path, monkeypatch):
    """A module ``fake_entry_mod`` on sys.path that imports ``tokenizers`` (made missing), a package with a pip
    line of its own in OPTIONAL_PACKAGES."""
    (tmp_path / "fake_entry_mod.py").write_text("import tokenizers\nVALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # import tokenizers -> ModuleNotFoundError
    monkeypatch.delitem(sys.modules, "fake_entry_mod", raising=False)
    return "fake_entry_mod"


def test_an_entry_whose_package_is_missing_is_missing_dependency_with_the_pip_line(fake_module):
    table = LazyTable("widget", {"w": fake_module + ":VALUE"})
    with pytest.raises(MissingDependency) as e:
        table.load("w")
    assert str(e.value) == ("widget 'w' needs Hugging Face tokenizers, which is not installed here; install it "
                            "with: pip install 'mapspec[tokenizer]'")


class _Entry(NamedTuple):
    module: str
    needs: tuple = ()


def test_a_declared_need_is_checked_before_the_import(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    table = LazyTable("widget", {"w": _Entry("json", needs=("onnxruntime",))})
    with pytest.raises(MissingDependency, match=r"^widget 'w' needs ONNX Runtime, .*: pip install onnxruntime$"):
        table.load("w")


def test_a_runner_whose_package_is_missing_says_the_pip_line(monkeypatch):
    """On main the onnx runner's missing onnxruntime was a plain MapspecError of its own wording, raised late."""
    from mapspec.verify.runners import Side, make_runner

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingDependency, match=r"runner 'onnx' needs ONNX Runtime.*pip install onnxruntime"):
        make_runner(Side(name="source", kind="onnx", weights="x.onnx"))


def test_a_missing_mapspec_module_is_one_clear_error():
    table = LazyTable("widget", {"w": "mapspec.no_such_module_here"})
    with pytest.raises(MapspecError) as e:
        table.load("w")
    assert not isinstance(e.value, MissingDependency)
    assert str(e.value) == ("the widget 'w' is not available in this build of mapspec (its module "
                            "mapspec.no_such_module_here is missing); reinstall mapspec")
    missing_attr = LazyTable("widget", {"w": "mapspec.errors:NoSuchThing"})
    with pytest.raises(MapspecError, match="mapspec.errors has no 'NoSuchThing'"):
        missing_attr.load("w")


@pytest.mark.parametrize("table,wrong,nearest", [
    (FORMATS, "safetensor", "safetensors"), (RUNNERS, "transformer", "transformers"),
    (FRAMEWORKS, "cafe", "caffe"), (COMMAND_TABLE, "verfy", "verify")])
def test_an_unknown_name_lists_the_known_ones_and_the_nearest(table, wrong, nearest):
    with pytest.raises(UnknownName) as e:
        table.load(wrong)
    assert str(e.value) == (f"unknown {table.kind} {wrong!r}; known {table.kind}s: {', '.join(table)} "
                            f"(did you mean {nearest!r}?)")
    assert e.value.nearest == nearest


def test_an_unknown_name_with_nothing_near_lists_the_known_ones_only():
    with pytest.raises(UnknownName) as e:
        FRAMEWORKS.load("onnx")
    assert str(e.value) == "unknown framework 'onnx'; known frameworks: caffe, mxnet, gguf"


def test_aliases_resolve_and_stay_out_of_the_listing():
    assert FORMATS.canonical("pytorch") == "torch" and FORMATS.load("pytorch") is FORMATS.load("torch")
    assert "pytorch" not in FORMATS and "pytorch" not in list(FORMATS)
    with pytest.raises(ValueError, match="alias 'x' names no entry"):
        LazyTable("widget", {"w": "json"}, {"x": "nope"})


def test_naming_an_entry_imports_nothing(fake_module):
    table = LazyTable("widget", {"w": fake_module})
    assert "w" in table and table["w"] == fake_module and table.canonical("w") == "w"
    assert fake_module not in sys.modules
