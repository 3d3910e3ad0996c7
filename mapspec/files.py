"""Files, the ground floor every layer stands on: path checks, safe reads, atomic outputs.

* :func:`check_regular` / :func:`read_head`: refuse a FIFO, device or socket as an input.
* :class:`MappedFile` and :func:`check_shape`: bounds-checked memory maps; shapes checked
  before numpy sees them.
* :func:`check_output_path` and :func:`atomic_output`: an output is written to a temporary
  file and put in place only when complete (never over a directory, device or FIFO).

It imports nothing of mapspec above :mod:`mapspec.errors` and :mod:`mapspec.durable`.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from .errors import FormatError, MapspecError

class MappedFile:
    """A read-only memory map of a whole file, with bounds-checked numpy views.

    Every view is checked against the real file size first, so that a header
    claiming a huge tensor raises a :class:`FormatError` instead of allocating.
    """

    def __init__(self, path, fd: Optional[int] = None):
        """``fd``: map this open descriptor (duplicated; an unnamed temporary file) instead of opening
        ``path``, which then only names the file in messages."""
        self.path = str(path)
        try:
            self._fh = open(self.path, "rb") if fd is None else open(os.dup(fd), "rb")
        except OSError as e:
            raise FormatError(self.path, f"cannot open: {e.strerror}") from None
        self.size = os.fstat(self._fh.fileno()).st_size
        if self.size:
            self._mm = mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ)
            self.buffer = memoryview(self._mm)
        else:
            self._mm = None
            self.buffer = memoryview(b"")

    def check_span(self, offset: int, nbytes: int, what: str) -> None:
        if offset < 0 or nbytes < 0 or offset + nbytes > self.size:
            raise FormatError(self.path, f"{what} needs bytes {offset}..{offset + nbytes} but the file has "
                              f"only {self.size} bytes (truncated or corrupt file)", offset=offset)

    def array(self, offset: int, dtype, shape, what: str) -> np.ndarray:
        dt = np.dtype(dtype)
        count = 1
        for d in shape:
            count *= int(d)
        self.check_span(offset, count * dt.itemsize, what)
        check_shape(self.path, shape, dt.itemsize, what, offset)  # an empty shape can still be impossible
        a = np.frombuffer(self.buffer, dtype=dt, count=count, offset=offset)
        return a.reshape(shape)

    def drop(self, offset: int, nbytes: int) -> None:
        """Drop the pages covering bytes ``offset..offset+nbytes`` from this process's memory.

        ``madvise(MADV_DONTNEED)`` on a read-only shared file mapping only unmaps the pages
        from this process: the file's data stays in the page cache and any view over these
        bytes reads the same values again on its next access (a minor fault), so it is safe
        even while views are alive.  Rounded out to whole pages; a no-op where madvise is
        missing.
        """
        mm = self._mm
        if mm is None or nbytes <= 0 or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
            return
        start = max(0, offset) // mmap.PAGESIZE * mmap.PAGESIZE
        end = min(self.size, offset + nbytes)
        if end > start:
            with contextlib.suppress(OSError, ValueError):
                mm.madvise(mmap.MADV_DONTNEED, start, end - start)

    def fileno(self) -> int:
        return self._fh.fileno()

    def bytes(self, offset: int, nbytes: int, what: str) -> bytes:
        self.check_span(offset, nbytes, what)
        return bytes(self.buffer[offset:offset + nbytes])

    def close(self) -> None:
        # Views handed out keep the map alive; release ours and let GC do the rest.
        self.buffer = memoryview(b"")
        self._mm = None
        with contextlib.suppress(Exception):
            self._fh.close()


NUMPY_MAX_NDIM = 64
_INTP_MAX = 2 ** 63 - 1


def check_shape(path, shape, itemsize: int, what: str, offset: Optional[int] = None) -> int:
    """The byte size of ``shape``; a :class:`FormatError` if numpy could not even describe it.

    A header may claim dimensions whose product overflows (numpy refuses to make such an
    array even when another dimension is 0, so an "empty" tensor can still be absurd), or
    more dimensions than numpy supports.  Call this on every shape read from a file before
    it reaches numpy.
    """
    dims = tuple(shape)
    if len(dims) > NUMPY_MAX_NDIM:
        raise FormatError(path, f"{what} has {len(dims)} dimensions; at most {NUMPY_MAX_NDIM} are possible",
                          offset=offset)
    size = itemsize
    nonzero = itemsize
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0:
            raise FormatError(path, f"{what} has shape {dims}; dimensions must be non-negative integers",
                              offset=offset)
        size *= int(d)
        nonzero *= max(int(d), 1)
        if nonzero > _INTP_MAX:
            raise FormatError(path, f"{what} has shape {dims}, which no array can have (its size overflows "
                              f"64 bits); corrupt file", offset=offset)
    return size


def create_file(path):
    """Open ``path`` for writing (binary): the one place a writer's "cannot create" error is worded.

    An empty file (the fresh temporary that :func:`atomic_output` hands out) is opened without
    ``O_TRUNC``: on ext4 a truncation, even of an empty file, arms ``auto_da_alloc``, which makes
    ``close()`` start writing the whole file back (measured: 0.8-1 s of a 4 GiB conversion spent
    in ``close``); a durable output is flushed by its fsync anyway.  A file with content is
    truncated, as ``open(path, "wb")`` would."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as e:
        raise MapspecError(f"{path}: cannot create: {e.strerror}") from None
    try:
        if os.fstat(fd).st_size:
            os.ftruncate(fd, 0)
        return os.fdopen(fd, "wb")
    except OSError as e:
        os.close(fd)
        raise MapspecError(f"{path}: cannot create: {e.strerror}") from None


