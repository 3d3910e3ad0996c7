"""The exception tree: every exception mapspec defines is a MapspecError, or private to its module."""

from __future__ import annotations

import importlib
import inspect
import re

import pytest

from mapspec import errors
from tests.test_layers import modules


def _exception_classes():
    for name, path in modules().items():
        if name.endswith("__main__"):
            continue
        try:
            mod = importlib.import_module(name)
        except ImportError:  # an optional package missing here
            continue
        for cls_name, cls in vars(mod).items():
            if inspect.isclass(cls) and issubclass(cls, Exception) and cls.__module__ == name:  # (signals: control flow)
                yield name, path, cls_name, cls


def test_every_exception_joins_the_tree_or_stays_in_its_module():
    sources = {name: path.read_text() for name, path in modules().items()}
    wrong = []
    for name, _, cls_name, cls in _exception_classes():
        if issubclass(cls, errors.MapspecError):
            continue
        if not cls_name.startswith("_"):
            wrong.append(f"{name}.{cls_name} is neither a MapspecError nor private")
        elif any(re.search(rf"\b{cls_name}\b", text) for other, text in sources.items() if other != name):
            wrong.append(f"{name}.{cls_name} is private but used outside its module")
    assert wrong == []


@pytest.mark.parametrize("cls, args, message", [
    (errors.ShapeError, ("kernel 3 > input 2",), "kernel 3 > input 2"),
    (errors.Unsupported, ("pool method 2",), "pool method 2"),
    (errors.TransformError, ("axis 4 out of range",), "axis 4 out of range"),
])
def test_moved_exceptions_keep_their_message(cls, args, message):
    e = cls(*args)
    assert str(e) == message and e.args == (message,) and isinstance(e, errors.MapspecError)


def test_internal_errors_keep_their_messages_and_value_error_base():
    from mapspec.language.expr import ExprError
    from mapspec.language.pattern import AmbiguousMatch, PatternSyntaxError
    from mapspec.transforms.inverse import Lossy, NotInvertible

    for e in (ExprError("unknown name 'x'", 3), PatternSyntaxError("unclosed {", 5), NotInvertible("no"),
              Lossy("cast loses bits")):
        assert isinstance(e, errors.MapspecError) and isinstance(e, ValueError)
        assert str(e) == e.args[0] == e.message
    m = AmbiguousMatch("a.b", {"i": "1"}, {"i": "2"})
    assert str(m).startswith("'a.b' matches in more than one way: ")


def test_a_missing_optional_package_is_one_error_type_with_the_pip_line(monkeypatch, tmp_path):
    """The image input and the GGUF tokenizer files each said it their own way (a plain MapspecError)."""
    import sys

    from mapspec.companions import gguf_tokenizer_files
    from mapspec.verify.inputs import load_input

    image = tmp_path / "x.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n")
    monkeypatch.setitem(sys.modules, "PIL", None)
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(errors.MissingDependency) as e:
        load_input(str(image), (1, 3, 4, 4), (0.0, 1.0))
    assert str(e.value) == ("reading an image input needs Pillow, which is not installed here; install it with: "
                            "pip install pillow, or pass a .npy array")
    with pytest.raises(errors.MissingDependency) as e:
        gguf_tokenizer_files(str(tmp_path / "m.gguf"))
    assert str(e.value) == (f"{tmp_path / 'm.gguf'}: making the tokenizer files from a GGUF needs Hugging Face "
                            f"transformers, which is not installed here; install it with: pip install transformers, "
                            f"or pass --no-tokenizer")
