"""mapspec.files: create_file (how a writer opens its output file)."""

from __future__ import annotations

import os

import pytest

from mapspec.errors import MapspecError
from mapspec import files as base


def test_an_empty_file_is_opened_without_truncation(tmp_path, monkeypatch):
    """The fresh temporary of an output is opened without O_TRUNC: on ext4 a truncation (even of an
    empty file) arms auto_da_alloc, and close() then starts writing the whole file back."""
    path = tmp_path / "out.bin"
    path.touch()
    calls = []
    real_open = os.open

    def spy(p, flags, *args, **kw):
        calls.append((os.fspath(p), flags))
        return real_open(p, flags, *args, **kw)

    monkeypatch.setattr(os, "open", spy)
    monkeypatch.setattr(os, "ftruncate", lambda *a: pytest.fail("an empty file was truncated"))
    with base.create_file(str(path)) as f:
        f.write(b"abc")
    assert [flags & os.O_TRUNC for p, flags in calls if p == str(path)] == [0]
    assert path.read_bytes() == b"abc"


def test_a_file_with_content_is_truncated(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"x" * 100)
    with base.create_file(str(path)) as f:
        f.write(b"ab")
    assert path.read_bytes() == b"ab"


def test_a_new_file_is_created_with_the_usual_permissions(tmp_path):
    path = tmp_path / "new.bin"
    with base.create_file(str(path)) as f:
        f.write(b"1")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_folder_that_does_not_exist_is_one_error(tmp_path):
    with pytest.raises(MapspecError, match="cannot create"):
        base.create_file(str(tmp_path / "missing" / "out.bin"))
