"""Keras layers of the tool's own models, and its learning-rate schedule, registered so that
saved models load in safe mode once this module is imported (`registry.load_model` does)."""

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

    def __init__(self, scale: float = 1.0, regularizer: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scale = float(scale)
        self.regularizer = keras.regularizers.get(regularizer)

    def build(self, input_shape: Any) -> None:
        self.bias = self.add_weight(
            shape=(input_shape[-1],),
            initializer="zeros",
            regularizer=self.regularizer,
            name="bias",
        )

    def call(self, x: Any) -> Any:
        return x + keras.ops.cast(self.bias * self.scale, x.dtype)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "scale": self.scale,
            "regularizer": keras.regularizers.serialize(self.regularizer),
        }


@keras.saving.register_keras_serializable(package="cifar_exp")
class Triangle(keras.optimizers.schedules.LearningRateSchedule):
    """Linear from `start` up to `peak` at step `peak_step`, then linear down to `end` at
    `total_steps` (and `end` after it): airbench's schedule."""

    def __init__(
        self, start: float, peak: float, end: float, peak_step: int, total_steps: int
    ) -> None:
        self.start, self.peak, self.end = float(start), float(peak), float(end)
        self.peak_step, self.total_steps = int(peak_step), int(total_steps)

    def __call__(self, step: Any) -> Any:
        ops = keras.ops
        step = ops.cast(step, "float32")
        rise = self.start + (self.peak - self.start) * step / max(self.peak_step, 1)
        down_steps = max(self.total_steps - self.peak_step, 1)
        fall = self.peak + (self.end - self.peak) * (step - self.peak_step) / down_steps
        lr = ops.where(step < self.peak_step, rise, fall)
        return ops.maximum(lr, min(self.end, self.peak))

    def get_config(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "peak": self.peak,
            "end": self.end,
            "peak_step": self.peak_step,
            "total_steps": self.total_steps,
        }
