"""Keep third-party start-up noise out of the terminal: shared by the CLI and the trial
processes of a sweep, which import TensorFlow, MLflow and Optuna afresh."""

from __future__ import annotations

import logging
import os
import sys

NOISY_LOGGERS = ("mlflow", "alembic", "absl", "tensorflow", "h5py", "matplotlib", "optuna")


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