def check_regular(path) -> None:
    """Refuse a FIFO, device or socket as an input (reading one could block forever or never end).

    Directories pass (formats that are folders handle them; others say it is a directory)."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return  # the open that follows reports it
    except (OSError, ValueError) as e:  # a name too long, a loop of symlinks, a NUL byte, ...
        raise FormatError(path, f"cannot open: {getattr(e, 'strerror', None) or e}") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise FormatError(path, f"is {_kind(mode)}, not a regular file; mapspec reads only files")


def _kind(mode: int) -> str:
    """What a file that is not a regular file is, in words."""
    return ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else
            "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else
            "a socket" if stat.S_ISSOCK(mode) else "not a regular file")


def read_head(path, n: int = 64) -> bytes:
    check_regular(path)
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except IsADirectoryError:
        raise FormatError(path, "is a directory, not a checkpoint file") from None
    except OSError as e:
        raise FormatError(path, f"cannot open: {e.strerror}") from None



def _name_output(e: MapspecError, tmp: str, target: str) -> None:
    """A writer's error names the output the user asked for, never the temporary file beside it."""
    for err in [e] + [x for x in e.errors if x is not e]:
        if tmp in err.message:
            err.message = err.message.replace(tmp, target)
            err.args = (err.message,)
        if getattr(err, "path", None) == tmp:
            err.path = target


def check_output_path(path, force: bool = False, what: str = "output", make_parent: bool = False) -> Path:
    """Refuse an output path mapspec must not write: one that is not (a symlink to) a regular file.

    A directory, FIFO, device or socket is never replaced (as root, ``--force`` would otherwise
    turn ``/dev/null`` into a regular file); a dangling symlink, like an existing file, needs
    ``force``; a name ending in a slash names a directory and is refused.  ``make_parent``: the
    caller creates the folder (a sharded output), so it need not exist yet.
    """
    text = os.fspath(path)
    if not text or text.endswith(("/", os.sep)):
        raise MapspecError(f"{text!r}: {what} names a directory (trailing slash); give a file name")
    target = Path(text)
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise MapspecError(f"{target}: cannot check the {what}: {e.strerror or e}") from None
    if st is not None:
        if stat.S_ISLNK(st.st_mode):
            try:
                st = os.stat(target)
            except OSError:
                if not force:
                    raise MapspecError(f"{target}: {what} is a dangling symlink; pass --force to replace it") \
                        from None
                st = None
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise MapspecError(f"{target}: {what} is {_kind(st.st_mode)}, not a regular file; mapspec never "
                               f"replaces it")
        if st is not None and not force:
            raise MapspecError(f"{target}: {what} exists; pass --force to overwrite it")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir() and not make_parent:
        raise MapspecError(f"{target}: {what} directory {str(parent)!r} does not exist")
    return target


