"""Logging, set up in one place: the CLI, the trial processes of a sweep and the benchmarks all
call `setup`, which also keeps third-party start-up noise out of the terminal. While a live
display (progress bars) is on screen, `printing_through` sends log lines through its console,
so that they appear above the bars instead of glued onto one."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

NOISY_LOGGERS = (
    "mlflow",
    "mlflow.store.db.utils",
    "mlflow.models.model",
    "alembic",
    "absl",
    "tensorflow",
    "h5py",
    "matplotlib",
    "optuna",
)


def setup(level: int = logging.INFO, *, rich: bool = True) -> None:
    """Root logging at `level` (rich's handler for a terminal, else plain lines on stderr),
    library loggers quiet, and an exception in a background thread as one warning line."""
    if rich:
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False)
        fmt = "%(message)s"
    else:
        handler = logging.StreamHandler()
        fmt = "%(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt, datefmt="[%X]", handlers=[handler])
    logging.captureWarnings(True)  # Python warnings as log lines, through the same handler
    quiet_libraries()

    def thread_failed(args: threading.ExceptHookArgs) -> None:
        # e.g. Optuna's heartbeat thread while the database restarts: one line, not a traceback
        name = args.thread.name if args.thread else "thread"
        logging.getLogger("cifar_exp").warning("background %s stopped: %s", name, args.exc_value)

    threading.excepthook = thread_failed


@contextmanager
def printing_through(console: Console) -> Iterator[None]:
    """Rich log handlers print through `console` (the one a live display draws on) while in
    this block; rich then writes each log line above the display."""
    from rich.logging import RichHandler

    handlers = [h for h in logging.getLogger().handlers if isinstance(h, RichHandler)]
    saved = [h.console for h in handlers]
    for h in handlers:
        h.console = console
    try:
        yield
    finally:
        for h, c in zip(handlers, saved, strict=True):
            h.console = c


def quiet_libraries() -> None:
    """Library loggers at WARNING, MLflow's progress bars off, Optuna's per-trial lines off
    (the CLI shows trials and failures itself) as soon as a command that searches imports it."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # its "View run ... at: URL" line when a run ends on a tracking server: the CLI names the
    # run itself, and a trial process's stdout is not its own to write to
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # it logs a traceback of each database error it then raises: the CLI says it in one line
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    if "optuna" in sys.modules:
        _quiet_optuna()
    elif not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport("optuna", _quiet_optuna))


def _quiet_optuna() -> None:
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


class _AfterImport:
    """An import hook that calls `then()` right after module `name` is first imported (a
    command that never searches never pays for importing Optuna)."""

    def __init__(self, name: str, then: Callable[[], None]) -> None:
        self.name, self.then = name, then

    def find_spec(self, fullname: str, path: object, target: object = None) -> object:
        if fullname != self.name:
            return None
        import importlib.util

        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            exec_module = spec.loader.exec_module

            def exec_then(module: object) -> None:
                exec_module(module)
                self.then()

            spec.loader.exec_module = exec_then  # type: ignore[method-assign]
        return spec


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and probe its devices with stderr muted at the file-descriptor level.

    Its C++ start-up lines (oneDNN notes, CUDA probing on CPU-only machines) are written before
    any log level applies and say nothing a user can act on. Python errors still surface;
    `CIFAR_EXP_TF_VERBOSE=1` shows everything.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if os.environ.get("CIFAR_EXP_TF_VERBOSE"):
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            import tensorflow as tf

            tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
