"""Logging, set up in one place: the CLI, the trial processes of a sweep and the benchmarks all
call `setup`, which also keeps third-party start-up noise out of the terminal."""

from __future__ import annotations

import logging
import os
import sys
import threading

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
    quiet_libraries()

    def thread_failed(args: threading.ExceptHookArgs) -> None:
        # e.g. Optuna's heartbeat thread while the database restarts: one line, not a traceback
        name = args.thread.name if args.thread else "thread"
        logging.getLogger("cifar_exp").warning("background %s stopped: %s", name, args.exc_value)

    threading.excepthook = thread_failed


def quiet_libraries() -> None:
    """Library loggers at WARNING, MLflow's progress bars off, Optuna's per-trial lines off
    (the CLI shows trials and failures itself)."""
    import warnings

    import optuna

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


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
