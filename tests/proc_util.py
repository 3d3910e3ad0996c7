"""Child processes that get signals as a user's terminal delivers them."""

from __future__ import annotations

import signal


def default_signals() -> None:
    """``preexec_fn``: SIGINT, SIGHUP and SIGTERM back to their defaults in the child.  A shell starts background
    jobs with SIGINT ignored and ``nohup`` ignores SIGHUP; a child inherits that, Python then installs no
    KeyboardInterrupt handler, and mapspec rightly leaves an ignored signal ignored, so the signal tests would
    test nothing (or hang) when the suite itself runs in the background."""
    for s in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(s, signal.SIG_DFL)
