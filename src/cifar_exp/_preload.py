"""Imported once by a sweep's forkserver (see study.trial_process): TensorFlow, quietly, and
the training stack, so that every trial process forks ready to train."""

from cifar_exp.logs import import_tensorflow_quietly, quiet_libraries

import_tensorflow_quietly()
quiet_libraries()

import cifar_exp.runs  # noqa: E402,F401
