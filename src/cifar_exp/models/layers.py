"""Keras layers of the tool's own models, registered so that saved models load in safe mode
once this module is imported (`registry.load_model` does)."""

from __future__ import annotations

from typing import Any

import keras


@keras.saving.register_keras_serializable(package="cifar_exp")
class ScaledBias(keras.layers.Layer):
    """Adds a learned per-channel bias stored divided by `scale`.

    Under SGD a parameter used as `scale * b` learns `scale**2` times faster than a plain bias,
    which is how the fast CIFAR-10 trainers give batch-norm biases a larger learning rate than
    the weights without a second optimizer.
    """

    def __init__(self, scale: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scale = float(scale)

    def build(self, input_shape: Any) -> None:
        self.bias = self.add_weight(shape=(input_shape[-1],), initializer="zeros", name="bias")

    def call(self, x: Any) -> Any:
        return x + keras.ops.cast(self.bias * self.scale, x.dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "scale": self.scale}
