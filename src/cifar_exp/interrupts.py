"""Ctrl-C and SIGTERM, one path for both: what Slurm, Kubernetes and systemd send to stop a job
must leave the same clean state as a Ctrl-C (runs closed KILLED, trials failed with their
reason, the study resumable), with the exit code a shell expects (143 for SIGTERM, 130 for
Ctrl-C).

Python raises a signal's exception wherever the main thread is, and where that is a garbage
collector's callback or a `__del__` (SQLAlchemy and TensorFlow run many) it prints "Exception
ignored in ..." and goes on: the interrupt is lost and the work runs to its end. So the
handlers here also remember the signal, and `checkpoint()`, called wherever new work begins
(a trial, an epoch, a message from a trial process), raises it again if it was swallowed.

A closed output is a third way to be stopped: when the program reading it goes away (`| head`)
the work stops at the next checkpoint, as a Unix tool is stopped by SIGPIPE (exit 141), along
the same path, instead of failing with a broken pipe wherever the next line was written."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from types import FrameType
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived; travels every path a Ctrl-C travels."""


class OutputClosed(KeyboardInterrupt):
    """The program reading the output went away (`| head`); stops the work as SIGPIPE would."""


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


class _Guarded:
    """A standard stream whose reader going away (a broken pipe) stops the work: every
    standard descriptor on that pipe is pointed at /dev/null, so that what is still written
    (the runs' closing lines, a clean-up's log) goes nowhere instead of failing again, and
    `OutputClosed` waits for the next `checkpoint()`. Never raised from the write itself: a
    write can come from inside a library's clean-up (MLflow ending a run, a Ctrl-C's own
    handling), which must run to its end."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._closed()
            return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._closed()

    def _closed(self) -> None:
        global _pending
        broken = os.fstat(self._stream.fileno())
        null = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):  # `2>&1 | head`: both are the same pipe
            with contextlib.suppress(OSError):
                if os.path.samestat(os.fstat(fd), broken):
                    os.dup2(null, fd)
        os.close(null)
        with contextlib.suppress(OSError, ValueError):  # what the buffer still held
            self._stream.flush()
        if _pending is None:
            _pending = OutputClosed()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def guard_output() -> None:
    """The standard streams made safe to write to: a descriptor the caller closed (`>&-`)
    is opened on /dev/null (else the next file this process opens, a database say, would take
    its number and receive what is printed), and a broken pipe on stdout or stderr stops the
    work at the next `checkpoint()`, as SIGPIPE would (`_Guarded`)."""
    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        try:
            os.fstat(fd)
        except OSError:  # closed: os.open takes the lowest free descriptor, this one
            os.open(os.devnull, os.O_RDWR)
            if getattr(sys, name) is None:  # as Python leaves a stream closed at start-up
                setattr(sys, name, open(fd, "r" if fd == 0 else "w", closefd=False))  # noqa: SIM115
    for name in ("stdout", "stderr"):
        if not isinstance(getattr(sys, name), _Guarded):
            setattr(sys, name, _Guarded(getattr(sys, name)))


REASONS = (  # the failure reasons it gives
    "terminated (SIGTERM)",
    "interrupted (Ctrl-C)",
    "stopped (its output was closed: broken pipe)",
)


def reason(e: BaseException) -> str:
    """What stopped the work, for a run's or a trial's failure reason."""
    if isinstance(e, OutputClosed):
        return REASONS[2]
    return REASONS[0] if isinstance(e, Terminated) else REASONS[1]


def exit_code(e: BaseException) -> int:
    if isinstance(e, OutputClosed):
        return 128 + signal.SIGPIPE
    return 128 + (signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT)
