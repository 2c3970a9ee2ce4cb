"""Imported once by a sweep's forkserver (see study.trial_process): TensorFlow, quietly, the
training stack, and what a trial would otherwise import on its own every time (MLflow's SQL
store and its migrations, the dataset records, model logging, git for the provenance tags,
the PNG writer of the plots), so that every trial process forks ready to train. Nothing here
starts a thread: a fork copies only the thread that forks."""

import contextlib
import importlib

from cifar_exp.logs import import_tensorflow_quietly, quiet_libraries

import_tensorflow_quietly()
quiet_libraries()

import cifar_exp.runs  # noqa: E402,F401

# what a trial imports lazily (found by diffing sys.modules around a tracked training);
# each is optional: a missing one is imported, or fails, where the trial needs it
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
    "pandas.io.formats.csvs",
    "pyarrow.pandas_compat",
    "email.policy",
    "netrc",
    "cifar_exp.stats",
)
for _name in LAZY:
    with contextlib.suppress(ImportError):
        importlib.import_module(_name)

# Logging a model, MLflow checks its pinned requirements against the installed packages
# through a map of every installed distribution's modules, built once per process (about
# 0.6 s here, most of a trial's model logging): built here, every trial forks with it. A
# private helper: if MLflow renames it, trials build the map themselves, as before.
with contextlib.suppress(Exception):
    from mlflow.utils.requirements_utils import _init_modules_to_packages_map

    _init_modules_to_packages_map()
