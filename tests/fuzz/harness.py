"""Run one input against one target and judge the outcome.

For a reader target the input is written to a temporary file, opened with
``open_checkpoint(path, format=...)``, and everything a user's command could touch is
exercised: ``infos()``, ``nodes()`` and ``attrs()`` of each node, and ``read()`` of
every tensor (each value touched, so a view past the end of a memory map would fault
here).  For the spec target, ``check_spec(path)`` (YAML + schema + semantics).

Verdicts:

* ``accepted`` -- the input was read without complaint and the results are consistent;
* ``rejected`` -- a :class:`~mapspec.errors.MapspecError` was raised (what hostile input
  must produce);
* ``bug`` -- any other exception, a hang (more than ``timeout`` seconds), a broken
  invariant (a tensor whose values disagree with its announced shape or dtype, a tensor
  claiming more bytes than an uncompressed file holds), or too much memory (peak traced
  allocation above ``memory_limit`` when ``track_memory`` is on).

Tensors claiming more than :data:`READ_LIMIT` bytes are not read: a reader must have
refused such a claim before allocating anything for it (checked as an invariant for
formats that cannot compress).
"""

from __future__ import annotations

import contextlib
import re
import signal
import threading
import traceback
import tracemalloc
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from .targets import Target

READ_LIMIT = 64 << 20  # bytes; larger tensors are not read
MEMORY_LIMIT = 256 << 20  # bytes of peak traced allocation for one small input
DEFAULT_TIMEOUT = 10.0  # seconds per input


class Verdict(NamedTuple):
    status: str  # accepted, rejected, bug
    detail: str = ""  # the exception or the broken invariant, one line
    trace: str = ""  # full traceback for bugs

    @property
    def bug(self) -> bool:
        return self.status == "bug"

    def signature(self) -> str:
        """What identifies a distinct bug: ``ExcType @ mapspec/path.py:function`` (innermost mapspec frame)."""
        frame = ""
        for m in _FRAME.finditer(self.trace):
            frame = f"{m.group(1)}:{m.group(2)}"
        kind = self.detail.split(":")[0]
        return f"{kind} @ {frame}" if frame else kind


_FRAME = re.compile(r'File "[^"]*/(mapspec/[^"]+\.py)", line \d+, in (\S+)')


class Hang(BaseException):
    """Raised by the alarm: the input took longer than the per-input timeout."""


class Broken(Exception):
    """A reader answered, but inconsistently (an invariant of the harness failed)."""


