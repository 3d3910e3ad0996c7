"""Parallel apply: transform and write several tensors at once (``apply --jobs N``).

Used when the writer places each tensor at an offset known from the plan
(``writer.positional``: safetensors, and sharded safetensors; such writers have
``write_at(name, array)`` and ``copy_at(name, info, span)``, both callable from any
thread in any order).  The main thread walks the steps in plan order, reads each
step's inputs (memory-mapped views) and hands the step to a pool of worker threads;
the workers run the transforms (numpy releases the GIL in copies, casts and
arithmetic) and write with ``os.pwrite`` / ``copy_file_range`` (which release it too).
At most ``jobs`` steps run at once, so memory stays ~ the largest tensor x ``jobs``.
Progress, page release and the report follow plan order: a step that finishes early
frees its thread at once and waits (at most ``WINDOW x jobs`` steps) for its turn.
The first failure stops everything: no new step starts, running ones finish, and the
error is raised.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Callable, Sequence


def default_jobs() -> int:
    """The cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def run(steps: Sequence, jobs: int, prepare: Callable[[int], object], work: Callable[[int, object], object],
        done: Callable[[int, object], None]) -> None:
    """For every step: ``prepare(i)`` on the calling thread (reads: readers need not be thread-safe),
    ``work(i, prepared)`` on one of ``jobs`` threads, then ``done(i, result)`` on the calling thread,
    in step order.

    At most ``jobs`` steps run at once; a step that finishes while an earlier one still runs frees
    its thread for the next step (a large tensor does not hold up the small ones behind it), but
    waits for its ``done`` (which releases its source pages) for at most ``WINDOW x jobs`` steps.
    """
    pending: deque = deque()  # (i, future), in step order, not yet passed to done()
    running: set = set()
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="mapspec")

    def flush() -> None:
        while pending and pending[0][1].done():
            j, fut = pending.popleft()
            done(j, fut.result())

    try:
        for i in range(len(steps)):
            while len(running) >= jobs or len(pending) >= WINDOW * jobs:
                wait(running if len(running) >= jobs else [pending[0][1]], return_when=FIRST_COMPLETED)
                running = _check(running)
                flush()
            fut = pool.submit(work, i, prepare(i))
            running.add(fut)
            pending.append((i, fut))
            running = _check(running)
            flush()
        while pending:
            wait([pending[0][1]])
            flush()
    except BaseException:
        for _, fut in pending:
            fut.cancel()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _check(running: set) -> set:
    """The futures still running; the first failure among the finished ones is raised at once."""
    still = set()
    for f in running:
        if not f.done():
            still.add(f)
        elif f.exception() is not None:
            raise f.exception()
    return still


WINDOW = 4  # finished steps waiting for an earlier one, per thread
PAGE = 4096


def copy_phases(steps: Sequence, span) -> dict:
    """{target: its source bytes' offset mod PAGE} for the steps that only rename a tensor the reader can
    hand out as a file span (``span(name)``, or None): a writer that places tensors itself puts them at
    the same place in their pages, so that the kernel copies whole pages.  A hint for the layout only;
    whether a step is copied is decided when it runs."""
    if span is None:
        return {}
    out = {}
    for s in steps:
        if s.calls or s.parts or s.source is None:
            continue
        where = span(s.source)
        if where is not None:
            out[s.target] = where[1] % PAGE
    return out
