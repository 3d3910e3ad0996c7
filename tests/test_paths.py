"""Containment of paths (mapspec/paths.py): symbolic links resolved, a root itself counted only when asked."""

from __future__ import annotations

import os

from mapspec.paths import checkpoint_dir, within


def test_within_resolves_links_and_prefixes(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "rootless").mkdir()  # shares the text prefix "root", not the folder
    os.symlink(tmp_path / "rootless", root / "escape")
    os.symlink(root / "sub", tmp_path / "inside-link")
    assert within(root / "sub" / "f.yaml", [root])
    assert within(tmp_path / "inside-link" / "f.yaml", [root])  # a link into the root is inside
    assert not within(root / "escape" / "f.yaml", [root])  # a link out of it is not
    assert not within(tmp_path / "rootless" / "f.yaml", [root])
    assert not within(root / ".." / "rootless", [root])
    assert within(root, [root]) and not within(root, [root], itself=False)
    assert within(root / "sub" / "f", [tmp_path / "other", root])


def test_checkpoint_dir_is_the_folder_or_the_files_folder(tmp_path):
    (tmp_path / "m.safetensors").write_bytes(b"")
    assert checkpoint_dir(tmp_path) == str(tmp_path)
    assert checkpoint_dir(tmp_path / "m.safetensors") == str(tmp_path)