def _anonymous_file(parent: Path):
    """An unnamed file in ``parent`` (Linux O_TMPFILE), or None where the platform or file system lacks it.

    Nothing of it survives the process, not even a SIGKILL; :func:`_publish` links it into place.
    """
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        fd = os.open(parent, flag | os.O_RDWR | getattr(os, "O_CLOEXEC", 0), 0o666 & ~_umask())
    except OSError:
        return None
    return fd


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _short_name(parent: Path) -> str:
    """A fresh short name in ``parent`` (kept short so that a 250-character output name still works)."""
    from .durable import temp_name

    return temp_name(parent)


_NO_LINK = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV, errno.EMLINK}


def _publish(source: str, target: Path, force: bool, named: bool, what: str) -> None:
    """Give the finished temporary file the name ``target``.

    Without ``force`` the no-overwrite check is the link itself (``link`` fails if the name
    exists), so of two concurrent runs exactly one wins.  With ``force`` it is linked under a
    short temporary name and renamed over the target.  ``named``: ``source`` is a named
    temporary file (removed here once linked), else a ``/proc/self/fd`` link to an unnamed one.
    """
    check_output_path(target, True, what)  # its kind may have changed while we wrote; existence: the link
    if force:
        if named:
            os.replace(source, target)
            return
        tmp = _short_name(target.parent)
        _link(source, tmp)
        try:
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return
    try:
        _link(source, str(target))
    except FileExistsError:
        raise MapspecError(f"{target}: {what} was created by someone else while mapspec wrote it; it is "
                           f"unchanged (pass --force to overwrite it)") from None
    except OSError as e:
        if e.errno not in _NO_LINK or not named:
            raise
        # A file system without hard links: the check and the rename are two steps here.
        if os.path.lexists(target):
            raise MapspecError(f"{target}: {what} was created by someone else while mapspec wrote it; it is "
                               f"unchanged (pass --force to overwrite it)") from None
        os.replace(source, target)
        return
    if named:
        with contextlib.suppress(OSError):
            os.unlink(source)


