"""Model registry: `build_model(cfg.model)` returns an uncompiled Keras model.

A new model is one module here that calls `register(name, schema)` on its builder, plus one
YAML in `conf/model/`; the schema dataclass types and checks its config keys.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cifar_exp.config import MODEL_SCHEMAS

_BUILDERS: dict[str, Callable[..., Any]] = {}


def register(name: str, schema: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: make `builder(cfg, input_shape, num_classes, images)` selectable as
    `model=<name>`; `images` (uint8 training images or None) is for data-dependent
    initialisation."""

    def wrap(builder: Callable[..., Any]) -> Callable[..., Any]:
        _BUILDERS[name] = builder
        MODEL_SCHEMAS[name] = schema
        return builder

    return wrap


def build_model(
    cfg: Any,
    input_shape: tuple[int, int, int] = (32, 32, 3),
    num_classes: int = 10,
    images: Any = None,
) -> Any:
    """The Keras model named by `cfg.name`, built from the rest of `cfg`; models that
    initialise from data (airbench's whitening layer) use `images`, the training images."""
    if cfg.name not in _BUILDERS:
        raise ValueError(
            f"model.name: unknown model {cfg.name!r} (choose from {sorted(_BUILDERS)})"
        )
    model = _BUILDERS[cfg.name](cfg, input_shape, num_classes, images)
    if getattr(cfg, "tta", False):
        from cifar_exp.models.tta import with_flip_tta

        model = with_flip_tta(model, input_shape)
    return model


def available() -> list[str]:
    return sorted(_BUILDERS)


# each model module registers itself
# (`tta` holds a Keras layer: imported where a model is built or loaded, so that composing a
# config never imports TensorFlow)
from cifar_exp.models import airbench, resnet_small, seed_cnn  # noqa: E402,F401