@contextlib.contextmanager
def alarm(seconds: float):
    """Raise :class:`Hang` in the main thread after ``seconds`` (no-op elsewhere or when 0)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def fire(signum, frame):
        raise Hang(f"no answer within {seconds:g} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def support_files(target: Target, workdir: Path) -> None:
    """Files an input may refer to by relative path (the spec target's templates, the commands'
    source and outputs)."""
    if target.exercise:
        from .commands import support

        support(workdir)
    elif target.name == "spec":
        from .seeds import spec_support

        spec_support(workdir)
    elif target.name == "sharded":
        from .seeds import sharded_support

        sharded_support(workdir)


def input_path(target: Target, workdir: Path) -> Path:
    return workdir / f"input{target.suffix}"


def _touch(arr: np.ndarray) -> None:
    """Read every byte of ``arr`` (a memory-mapped view faults here if it runs past the file)."""
    flat = np.ascontiguousarray(arr).reshape(-1)
    if flat.size:
        flat.view(np.uint8).sum(dtype=np.uint64)


def _exercise_reader(target: Target, path: Path, product: bool) -> str:
    from mapspec import dtypes
    from mapspec.formats import open_checkpoint
    from mapspec.formats.base import TensorInfo

    size = path.stat().st_size
    reader = open_checkpoint(str(path), format=target.format, **target.reader_options(product))
    try:
        infos = reader.infos()
        for name, info in infos.items():
            if not isinstance(info, TensorInfo) or info.name != name:
                raise Broken(f"infos()[{name!r}] is {info!r}")
            if not isinstance(info.shape, tuple) or not all(
                    isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in info.shape):
                raise Broken(f"tensor {name!r} has shape {info.shape!r}")
            if info.dtype is not None and dtypes.canonical(info.dtype) != info.dtype:
                raise Broken(f"tensor {name!r} has non-canonical dtype {info.dtype!r}")
        for node in reader.nodes():
            attrs = reader.attrs(node)
            if not isinstance(attrs, dict):
                raise Broken(f"attrs({node!r}) is a {type(attrs).__name__}")
        if not reader.has_data:
            return f"{len(infos)} tensors (template)"
        for name, info in infos.items():
            nbytes = info.nbytes
            if nbytes > size and nbytes > 4096 and not target.compressed:
                raise Broken(f"tensor {name!r} claims {info.shape} {info.dtype} ({nbytes} bytes) in a file of "
                             f"{size} bytes; an uncompressed format cannot hold that")
            if nbytes > READ_LIMIT:
                continue
            arr = reader.read(name)
            if not isinstance(arr, np.ndarray):
                raise Broken(f"read({name!r}) gave {type(arr).__name__}")
            if tuple(arr.shape) != tuple(info.shape):
                raise Broken(f"read({name!r}) has shape {arr.shape}, infos say {info.shape}")
            if info.dtype is not None and arr.dtype != dtypes.to_numpy(info.dtype):
                raise Broken(f"read({name!r}) has dtype {arr.dtype}, infos say {info.dtype}")
            _touch(arr)
        return f"{len(infos)} tensors"
    finally:
        reader.close()


def _exercise_spec(path: Path) -> str:
    from mapspec.errors import MapspecError
    from mapspec.language.load import check_spec

    spec, errors = check_spec(str(path))
    for e in errors:
        if not isinstance(e, MapspecError):
            raise Broken(f"check_spec returned a {type(e).__name__} among its errors: {e}")
    if not errors and spec is None:
        raise Broken("check_spec returned no spec and no errors")
    if errors:
        for e in errors:
            str(e)  # what the user sees: it must render
        raise errors[0]
    return f"{len(spec.rules)} rules"


def run_file(target: Target, path: Path, timeout: float = DEFAULT_TIMEOUT, product: bool = False,
             track_memory: bool = False, memory_limit: int = MEMORY_LIMIT) -> Verdict:
    """Judge one input file (see the module docstring)."""
    from mapspec.errors import MapspecError

    if track_memory:
        tracemalloc.start()
    try:
        with alarm(timeout):
            try:
                if target.exercise:
                    from .commands import EXERCISES, Broken as CommandBroken

                    try:
                        what = EXERCISES[target.exercise](path)
                    except CommandBroken as e:
                        raise Broken(str(e)) from None
                elif target.format is None:
                    what = _exercise_spec(path)
                else:
                    what = _exercise_reader(target, path, product)
            except MapspecError as e:
                text = str(e)
                if not text.strip():
                    return Verdict("bug", f"{type(e).__name__} with an empty message", traceback.format_exc())
                return Verdict("rejected", f"{type(e).__name__}: {text.splitlines()[0][:300]}")
            except Hang as e:
                return Verdict("bug", f"Hang: {e}", traceback.format_exc())
            except Broken as e:
                return Verdict("bug", f"Broken invariant: {e}", traceback.format_exc())
            except KeyboardInterrupt:
                raise
            except BaseException as e:  # noqa: BLE001 - anything else is what we are looking for
                return Verdict("bug", f"{type(e).__name__}: {str(e)[:300]}", traceback.format_exc())
        if track_memory:
            peak = tracemalloc.get_traced_memory()[1]
            if peak > memory_limit:
                return Verdict("bug", f"Memory: peak traced allocation {peak >> 20} MB for one input "
                               f"(limit {memory_limit >> 20} MB)")
        return Verdict("accepted", what)
    finally:
        if track_memory:
            tracemalloc.stop()


def run_bytes(target: Target, data: bytes, workdir: Path, **kw) -> Verdict:
    """Write ``data`` as the target's input file in ``workdir`` and judge it."""
    path = input_path(target, workdir)
    path.write_bytes(data)
    return run_file(target, path, **kw)


def warm_up(target: Target, workdir: Path, seed: Optional[Path]) -> None:
    """Import what the target imports (torch, h5py...) so the first timed input is not slow."""
    from mapspec.formats import module

    if target.format is not None:
        module(target.format)
    if seed is not None:
        run_bytes(target, seed.read_bytes(), workdir, timeout=0)