def _link(source: str, dest: str) -> None:
    """``linkat(source, dest, AT_SYMLINK_FOLLOW)``: a ``/proc/self/fd`` source links the open file itself.

    (``os.link`` calls plain ``link()``, which would link the magic symlink, unless a dir fd is given.)
    """
    parent = os.path.dirname(dest) or "."
    dfd = os.open(parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.link(source, os.path.basename(dest), dst_dir_fd=dfd, follow_symlinks=True)
    finally:
        os.close(dfd)


@contextlib.contextmanager
def atomic_output(path, force: bool = False, what: str = "output", anonymous: bool = False,
                  sync: bool = True) -> Iterator[str]:
    """Yield a temporary path for ``path``'s content; give it the name ``path`` on success.

    On any error or interrupt the temporary file is removed and an existing ``path`` is left
    untouched.  Without ``force`` an existing ``path`` is an error, checked again atomically by
    the final link (:func:`_publish`).  Only a regular file (or a symlink to one) is ever
    replaced (:func:`check_output_path`).  With ``anonymous`` (Linux; for callers that only write
    the file, never look for files beside it) the temporary file has no name at all (O_TMPFILE,
    written through ``/proc/self/fd``), so that even a killed process leaves nothing behind;
    otherwise it is a hidden temporary beside the target (see :mod:`.durable`), which a later run
    in that folder removes once its process is gone.  Files a writer puts beside its output
    (:func:`companion`) follow the same rules and are put in place just before it.

    ``sync`` (default): the data is fsync'ed before the final link or rename and the folder
    after, so that a power loss leaves the old file or the new one, never a new name over
    missing data.
    """
    from . import durable

    target = check_output_path(path, force, what)
    parent = target.parent if str(target.parent) else Path(".")
    durable.sweep(parent)
    published = False
    fd = _anonymous_file(parent) if anonymous else None
    if fd is not None:
        tmp, named = f"/proc/self/fd/{fd}", False
    else:
        try:
            tfd, tmp = tempfile.mkstemp(prefix=durable.temp_prefix(), suffix=".tmp", dir=parent)
        except OSError as e:
            raise MapspecError(f"{target}: cannot create a file in {str(parent)!r}: {e.strerror or e}") from None
        os.close(tfd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the output the usual permissions
        named = True
    frame = {"force": force, "what": what, "companions": []}
    _OPEN.append(frame)
    try:
        with durable.writing(sync):
            yield tmp
        if sync:
            for ctmp, _ in frame["companions"]:
                durable.sync_file(ctmp)
            durable.sync_file(fd if fd is not None else tmp)
        with _signals_held():  # published and recorded as one step, as far as a signal can tell
            linked = []
            for ctmp, cfinal in frame["companions"]:
                _publish(ctmp, cfinal, force, True, what)
                linked.append(cfinal)
            try:
                _publish(tmp, target, force, named, what)
            except BaseException:
                for c in linked if not force else ():  # ours alone: created by the link just made
                    with contextlib.suppress(OSError):
                        os.unlink(c)
                raise
            published = True
            PUBLISHED.append(str(target))
        if sync:
            durable.sync_dir(parent)
    except OSError as e:
        # Disk full, quota, I/O error while writing (or reading a source mid-way): the user's
        # problem, reported in one line like every other, never a traceback.
        _discard(tmp, named, frame)
        where = e.filename if isinstance(e.filename, str) and e.filename != tmp else str(target)
        raise MapspecError(f"{where}: {e.strerror or e}; {target} was not written"
                           + (" (the existing file is unchanged)" if target.exists() else "")) from None
    except MapspecError as e:
        _discard(tmp, named, frame)
        _name_output(e, tmp, str(target))
        raise
    except BaseException:
        if not published:  # (a signal once the output is in place: PUBLISHED tells the command line)
            _discard(tmp, named, frame)
        raise
    finally:
        _OPEN.remove(frame)
        if fd is not None:
            os.close(fd)


_OPEN: list = []  # the atomic_output blocks now open, innermost last


def companion(final) -> str:
    """A temporary name for a file a writer puts beside its output (ONNX external data).

    It follows the output's rules: an existing ``final`` is refused now unless ``--force``; the
    temporary is synced and put in place (no-clobber link, or rename with ``--force``) by the
    enclosing :func:`atomic_output` just before the output itself, and removed on failure."""
    from .durable import temp_name

    if not _OPEN:
        raise MapspecError(f"{final}: a file beside an output is written only inside atomic_output")
    frame = _OPEN[-1]
    check_output_path(final, frame["force"], frame["what"])
    tmp = temp_name(Path(final).parent)
    frame["companions"].append((tmp, Path(final)))
    return tmp


# Every output put in place by this process, in order: what an interrupted command has written
# (a signal can arrive at any moment after the final link; the command line reports these).
PUBLISHED: list = []


_HOLD = {"depth": 0, "pending": None}


@contextlib.contextmanager
def _signals_held():
    """Defer an interrupt (raised by the command line's signal handlers through :func:`interrupt`)
    until the end of the block, so that the block runs whole or not at all."""
    _HOLD["depth"] += 1
    try:
        yield
    finally:
        _HOLD["depth"] -= 1
        pending, _HOLD["pending"] = _HOLD["pending"], None
        if pending is not None and _HOLD["depth"] == 0:
            raise pending


def interrupt(exc: BaseException) -> None:
    """Raise ``exc`` (a KeyboardInterrupt) now, or at the end of a :func:`_signals_held` block."""
    if _HOLD["depth"]:
        _HOLD["pending"] = _HOLD["pending"] or exc
        return
    raise exc


def _discard(tmp: str, named: bool, frame: Optional[dict] = None) -> None:
    for path in ([tmp] if named else []) + [c for c, _ in (frame or {}).get("companions", [])]:
        with contextlib.suppress(OSError):
            os.unlink(path)
