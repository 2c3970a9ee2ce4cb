"""SIGTERM handled as Ctrl-C is: what Slurm, Kubernetes and systemd send to stop a job must
leave the same clean state (runs closed KILLED, trials failed with their reason, the study
resumable), with the exit code a shell expects (143 for SIGTERM, 130 for Ctrl-C)."""

from __future__ import annotations

import signal
from types import FrameType


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived; travels every path a Ctrl-C travels."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def terminate_as_interrupt() -> None:
    """From now on SIGTERM raises `Terminated` (a KeyboardInterrupt) in the main thread."""
    signal.signal(signal.SIGTERM, _raise_terminated)


REASONS = ("terminated (SIGTERM)", "interrupted (Ctrl-C)")  # the failure reasons it gives


def reason(e: BaseException) -> str:
    """What stopped the work, for a run's or a trial's failure reason."""
    return "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted (Ctrl-C)"


def exit_code(e: BaseException) -> int:
    return 128 + (signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT)
