"""Publishing a sharded checkpoint as one: a reader sees the old complete checkpoint or the new one.

The problem.  A sharded checkpoint is a folder ``D`` holding an index and the shards it names.
Hugging Face's shard names are fixed (``model-00001-of-00003.safetensors``), so a new
checkpoint usually reuses the old one's names: replacing its shards one by one, or even
renaming fresh shards into place and the index last, leaves a moment (and, after a SIGKILL,
a folder) where the index names a mix of old and new shards, or shards lie there that no
index names.  Only one step can replace several names at once: replacing the folder.

The choice.  The writer fills a private staging folder ``.ms-HOST-PID-RANDOM.tmp`` beside ``D``
(shards under their final names, then the index; see :mod:`.durable` for the name).  To
publish, every other entry of ``D`` (``config.json``, tokenizer files, sub-folders: all but
the old index and the shards the new checkpoint replaces) is hard-linked into the staging
folder (the same files, not copies; sub-folders are re-made with their files linked), the
staging folder gets ``D``'s permissions, and the two folders are swapped in one step with
Linux ``renameat2(RENAME_EXCHANGE)``.  The old folder, now under the staging name, is then
removed.  A ``D`` that does not exist yet is simply the staging folder renamed.  So at every
instant ``D`` is the old folder or the new one, whole; a SIGKILL at any point leaves at most
the hidden staging folder (or the old folder under that name), which the next run in that
place removes once its process is gone (:func:`.durable.sweep`).  With ``sync`` the shards,
the index, the staging folder and, after the swap, ``D`` and its parent are fsync'ed in that
order, so that a power loss too leaves the old folder or the new one.

What the swap changes: ``D`` is a new folder (inode).  A process whose working directory is
``D`` keeps seeing the old one until it enters ``D`` again; access lists and extended
attributes of the folder itself are not carried over (its mode and, as root, owner are);
a file another process creates in ``D`` while the swap is being prepared is moved into the
new folder right after it.

Where the swap cannot be made (not Linux or a file system without ``RENAME_EXCHANGE``; ``D``
a mount point, on another device than its parent, this process's working directory or above
it; a parent folder we may not write; entries that cannot be hard-linked), the checkpoint is
published in place from a staging folder inside ``D``: shards renamed into place one by one,
then the index (one atomic rename), then the old shards that are no longer named removed.
What holds then: if no new shard name is already taken, the old index names only old shards
until the new index replaces it, so a reader through the index sees old or new whole (after
a SIGKILL in between, new shards lie unnamed beside the old checkpoint).  If new shards
replace old ones of the same name, the old index is moved away first: until the new index
is in place ``D`` holds no index, so a reader fails instead of reading a mix; a SIGKILL in
that moment leaves ``D`` without an index.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path
from typing import Iterator

from ..errors import MapspecError
from .. import durable
from ..files import PUBLISHED, _signals_held, check_output_path
from .shard_index import split_name, stale_shards

MAX_CARRIED = 100_000  # entries of D hard-linked into the staging folder; more: publish in place


@contextlib.contextmanager
def staged(index, shard_format: str, force: bool = False, sync: bool = True) -> Iterator[str]:
    """Yield the index path to write, inside a fresh staging folder; publish the folder's files as
    the checkpoint ``index`` names on success (see the module doc); remove them on failure."""
    target = check_output_path(index, force, "output", make_parent=True)
    final = Path(os.path.abspath(target))
    d = Path(os.path.realpath(final.parent))  # a symlink to a folder: the real folder is replaced
    made = _make_parents(d.parent)
    stage, swap = None, _swappable(d)
    try:
        if swap:
            durable.sweep(d.parent)
            try:
                stage = Path(durable.temp_name(d.parent))
                stage.mkdir()
            except OSError:
                stage, swap = None, False
        if stage is None:
            if not d.exists():
                d.mkdir()
                made.insert(0, d)  # removed first (deepest) if the conversion fails
            stage = Path(durable.temp_name(d))
            stage.mkdir()
        if d.is_dir():
            durable.sweep(d)
        with durable.writing(sync):
            yield str(stage / final.name)
        names = set(os.listdir(stage))
        if sync:
            for n in sorted(names - {final.name}) + [final.name]:  # every shard, then the index
                durable.sync_file(stage / n)
            durable.sync_dir(stage)
        stem, ext = split_name(str(final), shard_format)
        stale = set(stale_shards(str(d / final.name), stem, ext, names))
        with _signals_held():  # published and recorded as one step, as far as a signal can tell
            if not force:
                _refuse_taken(d, names)
            if not (swap and _swap(stage, d, names, stale, sync)):
                _in_place(stage, d, names, stale, final.name, sync)
            stage = None
            PUBLISHED.append(str(target))
        if sync:
            for p in made:  # folders made for the output: their names too
                durable.sync_dir(p.parent)
    except BaseException as e:
        if stage is not None:
            durable.remove_tree(stage)
        for p in made:
            with contextlib.suppress(OSError):
                p.rmdir()
        if isinstance(e, OSError):
            raise MapspecError(f"{e.filename or d}: {e.strerror or e}; {target} was not written") from None
        raise


def _make_parents(p: Path) -> list:
    """Make the missing folders of ``p`` (and ``p``); the ones made, deepest first."""
    made = []
    while not p.exists() and p != p.parent:
        made.append(p)
        p = p.parent
    try:
        for q in reversed(made):
            q.mkdir()
    except OSError as e:
        raise MapspecError(f"{made[0]}: cannot create the output directory: {e.strerror}") from None
    return made


def _swappable(d: Path) -> bool:
    """Can ``d`` be replaced by swapping folders?  (A new ``d``: yes, by a rename.)"""
    if not d.exists():
        return True
    try:
        cwd = os.path.realpath(os.getcwd())
    except OSError:
        cwd = ""
    inside = cwd == str(d) or cwd.startswith(str(d).rstrip(os.sep) + os.sep)
    return d.is_dir() and not os.path.ismount(d) and durable.same_device(d, d.parent) and not inside


def _refuse_taken(d: Path, names: set) -> None:
    """Without --force: a name someone else created in ``d`` while we wrote is not replaced."""
    for n in sorted(names):
        if os.path.lexists(d / n):
            raise MapspecError(f"{d / n}: output was created by someone else while mapspec wrote it; it is "
                               f"unchanged (pass --force to overwrite it)")


def _swap(stage: Path, d: Path, names: set, stale: set, sync: bool) -> bool:
    """Publish by swapping ``stage`` and ``d``; False (nothing changed) where that cannot be done."""
    if not d.exists():
        try:
            os.rename(stage, d)
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
        else:
            if sync:
                durable.sync_dir(d.parent)
            return True
    drop = names | stale
    try:
        _carry(d, stage, drop)
        st = os.stat(d)
        os.chmod(stage, stat.S_IMODE(st.st_mode))
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            os.chown(stage, st.st_uid, st.st_gid)
        if sync:
            durable.sync_dir(stage)
        swapped = durable.exchange(stage, d)
    except OSError:
        swapped = False
    if not swapped:
        for n in os.listdir(stage):
            if n not in names:
                durable.remove_tree(stage / n)
        return False
    old = stage  # the old folder now has the staging name
    for n in os.listdir(old):  # created in the old folder after it was carried over: move it on
        if n not in drop and not durable.is_stale(n) and not os.path.lexists(d / n):
            with contextlib.suppress(OSError):
                os.rename(old / n, d / n)
    if sync:
        durable.sync_dir(d)
        durable.sync_dir(d.parent)
    durable.remove_tree(old)
    return True


def _carry(src: Path, dst: Path, drop: set) -> None:
    """Hard-link every entry of ``src`` but ``drop`` (and temporaries) into ``dst``; OSError if one cannot be."""
    count = 0
    for root, dirs, files in os.walk(src):
        rel = os.path.relpath(root, src)
        top = rel == "."
        for n in list(dirs):
            if top and (n in drop or durable.is_temp(n)):
                dirs.remove(n)
                continue
            s, t = os.path.join(root, n), os.path.join(dst, rel, n)
            if os.path.islink(s):
                os.symlink(os.readlink(s), t)
                dirs.remove(n)
            else:
                os.mkdir(t)
                os.chmod(t, stat.S_IMODE(os.lstat(s).st_mode))
        for n in files:
            if top and (n in drop or durable.is_temp(n)):
                continue
            s, t = os.path.join(root, n), os.path.join(dst, rel, n)
            mode = os.lstat(s).st_mode
            if stat.S_ISLNK(mode):
                os.symlink(os.readlink(s), t)
            elif stat.S_ISREG(mode):
                os.link(s, t, follow_symlinks=False)
            else:  # a FIFO, socket or device: not ours to re-create
                raise OSError(errno.EPERM, "not a regular file", s)
            count += 1
            if count > MAX_CARRIED:
                raise OSError(errno.EMLINK, "too many entries to carry over", str(src))


def _in_place(stage: Path, d: Path, names: set, stale: set, index_name: str, sync: bool) -> None:
    """Publish into ``d`` entry by entry: shards, then the index, then stale shards removed."""
    d.mkdir(exist_ok=True)
    idx = d / index_name
    shards = sorted(names - {index_name})
    if any(os.path.lexists(d / n) for n in shards) and os.path.lexists(idx):
        os.rename(idx, stage / (durable.PREFIX + "old-index"))  # no index rather than one naming a mix
        if sync:
            durable.sync_dir(d)
    for n in shards:
        os.replace(stage / n, d / n)
    if sync:
        durable.sync_dir(d)
    os.replace(stage / index_name, idx)
    for n in stale:
        with contextlib.suppress(OSError):
            os.unlink(d / n)
    if sync:
        durable.sync_dir(d)
    durable.remove_tree(stage)
