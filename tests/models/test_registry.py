"""The model-factory registry: everything a spec can reach, checked for the property that makes a spec data.

Every registered factory is enumerated: its parameters are exactly the declared, typed ones (never a
path or a file; ``weights`` only for a factory that takes the checkpoint the command line gave), and
calling it with hostile values of its declared types opens no file (a checkpoint factory: only files
in its checkpoint's folder, to read) and leaves nothing behind.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib
import inspect
import io
import json
import os
import re
import sys
import sysconfig

import pytest

from mapspec.models import registry
from mapspec.models.registry import FACTORIES, Bool, Choice, Float, Int

KINDS = (Int, Float, Bool, Choice)


def _function(f):
    mod, fn = f.ref.split(":")
    return getattr(importlib.import_module(mod), fn)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_a_factory_takes_only_declared_typed_parameters(name):
    f = FACTORIES[name]
    assert registry.NAME.fullmatch(name)
    assert f.ref.startswith("mapspec.models.") and f.ref.count(":") == 1
    assert all(isinstance(kind, KINDS) for kind in f.params.values())  # no free text: nothing can be a path
    for kind in f.params.values():
        if isinstance(kind, Choice):
            assert all(re.fullmatch(r"[a-z0-9_]+", v) for v in kind.values)
    sig = inspect.signature(_function(f)).parameters
    assert not any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in sig.values())
    assert set(sig) == set(f.params) | ({"weights"} if f.checkpoint else set())
    assert not any(re.search(r"path|file|dir|prototxt|weights", p) for p in f.params)


def _hostile(kind) -> list:
    """The extreme values of a declared type: its bounds, every choice."""
    if isinstance(kind, (Int, Float)):
        return [kind.low, kind.high]
    if isinstance(kind, Bool):
        return [False, True]
    return list(kind.values)


def _calls(f) -> list:
    out = [{}]
    for key, kind in f.params.items():
        out += [{key: v} for v in _hostile(kind)]
    return out


class _Opened(Exception):
    pass


@contextlib.contextmanager
def guarded(cwd, allowed=None):
    """Open nothing but the Python installation's own files (package metadata a framework looks up) and
    files under ``allowed``, and those only to read, in the empty working directory ``cwd``; yields the
    list of other paths something opened or tried to."""
    opened: list = []
    installed = {os.path.realpath(sysconfig.get_paths()[k]) for k in ("stdlib", "purelib", "platlib")} | \
        {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    real = {"builtins": builtins.open, "io": io.open, "os": os.open}

    def guard(kind):
        def opener(file, mode="r", *args, **kwargs):
            path = os.path.abspath(os.fsdecode(file)) if isinstance(file, (str, bytes, os.PathLike)) else repr(file)
            reading = (kind != "os" and not any(c in str(mode) for c in "wax+")) or \
                (kind == "os" and isinstance(mode, int) and mode & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) == 0)
            if reading and any(os.path.realpath(path).startswith(d + os.sep) for d in installed):
                return real[kind](file, mode, *args, **kwargs)
            opened.append(path)
            if not (reading and allowed and path.startswith(str(allowed) + os.sep)):
                raise _Opened(f"{kind}.open({file!r}, {mode!r})")
            return real[kind](file, mode, *args, **kwargs)
        return opener

    old = os.getcwd()
    os.chdir(cwd)
    builtins.open, io.open, os.open = guard("builtins"), guard("io"), guard("os")
    try:
        yield opened
    finally:
        builtins.open, io.open, os.open = real["builtins"], real["io"], real["os"]
        os.chdir(old)


def _checkpoint(d):
    """A folder as a user's checkpoint has it: the weights and the model's config files beside them."""
    import transformers

    d.mkdir()
    transformers.GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=16, n_positions=8).save_pretrained(d)
    (d / "params.json").write_text(json.dumps({"dim": 8, "n_layers": 1, "n_heads": 2, "norm_eps": 1e-5}))
    (d / "model.safetensors").write_bytes(b"")
    return d / "model.safetensors"


def test_the_guard_sees_what_it_looks_for(tmp_path):
    (tmp_path / "cwd").mkdir()
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "a").write_text("x")
    with guarded(tmp_path / "cwd", tmp_path / "ok") as opened:
        for attempt in (lambda: open("x", "w"), lambda: io.open(tmp_path / "ok" / "a", "r+"),
                        lambda: os.open(str(tmp_path / "ok" / "b"), os.O_CREAT | os.O_WRONLY),
                        lambda: open(tmp_path / "other")):
            with pytest.raises(_Opened):
                attempt()
        with open(tmp_path / "ok" / "a") as fh:
            assert fh.read() == "x"
    assert len(opened) == 5 and list((tmp_path / "cwd").iterdir()) == []


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_calling_a_factory_with_hostile_values_touches_no_file(name, tmp_path):
    import keras  # noqa: F401  (frameworks read their own settings when imported: before the guard)
    import transformers  # noqa: F401

    f = FACTORIES[name]
    fn = _function(f)
    weights = _checkpoint(tmp_path / "checkpoint") if f.checkpoint else None
    before = sorted(os.listdir(weights.parent)) if weights else None
    (tmp_path / "cwd").mkdir()
    with guarded(tmp_path / "cwd", weights.parent if weights else None) as opened:
        for kwargs in _calls(f):
            kwargs = registry.check(name, kwargs)
            if weights:
                kwargs["weights"] = str(weights)
            fn(**kwargs)
    assert list((tmp_path / "cwd").iterdir()) == []
    if weights:  # it read its model's config beside the weights the command line named, and wrote nothing
        assert sorted(os.listdir(weights.parent)) == before
        assert opened and all(p.startswith(str(weights.parent) + os.sep) for p in opened)
    else:
        assert opened == []
