"""Model registry: `build_model(cfg.model)` returns an uncompiled Keras model.

A new model is one module here that calls `register(name, schema)` on its builder, plus one
YAML in `conf/model/`; the schema dataclass types and checks its config keys. The schemas live
here, with their models, and `config` reads them from `SCHEMAS`: this package imports nothing
of the rest of cifar_exp (and no TensorFlow until a model is built), so config depends on it
without a cycle.
"""

from __future__ import annotations

from typing import Any

# each model module registers itself (`tta` holds a Keras layer: imported where a model is
# built or loaded, so that composing a config never imports TensorFlow)
from cifar_exp.models import airbench, resnet_small, seed_cnn  # noqa: F401
from cifar_exp.models.registry import BUILDERS, SCHEMAS, VALUE_RULES, register

__all__ = [
    "PREDICT_BATCH",
    "SCHEMAS",
    "VALUE_RULES",
    "available",
    "build_model",
    "predict",
    "register",
    "with_shift_tta",
]

# The least batch a prediction runs in. A prediction does not depend on the batch it is computed
# in (bitwise on the development CPU, in float32 and bfloat16: tests/test_performance.py), so a
# model trained at batch 32 predicts 256 images per step, about 1.5-2x faster here.
PREDICT_BATCH = 256


def build_model(
    cfg: Any,  # the model group: one of the SCHEMAS dataclasses, picked by `cfg.name`
    input_shape: tuple[int, int, int] = (32, 32, 3),
    num_classes: int = 10,
    images: Any = None,
) -> Any:
    """The Keras model named by `cfg.name`, built from the rest of `cfg`; models that
    initialise from data (airbench's whitening layer) use `images`, the training images."""
    if cfg.name not in BUILDERS:
        raise ValueError(f"model.name: unknown model {cfg.name!r} (choose from {sorted(BUILDERS)})")
    model = BUILDERS[cfg.name](cfg, input_shape, num_classes, images)
    if getattr(cfg, "tta", False):
        from cifar_exp.models.tta import with_flip_tta

        model = with_flip_tta(model, input_shape)
    return model


def with_shift_tta(cfg: Any, model: Any, input_shape: tuple[int, int, int] = (32, 32, 3)) -> Any:
    """The trained `model` with the translations of `cfg.tta_shift` added to its test-time
    augmentation (`tta.ShiftAverage`), or `model` itself where the model has none."""
    if not getattr(cfg, "tta_shift", 0):
        return model
    from cifar_exp.models.tta import with_shift_tta as wrap

    return wrap(model, cfg.tta_shift, input_shape)


def predict(model: Any, inputs: Any, batch_size: int | None = None) -> Any:
    """`model.predict(inputs)` as float64 probabilities, one step per compiled call whatever
    the model was compiled with: Keras unrolls `steps_per_execution` prediction steps into one
    graph, and tracing 64 of them cost 2.5-3 s on every new or loaded model (a 10,000-image
    pass: 4.7-5.3 s against 1.2-1.4 s, docs/benchmarks.md). `batch_size` for arrays (at least
    PREDICT_BATCH); a dataset comes batched."""
    import numpy as np

    if batch_size is not None:
        batch_size = max(batch_size, PREDICT_BATCH)
    steps, compiled = model.steps_per_execution, model.predict_function
    if steps != 1:  # Keras's function is made for its grouping: swap in a one-step one
        model.steps_per_execution = 1
        model.predict_function = getattr(model, "_one_step_predict", None)
    try:
        return np.asarray(model.predict(inputs, batch_size=batch_size, verbose=0), np.float64)
    finally:
        if steps != 1:
            model._one_step_predict = model.predict_function
            model.steps_per_execution, model.predict_function = steps, compiled


def available() -> list[str]:
    return sorted(BUILDERS)
