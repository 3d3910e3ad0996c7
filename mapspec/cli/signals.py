"""SIGTERM and SIGHUP unwind like Ctrl-C while a command runs (outputs are never left half-written)."""

from __future__ import annotations


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: unwinds like Ctrl-C (temporary files removed, nothing replaced)."""

    def __init__(self, signum: int):
        import signal

        super().__init__(signum)
        self.signum = signum
        self.name = signal.Signals(signum).name


def _raise_terminated(signum, frame):
    import signal

    from ..files import interrupt

    interrupt(KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum))


def _handle_signals():
    """Turn SIGTERM/SIGHUP into :class:`Terminated` (and SIGINT into KeyboardInterrupt) while ``run``
    works, deferred while an output is being put in place; returns the undo."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    saved = {}
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is None:
            continue
        old = signal.getsignal(sig)
        if old is signal.SIG_IGN:  # nohup: the user asked to survive it
            continue
        saved[sig] = old
        signal.signal(sig, _raise_terminated)

    def restore() -> None:
        for sig, old in saved.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
    return restore
