"""What a tracked training imports lazily, made ready ahead: the MLflow store and data
records it opens before `fit`, and what recording its result needs after `fit` (MLflow's
model logging and its map of installed packages, the PNG writer of the plots, the history
table's writers, ...). A study's forkserver prepares all of it before it forks (`_preload`),
so that every trial forks with it; any other tracked training (the `train` command,
`reproduce`, trials run in-process, a notebook) prepares what is still missing on a thread
while `fit` runs (`tracking.RecordAhead`), where the main thread waits in TensorFlow."""

from __future__ import annotations

import contextlib
import importlib
import threading

# found by diffing sys.modules around a tracked training (before `fit` and after it); each
# is optional: a missing one is imported, or fails with its own error, where it is used
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


def prepare() -> None:
    """Import `LAZY` and build MLflow's map of installed packages. Nothing here is needed for
    correctness, so nothing here may fail: a module that cannot be imported (a broken optional
    dependency can raise more than ImportError) fails again, with its own error, where it is
    used, and on a thread an escaped exception would print a traceback mid-training."""
    for name in LAZY:
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    # Logging a model, MLflow checks its pinned requirements against the installed packages
    # through a map of every installed distribution's modules, built once per process (about
    # 0.35 s here; 0.6-0.7 s under cProfile). A private helper: if MLflow renames it, the
    # model logging builds the map itself, as before.
    with contextlib.suppress(Exception):
        from mlflow.utils.requirements_utils import _init_modules_to_packages_map

        _init_modules_to_packages_map()


def in_background() -> threading.Thread:
    """`prepare` on a daemon thread, started now; join it before the work that needs it."""
    thread = threading.Thread(target=prepare, name="cifar-exp-ahead", daemon=True)
    thread.start()
    return thread
