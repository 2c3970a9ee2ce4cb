"""Ctrl-C and SIGTERM, one path for both: what Slurm, Kubernetes and systemd send to stop a job
must leave the same clean state as a Ctrl-C (runs closed KILLED, trials failed with their
reason, the study resumable), with the exit code a shell expects (143 for SIGTERM, 130 for
Ctrl-C).

Python raises a signal's exception wherever the main thread is, and where that is a garbage
collector's callback or a `__del__` (SQLAlchemy and TensorFlow run many) it prints "Exception
ignored in ..." and goes on: the interrupt is lost and the work runs to its end. So the
handlers here also remember the signal, and `checkpoint()`, called wherever new work begins
(a trial, an epoch, a message from a trial process), raises it again if it was swallowed."""

from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived; travels every path a Ctrl-C travels."""


_pending: KeyboardInterrupt | None = None  # the first signal this process received
_shown: Any = sys.unraisablehook  # what shows the other unraisable errors


def _interrupt(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def stop_on(signum: int, frame: FrameType | None = None) -> None:
    """A signal handler: remembers the first SIGINT or SIGTERM, and raises it as Ctrl-C is."""
    global _pending
    e = _interrupt(signum)
    if _pending is None:
        _pending = e
    raise e


def checkpoint() -> None:
    """Raises again a signal whose exception Python swallowed; nothing if none arrived."""
    if _pending is not None:
        raise type(_pending)()


def pending() -> KeyboardInterrupt | None:
    return _pending


def forget() -> None:
    """The interrupt was handled and the process goes on (a test, an interactive session)."""
    global _pending
    _pending = None


def _unraisable(info: Any) -> None:
    """An interrupt swallowed in a destructor is not shown as a traceback: `checkpoint()`
    raises it where it can stop the work. Anything else goes to the hook that was there."""
    if info.exc_type is not None and issubclass(info.exc_type, KeyboardInterrupt):
        return
    _shown(info)


def terminate_as_interrupt() -> None:
    """From now on SIGINT and SIGTERM raise KeyboardInterrupt / `Terminated` in the main
    thread, and one Python swallows is raised again at the next `checkpoint()`."""
    global _shown
    signal.signal(signal.SIGINT, stop_on)
    signal.signal(signal.SIGTERM, stop_on)
    if sys.unraisablehook is not _unraisable:
        _shown, sys.unraisablehook = sys.unraisablehook, _unraisable


REASONS = ("terminated (SIGTERM)", "interrupted (Ctrl-C)")  # the failure reasons it gives


def reason(e: BaseException) -> str:
    """What stopped the work, for a run's or a trial's failure reason."""
    return "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted (Ctrl-C)"


def exit_code(e: BaseException) -> int:
    return 128 + (signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT)
