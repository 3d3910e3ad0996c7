"""Progress bars on stderr for long work (``apply``, ``diff``, ``fold-bn``, ``verify``, ``inspect``):
bytes (or steps) done, rate, time left.

tqdm draws them.  ``--progress`` forces a bar, ``--no-progress`` suppresses it; by default a
bar appears only when stderr is a terminal and the work takes longer than ``AUTO_DELAY``
seconds, so quick runs and pipes stay clean.  Nothing is ever written to stdout.
"""

from __future__ import annotations

import contextlib
from typing import Optional, TextIO

AUTO_DELAY = 0.5  # seconds of work before an automatic bar appears


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def no_bar(desc: str = "", total: int = 0, unit: str = "iB") -> _NoBar:
    """What a bar factory gives when no bar is wanted (the signature of ``verify``'s ``progress``)."""
    return _NoBar()


def wanted(flag: Optional[bool], stream: TextIO) -> bool:
    """``--progress``/``--no-progress`` if given, else whether ``stream`` is a terminal."""
    if flag is not None:
        return flag
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # a closed or odd stream
        return False


def byte_bar(stream: TextIO, total: int, desc: str, flag: Optional[bool], unit: str = "iB"):
    """A context manager with ``update(n)`` and ``set_postfix_str(text)``: a bar, or nothing.

    ``unit`` "iB" counts bytes (KiB, MiB, ...); any other unit (``step``, ``shard``) counts whole things."""
    if not wanted(flag, stream):
        return _NoBar()
    import shutil

    from tqdm import tqdm

    width = shutil.get_terminal_size((100, 24)).columns  # a terminal that reports no width: 100 columns
    counts = "{n_fmt}{unit}/{total_fmt}{unit}" if unit == "iB" else "{n_fmt}/{total_fmt} {unit}s"
    return tqdm(total=total, desc=desc, file=stream, unit=unit, unit_scale=unit == "iB", unit_divisor=1024,
                delay=0 if flag else AUTO_DELAY, mininterval=0.2, ncols=max(width, 60), leave=flag is True,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| " + counts + " [{elapsed}<{remaining}, "
                           "{rate_fmt}{postfix}]")


@contextlib.contextmanager
def plan_progress(stream: TextIO, plan, desc: str, flag: Optional[bool]):
    """A bar over a plan's output bytes; yields the ``progress`` callback ``engine.execute`` takes."""
    from .errors import escape
    from .formats import TensorInfo

    sizes = [TensorInfo(s.target, tuple(s.out_meta.shape), s.out_meta.dtype).nbytes for s in plan.steps]
    with byte_bar(stream, sum(sizes), desc, flag) as bar:
        def progress(done: int, total: int, step) -> None:
            bar.set_postfix_str(escape(step.target)[-40:], refresh=False)  # no control characters on stderr
            bar.update(sizes[done - 1])

        yield progress


@contextlib.contextmanager
def count_bar(stream: TextIO, desc: str, flag: Optional[bool], unit: str):
    """A bar over things counted as they are done, whose total only the work knows: yields ``tick(total, label)``,
    called once per thing done; the first tick makes the bar (``inspect``: shards opened)."""
    bars: list = []

    def tick(total: int, label: str) -> None:
        from .errors import escape

        if not bars:
            bars.append(byte_bar(stream, total, desc, flag, unit))
        bars[0].set_postfix_str(escape(label)[-40:], refresh=False)  # no control characters on stderr
        bars[0].update(1)

    try:
        yield tick
    finally:
        if bars:
            bars[0].close()
