"""What recording a training needs only after its `fit` (MLflow's model logging and its map of
installed packages, the PNG writer of the plots, the history table's writers, ...), made
ready ahead: by a study's forkserver before it forks (`_preload`), so that every trial forks
with it, and in any other tracked training on a thread while `fit` runs (`in_background`),
where the main thread waits in TensorFlow and Python is free."""

from __future__ import annotations

import contextlib
import importlib
import threading

# what a tracked training imports lazily (found by diffing sys.modules around one, before
# `fit` and after it); each is optional: a missing one is imported, or fails with its own
# error, where the training needs it
LAZY = (
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.db.utils",
    "mlflow.store.tracking.sqlalchemy_workspace_store",
    "sqlalchemy.dialects.sqlite",
    "alembic.runtime.migration",
    "alembic.command",
    "alembic.config",
    "opentelemetry.sdk.metrics",
    "mlflow.pyfunc",
    "mlflow.data.meta_dataset",
    "mlflow.data.http_dataset_source",
    "mlflow.data.dataset_source_registry",
    "mlflow.keras",
    "mlflow.models",
    "git",
    "matplotlib.backends.backend_agg",
    "PIL.PngImagePlugin",
    "PIL.features",
    "pandas.io.formats.csvs",
    "pyarrow.pandas_compat",
    "email.policy",
    "netrc",
    "cifar_exp.stats",
)


def ahead() -> None:
    """Import `LAZY` and build MLflow's map of installed packages. Nothing here is needed for
    correctness: whatever fails fails again, with its own error, where it is used."""
    for name in LAZY:
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    # Logging a model, MLflow checks its pinned requirements against the installed packages
    # through a map of every installed distribution's modules, built once per process (0.6-0.7
    # s here, most of the model logging). A private helper: if MLflow renames it, the model
    # logging builds the map itself, as before.
    with contextlib.suppress(Exception):
        from mlflow.utils.requirements_utils import _init_modules_to_packages_map

        _init_modules_to_packages_map()


def in_background() -> threading.Thread:
    """`ahead` on a daemon thread, started now; join it before the work that needs it."""
    thread = threading.Thread(target=ahead, name="cifar-exp-ahead", daemon=True)
    thread.start()
    return thread
