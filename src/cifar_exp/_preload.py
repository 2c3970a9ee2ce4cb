"""Imported once by a sweep's forkserver (see study.trial_process): TensorFlow, quietly, the
training stack, and what a trial would otherwise import on its own every time (MLflow's SQL
store and its migrations, the dataset records, model logging, git for the provenance tags,
the PNG writer of the plots), so that every trial process forks ready to train. Nothing here
starts a thread: a fork copies only the thread that forks."""

from cifar_exp.logs import import_tensorflow_quietly, quiet_libraries

import_tensorflow_quietly()
quiet_libraries()

import cifar_exp.runs  # noqa: E402,F401
from cifar_exp import ahead  # noqa: E402

ahead.prepare()
